"""The delivery-report webhook: signature first, then record, 2xx only once stored."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from flask.testing import FlaskClient

from bulksms import create_app, signature
from bulksms.config import Settings
from tests.helpers import API_KEY
from tests.helpers.webhook import PATH, counts, params, report, submit


def test_a_signed_report_is_recorded_once(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100", "+14155550101"])
    assert report(client, settings, job_id, params("delivered")).status_code == 204
    assert report(client, settings, job_id, params("delivered")).status_code == 204
    assert report(client, settings, job_id, params("sent")).status_code == 204
    assert counts(client, job_id) == {"pending": 1, "delivered": 1}


def test_refused_signatures_change_nothing(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100"])
    wrong_key = report(client, settings, job_id, params("delivered"), key="not-the-token")
    assert wrong_key.status_code == 403 and wrong_key.get_json()["error"] == "signature_invalid"
    unsigned = client.post(f"{PATH}?job={job_id}&batch=0", data=params("delivered"))
    assert unsigned.status_code in (400, 403)
    assert unsigned.get_json()["error"] == "signature_missing"
    # Signed for batch 0, replayed against batch 1: the query is signed too.
    public = f"{settings.api_base_url}{PATH}?job={job_id}&batch=0"
    token = settings.plivo_auth_token or ""
    headers = {
        signature.V3: signature.sign_v3(public, params("delivered"), "9", token),
        signature.V3_NONCE: "9",
    }
    moved = client.post(f"{PATH}?job={job_id}&batch=1", data=params("delivered"), headers=headers)
    assert moved.status_code == 403
    assert counts(client, job_id) == {"pending": 1}


def test_a_parameter_changed_after_signing_is_refused(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100"])
    public = f"{settings.api_base_url}{PATH}?job={job_id}&batch=0"
    signed = params("failed")
    token = settings.plivo_auth_token or ""
    headers = {signature.V3: signature.sign_v3(public, signed, "1", token), signature.V3_NONCE: "1"}
    answer = client.post(f"{PATH}?job={job_id}&batch=0", data=params("delivered"), headers=headers)
    assert answer.status_code == 403
    assert counts(client, job_id) == {"pending": 1}


def test_v2_only_reports_are_accepted_by_default(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100"])
    assert report(client, settings, job_id, params("sent"), scheme="v2").status_code == 204
    assert counts(client, job_id) == {"sent": 1}


def test_v2_is_refused_when_v3_is_mandatory(settings: Settings) -> None:
    client = create_app(replace(settings, plivo_signatures="v3")).test_client()
    job_id = submit(client, ["+14155550100"])
    answer = report(client, settings, job_id, params("sent"), scheme="v2")
    assert answer.status_code == 403 and answer.get_json()["error"] == "signature_invalid"
    assert report(client, settings, job_id, params("sent"), scheme="both").status_code == 204
    assert counts(client, job_id) == {"sent": 1}


def test_a_v2_nonce_taken_is_answered_2xx_and_changes_nothing(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100", "+14155550101"])
    other_job = submit(client, ["+14155550100"])
    first = report(client, settings, job_id, params("sent"), scheme="v2", nonce="77")
    assert first.status_code == 204
    # Plivo's own retry (the same request) is recorded again, which changes nothing…
    assert (
        report(client, settings, job_id, params("sent"), scheme="v2", nonce="77").status_code == 204
    )
    # …while the same nonce with anything altered is a replay: 2xx (never a 403 that counts
    # against Plivo's address) and nothing changes.
    for altered, target in (
        (params("failed", ErrorCode="30"), job_id),
        (params("delivered", to="14155550101"), job_id),
        (params("delivered"), other_job),
    ):
        replay = report(client, settings, target, altered, scheme="v2", nonce="77")
        assert replay.status_code == 204
    assert counts(client, job_id) == {"sent": 1, "pending": 1}
    assert counts(client, other_job) == {"pending": 1}


def test_a_failing_v3_is_refused_whatever_v2_says(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100"])
    public = f"{settings.api_base_url}{PATH}?job={job_id}&batch=0"
    token = settings.plivo_auth_token or ""
    headers = {
        signature.V2: signature.sign_v2(public, "55", token),
        signature.V2_NONCE: "55",
        signature.V3: signature.sign_v3(public, params("sent"), "1", "not-the-token"),
        signature.V3_NONCE: "1",
    }
    answer = client.post(f"{PATH}?job={job_id}&batch=0", data=params("sent"), headers=headers)
    assert answer.status_code == 403
    assert report(client, settings, job_id, params("sent"), scheme="both").status_code == 204
    assert counts(client, job_id) == {"sent": 1}


def test_main_account_headers_are_checked_with_the_main_token(settings: Settings) -> None:
    main = "the-main-account-token"
    client = create_app(replace(settings, plivo_main_auth_token=main)).test_client()
    job_id = submit(client, ["+14155550100", "+14155550101"])
    sent = params("sent")
    assert report(client, settings, job_id, sent, key=main, scheme="ma-v3").status_code == 204
    other = params("sent", to="14155550101")
    assert report(client, settings, job_id, other, key=main, scheme="ma-v2").status_code == 204
    # Signed with the subaccount's own token in a Ma- header: refused.
    delivered = params("delivered")
    assert report(client, settings, job_id, delivered, scheme="ma-v3").status_code == 403
    assert counts(client, job_id) == {"sent": 2}
    # Without PLIVO_MAIN_AUTH_TOKEN the Ma- headers are checked with the auth token.
    plain = create_app(settings).test_client()
    assert report(plain, settings, job_id, delivered, key=main, scheme="ma-v3").status_code == 403
    assert report(plain, settings, job_id, delivered, scheme="ma-v3").status_code == 204
    assert counts(client, job_id) == {"sent": 1, "delivered": 1}


def test_the_webhook_secret_is_the_key_when_set(settings: Settings) -> None:
    with_secret = replace(settings, plivo_webhook_secret="separate-secret")
    client = create_app(with_secret).test_client()
    job_id = submit(client, ["+14155550100"])
    assert report(client, settings, job_id, params("sent")).status_code == 403
    assert (
        report(client, settings, job_id, params("sent"), key="separate-secret").status_code == 204
    )


def test_the_public_url_is_checked_not_what_a_proxy_made_of_it(settings: Settings) -> None:
    behind_proxy = replace(settings, api_base_url="https://sms.example.com")
    client = create_app(behind_proxy).test_client()
    job_id = submit(client, ["+14155550100"])
    assert report(client, behind_proxy, job_id, params("sent")).status_code == 204
    assert report(client, settings, job_id, params("queued")).status_code == 403


def test_reports_it_cannot_use_are_acknowledged(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100"])
    assert report(client, settings, "f" * 32, params("delivered")).status_code == 204
    assert (
        report(client, settings, job_id, params("delivered", to="19999999999")).status_code == 204
    )
    assert report(client, settings, job_id, params("read")).status_code == 204
    assert report(client, settings, job_id, params("sent"), query="").status_code == 204
    for scheme in ("v3", "v2"):  # (V2 signs no query: anyone may change it)
        big = f"job={job_id}&batch={'1' * 4301}"  # (past int()'s 4,300 digits)
        assert (
            report(client, settings, job_id, params("sent"), scheme=scheme, query=big).status_code
            == 204
        )
    assert counts(client, job_id) == {"pending": 1}


def test_what_plivo_billed_is_summed_once_per_recipient(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100", "+14155550101"])
    billed = {"Units": "2", "TotalAmount": "0.01000"}
    assert report(client, settings, job_id, params("sent", **billed)).status_code == 204
    assert report(client, settings, job_id, params("delivered", **billed)).status_code == 204
    assert report(client, settings, job_id, params("delivered", **billed)).status_code == 204
    odd = {"Units": "lots", "TotalAmount": "nan"}
    assert (
        report(client, settings, job_id, params("undelivered", to="14155550101", **odd)).status_code
        == 204
    )
    doc = client.get(f"/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}).get_json()
    assert doc["billed"] == {"units": 2, "amount": 0.01}


def test_a_multipart_message_counts_once_per_recipient(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100"])
    for n, message_uuid in ((1, "part-1"), (2, "part-2")):
        for status in ("sent", "delivered"):
            extra = {"ParentMessageUUID": "parent", "PartInfo": f"{n} of 2", "Units": "1"}
            p = {**params(status, **extra), "MessageUUID": message_uuid}
            assert report(client, settings, job_id, p).status_code == 204
    assert counts(client, job_id) == {"delivered": 1}


def test_a_message_that_stays_sent_is_billed_at_sent(
    client: FlaskClient, settings: Settings
) -> None:
    """Plivo charges at `sent`, and many US carriers never send a receipt."""
    job_id = submit(client, ["+14155550100"])
    billed = {"Units": "1", "TotalAmount": "0.00500"}
    assert report(client, settings, job_id, params("queued")).status_code == 204
    assert report(client, settings, job_id, params("sent", **billed)).status_code == 204
    assert report(client, settings, job_id, params("sent", **billed)).status_code == 204
    doc = client.get(f"/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}).get_json()
    assert doc["billed"] == {"units": 1, "amount": 0.005}
    assert counts(client, job_id) == {"sent": 1}


def part(status: str, n: int, to: str = "14155550100", **extra: str) -> dict[str, str]:
    def uuid_of(n: int) -> str:
        return str(uuid.UUID(int=int(to) * 10 + n))

    fields = {"ParentMessageUUID": uuid_of(1), "PartInfo": f"{n} of 2", "Units": "1", **extra}
    return {**params(status, to=to, **fields), "MessageUUID": uuid_of(n)}


def test_a_message_is_billed_once_whatever_its_reports_say_of_its_parts(
    client: FlaskClient, settings: Settings
) -> None:
    """A report naming another count of parts than the message's first, or a part after the
    whole (or the whole after a part), bills nothing more: alternated, '1 of 2' and '1 of 3'
    once billed the message again at each report (found by a hostile review)."""
    job_id = submit(client, ["+14155550100", "+14155550101"])

    def billed() -> Any:
        doc = client.get(f"/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}).get_json()
        return doc["billed"]

    charge = {"Units": "10", "TotalAmount": "10"}
    of_two = part("delivered", 1, **charge)
    of_three = {**of_two, "PartInfo": "1 of 3"}
    for each in (of_two, of_three, of_two, of_three, params("delivered", **charge)):
        assert report(client, settings, job_id, each).status_code == 204
    assert billed() == {"units": 10, "amount": 10.0}
    # Billed whole first, then a report of a part.
    other = "14155550101"
    whole = params("sent", to=other, Units="2", TotalAmount="0.01")
    assert report(client, settings, job_id, whole).status_code == 204
    assert (
        report(client, settings, job_id, part("delivered", 1, other, **charge)).status_code == 204
    )
    assert billed() == {"units": 12, "amount": 10.01}


def test_parts_are_folded_into_one_status_and_each_part_is_billed(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100", "+14155550101"])

    def doc_of() -> Any:
        return client.get(f"/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}).get_json()

    assert report(client, settings, job_id, part("sent", 1, TotalAmount="0.005")).status_code == 204
    assert report(client, settings, job_id, part("delivered", 1)).status_code == 204
    # One part delivered and the other not yet: the message is sent, not delivered.
    assert counts(client, job_id) == {"sent": 1, "pending": 1}
    assert report(client, settings, job_id, part("sent", 2, TotalAmount="0.005")).status_code == 204
    assert counts(client, job_id) == {"sent": 1, "pending": 1}
    assert report(client, settings, job_id, part("delivered", 2)).status_code == 204
    assert report(client, settings, job_id, part("delivered", 2)).status_code == 204  # again
    assert counts(client, job_id) == {"delivered": 1, "pending": 1}
    assert doc_of()["billed"] == {"units": 2, "amount": 0.01}
    # The other recipient: one part fails, and the message has failed with that part's code,
    # whatever its other part says later.
    other = "14155550101"
    assert report(client, settings, job_id, part("delivered", 1, other)).status_code == 204
    assert (
        report(client, settings, job_id, part("undelivered", 2, other, ErrorCode="30")).status_code
        == 204
    )
    assert report(client, settings, job_id, part("delivered", 2, other)).status_code == 204
    assert counts(client, job_id) == {"delivered": 1, "undelivered": 1}
    assert doc_of()["billed"]["units"] == 4
    rows = client.get(
        f"/api/bulk-sms/{job_id}/messages?status=undelivered", headers={"X-API-Key": API_KEY}
    ).get_json()
    (row,) = rows["messages"]
    assert (
        row["error_code"] == "30" and row["message_uuid"] == part("sent", 1, other)["MessageUUID"]
    )


def test_the_v2_half_of_a_report_signed_both_ways_cannot_be_reused(
    client: FlaskClient, settings: Settings
) -> None:
    """A valid V3 request binds its V2 nonce too: V2 signs no parameter, so its half re-posted
    alone with other content must not pass."""
    job_id = submit(client, ["+14155550100", "+14155550101"])
    public = f"{settings.api_base_url}{PATH}?job={job_id}&batch=0"
    token = settings.plivo_auth_token or ""
    v2 = {signature.V2: signature.sign_v2(public, "31", token), signature.V2_NONCE: "31"}
    both = {
        **v2,
        signature.V3: signature.sign_v3(public, params("sent"), "32", token),
        signature.V3_NONCE: "32",
    }
    path = f"{PATH}?job={job_id}&batch=0"
    assert client.post(path, data=params("sent"), headers=both).status_code == 204
    forged = params("undelivered", to="14155550101", ErrorCode="200")
    assert client.post(path, data=forged, headers=v2).status_code == 204
    assert counts(client, job_id) == {"sent": 1, "pending": 1}
    assert (
        client.get("/api/opt-outs/+14155550101", headers={"X-API-Key": API_KEY}).status_code == 404
    )
