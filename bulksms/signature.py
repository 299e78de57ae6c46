"""Plivo request signatures, computed exactly as Plivo's SDK computes them.

V3 (`X-Plivo-Signature-V3`, `-Ma-V3`, `-V3-Nonce`): HMAC-SHA256 over the URL, its sorted query,
the sorted POST parameters and the nonce. `v3_base` builds the string the way the SDK's
`construct_post_url` does, quirks included (tests/unit/test_signature.py holds it to the SDK's
output on arbitrary input), in a tenth of the time: every delivery report pays for it. V2
(`X-Plivo-Signature-V2`, `-Ma-V2`, `-V2-Nonce`): HMAC-SHA256 over the URL without its query plus
the nonce. It signs no parameter, so a V2 request is only as good as its nonce (the caller binds
each nonce to the first request it came with). The `Ma-` headers are signed with the main
account's token, which differs from a subaccount's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Mapping
from enum import Enum
from typing import Protocol
from urllib.parse import parse_qs, urlparse, urlsplit, urlunparse, urlunsplit

V3 = "X-Plivo-Signature-V3"
MA_V3 = "X-Plivo-Signature-Ma-V3"
V3_NONCE = "X-Plivo-Signature-V3-Nonce"
V2 = "X-Plivo-Signature-V2"
MA_V2 = "X-Plivo-Signature-Ma-V2"
V2_NONCE = "X-Plivo-Signature-V2-Nonce"

Params = Mapping[str, str | list[str]]


class Headers(Protocol):
    """A request's headers: a dict, or Werkzeug's case-insensitive Headers."""

    def get(self, key: str) -> str | None: ...


class Verdict(Enum):
    VALID_V3 = "v3"
    VALID_V2 = "v2"  # valid, but the caller must still take its nonce only once
    MISSING = "missing"  # no signature at all
    INVALID = "invalid"


def v3_base(url: str, params: Params) -> str:
    """The SDK's `construct_post_url(url, params)`, decoded."""
    pieces = [_url_part(url, bool(params))]
    for key in sorted(params):
        value = params[key]
        if isinstance(value, str):
            pieces += (key, value)
        else:  # a form's values: almost always one (this loop runs for every delivery report)
            for each in value if len(value) == 1 else sorted(value):
                pieces += (key, each)
    return "".join(pieces)


@functools.lru_cache(maxsize=4096)  # a batch's reports share their URL: most are hits
def _url_part(url: str, with_params: bool) -> str:
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    joined = "&".join(f"{key}={value}" for key in sorted(query) for value in sorted(query[key]))
    if not joined.isascii():  # the SDK fails on these (it parses the query as ASCII bytes)
        raise ValueError("a V3 signature cannot cover a query that is not ASCII")
    if with_params:
        return f"{base}?{joined}." if joined else f"{base}?"
    return f"{base}?{joined}" if joined else base


def sign_v3(url: str, params: Params, nonce: str, key: str) -> str:
    # (the SDK reads the nonce's UTF-8 bytes as characters too)
    message = f"{v3_base(url, params)}.{nonce.encode().decode('latin-1')}".encode()
    return base64.b64encode(hmac.digest(key.encode(), message, "sha256")).decode()


def sign_v2(url: str, nonce: str, key: str) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    digest = hmac.new(key.encode(), (base + nonce).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(
    url: str,
    params: Params,
    headers: Headers,
    key: str | None,
    main_key: str | None = None,
    accept_v2: bool = True,
) -> Verdict:
    """Judge a POST from Plivo: V3 whenever a V3 header is present, else V2 if accepted.

    `key` checks `V3`/`V2`; `main_key` (the main account's token, when the account is a
    subaccount) checks the `Ma-` headers, which fall back to `key`. One valid header of a family
    is enough; a family that is present and fails is refused, whatever else the request carries.
    """
    main_key = main_key or key
    v3_nonce = headers.get(V3_NONCE)
    v3, ma_v3 = headers.get(V3), headers.get(MA_V3)
    if v3_nonce is not None or v3 is not None or ma_v3 is not None:
        # No downgrade: once V3 headers are present, only a valid V3 signature will do.
        if not v3_nonce:
            return Verdict.INVALID
        for value, signing_key in ((v3, key), (ma_v3, main_key)):
            if (
                value is not None
                and signing_key
                and _v3_matches(url, params, v3_nonce, value, signing_key)
            ):
                return Verdict.VALID_V3
        return Verdict.INVALID
    v2_nonce = headers.get(V2_NONCE)
    v2, ma_v2 = headers.get(V2), headers.get(MA_V2)
    if v2 is None and ma_v2 is None and v2_nonce is None:
        return Verdict.MISSING
    if not accept_v2 or not v2_nonce:
        return Verdict.INVALID
    for value, signing_key in ((v2, key), (ma_v2, main_key)):
        if value is not None and signing_key:
            expected = sign_v2(url, v2_nonce, signing_key).encode()
            if hmac.compare_digest(value.strip().encode(), expected):
                return Verdict.VALID_V2
    return Verdict.INVALID


def _v3_matches(url: str, params: Params, nonce: str, value: str, key: str) -> bool:
    try:
        expected = sign_v3(url, params, nonce, key).encode()
    except ValueError:  # (UnicodeError included: a lone surrogate cannot be signed)
        return False
    # Plivo may list several signatures (one per token it holds), comma-separated.
    return any(hmac.compare_digest(c.strip().encode(), expected) for c in value.split(","))
