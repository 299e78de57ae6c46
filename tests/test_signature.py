"""Our signatures against Plivo's own SDK: what it signs we accept, what it refuses we refuse."""

from __future__ import annotations

from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature

from bulksms import signature
from bulksms.signature import Verdict

URL = "https://sms.example.com/api/webhooks/plivo/delivery-report?job=abc&batch=2"
PARAMS = {"MessageUUID": "u-1", "Status": "delivered", "To": "14155550100", "ErrorCode": ""}
KEY = "the-auth-token"


def v3_headers(params: dict[str, str] = PARAMS, key: str = KEY) -> dict[str, str]:
    sig = signature.sign_v3(URL, params, "12345", key)
    return {signature.V3: sig, signature.V3_NONCE: "12345"}


def test_our_v3_signature_is_the_sdks() -> None:
    sig = signature.sign_v3(URL, PARAMS, "98765", KEY)
    assert validate_v3_signature("POST", URL, "98765", KEY, sig, dict(PARAMS))
    assert not validate_v3_signature("POST", URL, "98765", "other", sig, dict(PARAMS))


def test_our_v2_signature_is_the_sdks() -> None:
    assert validate_signature(URL, "555", signature.sign_v2(URL, "555", KEY), KEY)


def test_valid_v3_accepted_also_in_the_main_account_header_or_a_list() -> None:
    sig = signature.sign_v3(URL, PARAMS, "1", KEY)
    assert (
        signature.verify(URL, PARAMS, {signature.V3: sig, signature.V3_NONCE: "1"}, KEY, False)
        is Verdict.VALID_V3
    )
    headers = {signature.V3: "bogus", signature.MA_V3: f"zz,{sig}", signature.V3_NONCE: "1"}
    assert signature.verify(URL, PARAMS, headers, KEY, False) is Verdict.VALID_V3


def test_v3_refuses_wrong_key_changed_parameter_and_changed_query() -> None:
    assert signature.verify(URL, PARAMS, v3_headers(key="wrong"), KEY, False) is Verdict.INVALID
    changed = {**PARAMS, "Status": "failed"}
    assert signature.verify(URL, changed, v3_headers(), KEY, False) is Verdict.INVALID
    other_job = URL.replace("job=abc", "job=abd")
    assert signature.verify(other_job, PARAMS, v3_headers(), KEY, False) is Verdict.INVALID


def test_v2_only_is_refused_unless_allowed() -> None:
    headers = {signature.V2: signature.sign_v2(URL, "77", KEY), signature.V2_NONCE: "77"}
    assert signature.verify(URL, PARAMS, headers, KEY, False) is Verdict.INVALID
    assert signature.verify(URL, PARAMS, headers, KEY, True) is Verdict.VALID_V2
    assert signature.verify(URL, PARAMS, headers, "wrong", True) is Verdict.INVALID


def test_no_downgrade_to_v2_when_v3_headers_are_present() -> None:
    headers = {
        signature.V2: signature.sign_v2(URL, "77", KEY),
        signature.V2_NONCE: "77",
        signature.V3: "forged",
        signature.V3_NONCE: "1",
    }
    assert signature.verify(URL, PARAMS, headers, KEY, True) is Verdict.INVALID


def test_no_signature_is_missing() -> None:
    assert signature.verify(URL, PARAMS, {}, KEY, True) is Verdict.MISSING
