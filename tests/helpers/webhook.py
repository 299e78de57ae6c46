"""Driving the delivery-report webhook through a Flask test client: submit a job, post a
signed report, read the counts, and the WSGI environ of a report for the fast path."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

from flask.testing import FlaskClient

from bulksms import signature
from bulksms.config import Settings
from tests.helpers import API_KEY

PATH = "/api/webhooks/plivo/delivery-report"


def submit(client: FlaskClient, numbers: list[str]) -> str:
    answer = client.post(
        "/api/bulk-sms",
        data=json.dumps({"recipients": numbers, "message": "x"}),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    job_id: str = answer.get_json()["job_id"]
    return job_id


def report(
    client: FlaskClient,
    settings: Settings,
    job_id: str,
    params: dict[str, str],
    key: str | None = None,
    scheme: str = "v3",
    query: str | None = None,
    nonce: str | None = None,
) -> Any:
    """Post a report signed as Plivo signs: `scheme` is v3, v2, both, ma-v3 or ma-v2 (the main
    account's headers, signed with `key`)."""
    query = f"job={job_id}&batch=0" if query is None else query
    public = f"{settings.api_base_url}{PATH}?{query}"
    key = key or settings.plivo_auth_token or ""
    headers: dict[str, str] = {}
    if scheme in ("v3", "both", "ma-v3"):
        v3 = signature.MA_V3 if scheme == "ma-v3" else signature.V3
        v3_nonce = nonce or "4242"
        headers |= {
            v3: signature.sign_v3(public, params, v3_nonce, key),
            signature.V3_NONCE: v3_nonce,
        }
    if scheme in ("v2", "both", "ma-v2"):
        v2 = signature.MA_V2 if scheme == "ma-v2" else signature.V2
        v2_nonce = nonce or f"n{len(params)}{params.get('Status')}"
        headers |= {v2: signature.sign_v2(public, v2_nonce, key), signature.V2_NONCE: v2_nonce}
    return client.post(f"{PATH}?{query}", data=params, headers=headers)


def params(status: str, to: str = "14155550100", **extra: str) -> dict[str, str]:
    return {
        "MessageUUID": "uuid-1",
        "Status": status,
        "To": to,
        "From": "14155550199",
        "ErrorCode": "",
        **extra,
    }


def counts(client: FlaskClient, job_id: str) -> dict[str, int]:
    doc = client.get(f"/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}).get_json()
    return {k: v for k, v in doc["counts"].items() if v}


def environ(settings: Settings, job_id: str, form: dict[str, str], **change: Any) -> dict[str, Any]:
    query = f"job={job_id}&batch=0"
    public = f"{settings.api_base_url}{PATH}?{query}"
    body = urlencode(form).encode()
    found = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_PLIVO_SIGNATURE_V3": signature.sign_v3(
            public, form, "77", settings.plivo_auth_token or ""
        ),
        "HTTP_X_PLIVO_SIGNATURE_V3_NONCE": "77",
        "wsgi.input": io.BytesIO(body),
    }
    return {k: v for k, v in {**found, **change}.items() if v is not None}
