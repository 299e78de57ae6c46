"""Completion callbacks: when a job ends, POST its status to the `callback_url` it was given.

Signed like Stripe's webhooks, so the receiver can trust it and refuse replays: header
``X-Bulksms-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under
CALLBACK_SECRET>``. Retried with backoff until the receiver answers 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests

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


def deliver(url: str, document: dict[str, Any], secret: str) -> bool:
    """One attempt; True when the receiver took it (2xx)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        "User-Agent": "bulksms-callback",
    }
    try:
        answer = requests.post(
            url, data=body, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False
        )
    except requests.RequestException:
        return False
    return 200 <= answer.status_code < 300


def backoff(attempt: int) -> float:
    return float(min(3600, 5 * 2**attempt))
