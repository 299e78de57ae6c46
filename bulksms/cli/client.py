"""A small client of the bulksms API, for the `bulksms send` and `bulksms status` commands."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
NUMBER_COLUMNS = ("phone", "phone_number", "number", "mobile", "msisdn", "recipient", "to")


class ClientError(Exception):
    """One line that says what went wrong."""


@dataclass(frozen=True)
class Client:
    url: str
    key: str
    timeout: float = 120.0

    @classmethod
    def configured(cls, url: str | None, key: str | None) -> Client:
        """Flags first, then BULKSMS_URL / BULKSMS_API_KEY, then API_KEY, then the key that
        `bulksms up` keeps in data/api-key."""
        url = url or os.environ.get("BULKSMS_URL") or DEFAULT_URL
        key = key or os.environ.get("BULKSMS_API_KEY") or os.environ.get("API_KEY", "")
        key = key.split(",")[0].strip()
        if not key and Path("data/api-key").exists():
            key = Path("data/api-key").read_text().strip()
        if not key:
            raise ClientError("no API key: pass --key, or set BULKSMS_API_KEY")
        return cls(url.rstrip("/"), key)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"X-API-Key": self.key, **kwargs.pop("headers", {})}
        try:
            response = requests.request(
                method, f"{self.url}{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            error = body.get("error", "error")
            message = body.get("message", response.reason)
            raise ClientError(f"{response.status_code} {error}: {message}")
        return body

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/api/bulk-sms", json=body, headers=headers)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/bulk-sms/{job_id}")

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        """cancel, pause, resume or retry a job."""
        return self._call("POST", f"/api/bulk-sms/{job_id}/{action}")

    def delete(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/bulk-sms/{job_id}")

    def jobs(self, state: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", "/api/bulk-sms", params=params)

    def opt_out(self, number: str, method: str) -> dict[str, Any]:
        """PUT (opt out), DELETE (opt back in) or GET a number."""
        return self._call(method, f"/api/opt-outs/{number}")

    def export(self, job_id: str, status: str | None) -> Iterator[bytes]:
        """The per-recipient CSV, streamed."""
        params = {"status": status} if status else {}
        try:
            response = requests.get(
                f"{self.url}/api/bulk-sms/{job_id}/messages.csv",
                params=params,
                headers={"X-API-Key": self.key},
                timeout=self.timeout,
                stream=True,
            )
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            body = response.json()
            raise ClientError(f"{response.status_code} {body.get('error')}: {body.get('message')}")
        return response.iter_content(chunk_size=65536)


def read_numbers(text: str) -> list[str]:
    """Numbers from a text file (one a line) or a CSV file (a phone-like column, else the
    first). Blank lines and lines starting with '#' are skipped."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return []
    if not any("," in line or ";" in line or "\t" in line for line in lines[:20]):
        return [line.strip() for line in lines]
    dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    rows = list(csv.reader(io.StringIO("\n".join(lines)), dialect))
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(n) for n in NUMBER_COLUMNS if n in header), None)
    if column is not None:
        rows = rows[1:]
    else:
        column = 0
        if rows and not any(ch.isdigit() for ch in rows[0][0]):
            rows = rows[1:]  # a header row naming something else
    return [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
