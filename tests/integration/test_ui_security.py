"""The campaign page's defences through the Flask test client, on a real Redis: what a browser
elsewhere, a stale form or a hostile query can and cannot do."""

from __future__ import annotations

import re

import redis
from flask.testing import FlaskClient

from bulksms.store import keys
from bulksms.store.sessions import LIFETIME_SECONDS, Sessions
from tests.helpers import API_KEY

AUTH = {"X-API-Key": API_KEY}


def sign_in(client: FlaskClient, **headers: str) -> tuple[int, str]:
    """The sign-in form as a browser sends it; (status, the page or where it leads)."""
    page = client.get("/ui/signin").get_data(as_text=True)
    token = re.search(r'name="signin_token" value="([^"]+)"', page)
    assert token is not None
    answer = client.post(
        "/ui/signin",
        data={"api_key": API_KEY, "signin_token": token.group(1)},
        headers=headers,
    )
    return answer.status_code, answer.headers.get("Location", "")


def test_signing_in_takes_the_forms_own_token_from_its_own_origin(client: FlaskClient) -> None:
    # Another site's post (its origin, or an opaque "null" one from a sandboxed frame) fails.
    assert sign_in(client, Origin="http://evil.example")[0] == 403
    assert sign_in(client, Origin="null")[0] == 403
    # A post without the form's token (what a browser sends for another site: no cookie).
    bare = client.post("/ui/signin", data={"api_key": API_KEY, "signin_token": "x"})
    assert bare.status_code == 403
    assert client.get("/ui/").status_code == 302  # still signed out
    status, where = sign_in(client, Origin="http://localhost")
    assert (status, where) == (302, "/ui/")
    assert client.get("/ui/").status_code == 200


def test_signing_in_again_ends_the_browsers_earlier_session(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    sign_in(client)
    first = client.get_cookie("bulksms_session")
    assert first is not None
    sign_in(client)
    second = client.get_cookie("bulksms_session")
    assert second is not None and second.value != first.value
    assert len(rdb.keys(keys.session("*"))) == 1


def test_a_session_ends_a_day_after_it_began_however_busy(rdb: redis.Redis) -> None:
    sessions = Sessions(rdb, "a-secret-of-some-length", 3600)
    opened = sessions.open("fingerprint")
    assert sessions.find(opened.session_id) == opened
    (key,) = rdb.keys(keys.session("*"))
    assert rdb.ttl(key) > 0  # written with its expiry, in one go
    rdb.hset(key, "at", float(rdb.hget(key, "at") or 0) - LIFETIME_SECONDS - 1)
    assert sessions.find(opened.session_id) is None
    assert not rdb.exists(key)


def test_every_answer_under_ui_carries_the_pages_policy(client: FlaskClient) -> None:
    for path in ("/", "/ui/", "/ui/signin", "/ui/nope", "/ui/static/ui.js"):
        with client.get(path) as answer:  # (closed: a static file's answer holds the file)
            assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
            assert answer.headers["X-Frame-Options"] == "DENY", path
    assert client.get("/ui/signout").headers["X-Frame-Options"] == "DENY"  # (405)


def test_a_redirect_never_names_the_host_a_client_sent(client: FlaskClient) -> None:
    """A Location written with a client's Host could be kept by a cache in front and given to
    others: every redirect is a path."""
    for path in ("/", "/ui"):
        answer = client.get(path, headers={"Host": "evil.example"})
        assert answer.status_code in (302, 308), path
        assert answer.headers["Location"] == "/ui/", path


def test_hostile_cursors_are_a_400_or_ignored_never_a_500(client: FlaskClient) -> None:
    job = client.post(
        "/api/bulk-sms",
        json={"recipients": ["+14155550100"], "message": "x"},
        headers=AUTH,
    ).get_json()["job_id"]
    for cursor in ("².0", "1.²", "9" * 5000 + ".0", "-1.0"):
        answer = client.get(f"/api/bulk-sms/{job}/messages?cursor={cursor}", headers=AUTH)
        assert answer.status_code == 400, cursor
    sign_in(client)
    assert client.get(f"/ui/jobs/{job}?cursor=%C2%B2.0").status_code == 400
    assert client.get("/ui/?cursor=nan").status_code == 200
    assert client.get("/ui/?cursor=inf").status_code == 200


def test_a_form_whose_origin_is_not_a_url_is_refused_as_another_sites(
    client: FlaskClient,
) -> None:
    # Python's URL parser raises on an unclosed IPv6 bracket: a 403, not a 500.
    for origin in ("http://[::1", "http://x]/", "https://["):
        assert sign_in(client, Origin=origin)[0] == 403
    assert client.get("/ui/").status_code == 302  # still signed out
