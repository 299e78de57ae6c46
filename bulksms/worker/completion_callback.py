"""Completion callbacks: when a job ends, POST its status to the `callback_url` it was given.

Signed like Stripe's webhooks, so the receiver can trust it and refuse replays: header
``X-Bulksms-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under
CALLBACK_SECRET>``. Retried with backoff until the receiver answers 2xx. Sent only to a public
address (`callback_address`), connecting to the very address that was checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3

from bulksms.callback_address import Unresolved, allowed_addresses, default_port

SIGNATURE_HEADER = "X-Bulksms-Signature"
TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 20  # about a day with the backoff below


def sign(body: bytes, secret: str, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(body: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    """What a receiver does (and what the tests do): check the signature and its age."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(body, secret, at).split("v1=", 1)[1]
    fresh = abs(time.time() - at) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def deliver(url: str, document: dict[str, Any], secret: str, allow_private: bool) -> bool:
    """One attempt; True when the receiver took it (2xx). Raises `NotAllowed` when the URL's
    host is (now) not a public address: never retried."""
    try:
        addresses = allowed_addresses(url, allow_private)
    except Unresolved:  # (a resolver's blip: try again later)
        return False
    body = json.dumps(document, separators=(",", ":")).encode()
    parts = urlsplit(url)
    headers = {
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        "User-Agent": "bulksms-callback",
    }
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for address in addresses:  # (as a browser does: the next one when one does not connect)
        try:
            with _pool(parts.scheme, address, parts.port, parts.hostname or "") as pool:
                answer = pool.urlopen("POST", path, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.NewConnectionError:
            continue
        except urllib3.exceptions.HTTPError:
            return False
        return 200 <= answer.status < 300
    return False


def _pool(scheme: str, address: str, port: int | None, host: str) -> urllib3.HTTPConnectionPool:
    """A connection to the address that was checked; TLS still checks the certificate against
    the URL's host name (and sends it as SNI)."""
    options: dict[str, Any] = {
        "port": port or default_port(scheme),
        "timeout": urllib3.Timeout(total=TIMEOUT_SECONDS),
        "retries": False,
    }
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            **options,
        )
    return urllib3.HTTPConnectionPool(address, **options)


def backoff(attempt: int) -> float:
    return float(min(3600, 5 * 2**attempt))
