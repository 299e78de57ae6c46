"""Our signatures against Plivo's own SDK: what it signs we accept, what it refuses we refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import construct_post_url, validate_v3_signature

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


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ascii_texts = st.text(st.characters(codec="ascii"), max_size=12)
queries = st.lists(st.tuples(ascii_texts, ascii_texts), max_size=4).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
paths = st.lists(st.text("abz;/%=.", max_size=6), max_size=3).map("/".join)


@given(
    st.sampled_from(["https://sms.example.com", "http://127.0.0.1:8000", "https://x.io/base"]),
    paths,
    queries,
    st.dictionaries(texts, texts | st.lists(texts, min_size=1, max_size=3), max_size=5),
)
def test_our_v3_base_string_is_the_sdks_for_any_input(
    base: str, path: str, query: str, params: dict[str, str | list[str]]
) -> None:
    url = f"{base}/{path}?{query}" if query else f"{base}/{path}"
    try:
        theirs = construct_post_url(url, dict(params)).decode()
    except UnicodeError:  # the SDK cannot sign it (percent-encoded non-ASCII): neither can we
        with pytest.raises(ValueError):
            signature.v3_base(url, params)
        return
    assert signature.v3_base(url, params) == theirs


def test_a_query_no_signature_can_cover_is_refused_not_a_crash() -> None:
    for query in ("job=caf%C3%A9", "job=café"):
        headers = {signature.V3: "x", signature.V3_NONCE: "1"}
        url = URL.split("?")[0] + "?" + query
        assert signature.verify(url, PARAMS, headers, KEY, accept_v2=False) is Verdict.INVALID


@given(texts, texts)
def test_our_v3_signature_is_the_sdks_for_any_nonce_and_value(nonce: str, value: str) -> None:
    params = {**PARAMS, "Status": value}
    sig = signature.sign_v3(URL, params, nonce, KEY)
    assert validate_v3_signature("POST", URL, nonce, KEY, sig, dict(params))


def test_our_v2_signature_is_the_sdks() -> None:
    assert validate_signature(URL, "555", signature.sign_v2(URL, "555", KEY), KEY)


def test_valid_v3_accepted_also_in_the_main_account_header_or_a_list() -> None:
    sig = signature.sign_v3(URL, PARAMS, "1", KEY)
    assert (
        signature.verify(
            URL, PARAMS, {signature.V3: sig, signature.V3_NONCE: "1"}, KEY, accept_v2=False
        )
        is Verdict.VALID_V3
    )
    headers = {signature.V3: "bogus", signature.MA_V3: f"zz,{sig}", signature.V3_NONCE: "1"}
    assert signature.verify(URL, PARAMS, headers, KEY, accept_v2=False) is Verdict.VALID_V3


def test_v3_refuses_wrong_key_changed_parameter_and_changed_query() -> None:
    assert (
        signature.verify(URL, PARAMS, v3_headers(key="wrong"), KEY, accept_v2=False)
        is Verdict.INVALID
    )
    changed = {**PARAMS, "Status": "failed"}
    assert signature.verify(URL, changed, v3_headers(), KEY, accept_v2=False) is Verdict.INVALID
    other_job = URL.replace("job=abc", "job=abd")
    assert (
        signature.verify(other_job, PARAMS, v3_headers(), KEY, accept_v2=False) is Verdict.INVALID
    )


MAIN = "the-main-account-token"


def test_ma_headers_are_checked_with_the_main_accounts_token() -> None:
    v3 = {signature.MA_V3: signature.sign_v3(URL, PARAMS, "1", MAIN), signature.V3_NONCE: "1"}
    assert signature.verify(URL, PARAMS, v3, KEY, MAIN) is Verdict.VALID_V3
    assert signature.verify(URL, PARAMS, v3, KEY) is Verdict.INVALID  # no main token: ours
    v2 = {signature.MA_V2: signature.sign_v2(URL, "9", MAIN), signature.V2_NONCE: "9"}
    assert signature.verify(URL, PARAMS, v2, KEY, MAIN) is Verdict.VALID_V2
    assert signature.verify(URL, PARAMS, v2, KEY) is Verdict.INVALID
    # The subaccount's own header is still checked with its own token.
    own = {signature.V3: signature.sign_v3(URL, PARAMS, "1", KEY), signature.V3_NONCE: "1"}
    assert signature.verify(URL, PARAMS, own, KEY, MAIN) is Verdict.VALID_V3
    assert signature.verify(URL, PARAMS, own, MAIN, KEY) is Verdict.INVALID


def test_one_valid_header_of_a_family_is_enough() -> None:
    both = {
        signature.V2: "stale",
        signature.MA_V2: signature.sign_v2(URL, "9", MAIN),
        signature.V2_NONCE: "9",
    }
    assert signature.verify(URL, PARAMS, both, KEY, MAIN) is Verdict.VALID_V2


def test_v2_only_is_accepted_unless_v3_is_mandatory() -> None:
    headers = {signature.V2: signature.sign_v2(URL, "77", KEY), signature.V2_NONCE: "77"}
    assert signature.verify(URL, PARAMS, headers, KEY, accept_v2=False) is Verdict.INVALID
    assert signature.verify(URL, PARAMS, headers, KEY) is Verdict.VALID_V2
    assert signature.verify(URL, PARAMS, headers, "wrong") is Verdict.INVALID


def test_no_downgrade_to_v2_when_v3_headers_are_present() -> None:
    headers = {
        signature.V2: signature.sign_v2(URL, "77", KEY),
        signature.V2_NONCE: "77",
        signature.V3: "forged",
        signature.V3_NONCE: "1",
    }
    assert signature.verify(URL, PARAMS, headers, KEY) is Verdict.INVALID


def test_no_signature_is_missing() -> None:
    assert signature.verify(URL, PARAMS, {}, KEY) is Verdict.MISSING
