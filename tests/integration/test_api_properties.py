"""Whatever a client sends to `POST /api/bulk-sms`: never a 5xx, always the JSON error shape,
and a refused request stores nothing (property-based, with hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import API_KEY

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
phone_like = st.one_of(
    st.from_regex(r"\+?[0-9 ().-]{0,20}", fullmatch=True),
    st.sampled_from(["+14155550100", "+442079460958", "(415) 555-0101", "+1", "+999"]),
    st.text(max_size=30),
)
field_values = {
    "recipients": st.one_of(st.lists(phone_like, max_size=30), json_values),
    "message": st.one_of(
        st.text(max_size=400), st.text(alphabet="€[]{}", max_size=900), json_values
    ),
    "sender": st.one_of(
        st.text(max_size=15), st.sampled_from(["ACME", "+14155550199"]), json_values
    ),
    "default_region": st.one_of(st.sampled_from(["US", "gb", "ZZ", "", "usa"]), json_values),
    "powerpack_uuid": st.one_of(st.uuids().map(str), json_values),
    "expiry_seconds": st.one_of(st.integers(-10, 20_000), json_values),
    "surprise": json_values,
}
bodies = st.one_of(
    st.fixed_dictionaries({}, optional=field_values),
    json_values,
)


def stored(rdb: redis.Redis) -> list[str]:
    return [k for k in rdb.scan_iter("bulksms:{*")] + (
        ["queue"] if rdb.llen("bulksms") or rdb.llen("bulksms.urgent") else []
    )


def check(client: FlaskClient, rdb: redis.Redis, answer: Any) -> None:
    assert answer.status_code < 500, answer.get_data(as_text=True)
    assert answer.content_type == "application/json"
    body = answer.get_json()
    if answer.status_code >= 400:
        assert isinstance(body["error"], str) and isinstance(body["message"], str)
        assert stored(rdb) == []
    else:
        assert answer.status_code == 202
        assert body["recipients"]["received"] == (
            body["recipients"]["accepted"]
            + body["recipients"]["duplicates"]
            + body["recipients"]["invalid"]
        )
        assert stored(rdb)
    rdb.flushdb()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_any_json_body(client: FlaskClient, rdb: redis.Redis, body: Any) -> None:
    answer = client.post(
        "/api/bulk-sms",
        data=json.dumps(body),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    check(client, rdb, answer)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "",
            "multipart/form-data",
            "application/xml",
        ]
    ),
)
def test_any_bytes(client: FlaskClient, rdb: redis.Redis, raw: bytes, content_type: str) -> None:
    headers = {"X-API-Key": API_KEY}
    if content_type:
        headers["Content-Type"] = content_type
    check(client, rdb, client.post("/api/bulk-sms", data=raw, headers=headers))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
    path=st.text(alphabet="abcdef0123456789/.%-_", max_size=40),
)
def test_any_key_and_path(client: FlaskClient, rdb: redis.Redis, key: str, path: str) -> None:
    answer = client.get(f"/api/bulk-sms/{path}", headers={"X-API-Key": key})
    assert answer.status_code < 500
    assert answer.get_json()["error"]
