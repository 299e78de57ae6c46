"""A small client of the bulksms API, for the `bulksms send` and `bulksms status` commands."""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
NUMBER_COLUMNS = ("phone", "phone_number", "number", "mobile", "msisdn", "recipient", "to")
# The columns the API takes the numbers from in a contact file, in its order of choice (a copy of
# bulksms.api.contacts.PHONE_COLUMNS, which the CLI may not import; a test keeps them equal).
PHONE_COLUMNS = ("phone", "phone_number", "mobile", "to", "number")
KEY_HEADER = "X-API-Key"
UPLOAD_BLOCK = 1 << 16
DEFAULT_PORTS = {"http": 80, "https": 443}


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
        headers = {KEY_HEADER: self.key, **kwargs.pop("headers", {})}
        try:
            response = _request(
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

    def submit(
        self, body: dict[str, Any] | Multipart, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A JSON body, or a contact file as multipart/form-data."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/api/bulk-sms", **_sent(body, headers))

    def preview(self, body: dict[str, Any] | Multipart) -> dict[str, Any]:
        """What submitting `body` would answer, and its first messages (nothing is stored)."""
        return self._call("POST", "/api/bulk-sms/preview", **_sent(body, {}))

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
            response = _request(
                "GET",
                f"{self.url}/api/bulk-sms/{job_id}/messages.csv",
                params=params,
                headers={KEY_HEADER: self.key},
                timeout=self.timeout,
                stream=True,
            )
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            body = response.json()
            raise ClientError(f"{response.status_code} {body.get('error')}: {body.get('message')}")
        return response.iter_content(chunk_size=65536)


class _Session(requests.Session):
    """requests drops only an `Authorization` header when a redirect leaves the host; the API
    key is in X-API-Key, so such a redirect is refused (one on the same host is followed)."""

    def rebuild_method(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        # (The first step of each redirect that sees where it goes, before anything is sent.)
        old, new = response.request.url or "", prepared_request.url or ""
        if not _same_host(old, new):
            raise ClientError(
                f"{response.status_code} redirect to {new}, another host: not followed, as it "
                "would carry the API key there (pass the API's own address as --url)"
            )
        super().rebuild_method(prepared_request, response)


def _same_host(old: str, new: str) -> bool:
    """The same host and port (its scheme's default, when not given), or http upgraded to
    https on the default ports, as requests judges where `Authorization` may go. An address
    Python cannot read (a port out of range, an unclosed IPv6 bracket) is not the same."""
    try:
        a, b = urlsplit(old), urlsplit(new)
        if a.hostname != b.hostname:
            return False
        ports = (a.port or DEFAULT_PORTS.get(a.scheme), b.port or DEFAULT_PORTS.get(b.scheme))
    except ValueError:
        return False
    upgrade = (a.scheme, b.scheme, *ports) == ("http", "https", 80, 443)
    return upgrade or (a.scheme, ports[0]) == (b.scheme, ports[1])


def _request(method: str, url: str, **kwargs: Any) -> requests.Response:
    """requests.request, with its redirects checked by `_Session`."""
    with _Session() as session:
        return session.request(method, url, **kwargs)


def _sent(body: dict[str, Any] | Multipart, headers: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of `_call` that send `body`."""
    if isinstance(body, Multipart):
        return {"data": body, "headers": {**headers, "Content-Type": body.content_type}}
    return {"json": body, "headers": headers}


class Multipart:
    """A multipart/form-data body: the form `fields`, then `file` as the part `recipients`,
    read in blocks as it is sent. requests' own `files=` builds the whole body in memory, but it
    streams an iterable that has a length, with that Content-Length; each iteration reads the
    file from where it stood at first, so a redirect that keeps the body sends it whole again.

    `file` must be seekable. The boundary is random: 128 bits no file holds by chance."""

    def __init__(
        self,
        fields: Mapping[str, str],
        file: IO[bytes],
        filename: str,
        boundary: str | None = None,
    ) -> None:
        self.boundary = boundary or f"bulksms-{secrets.token_hex(16)}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.file = file
        self.start = file.tell()
        self.size = file.seek(0, io.SEEK_END) - self.start
        file.seek(self.start)
        self.on_read: Callable[[int], object] | None = None  # told each block's size (progress)
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
            f"\r\n\r\n{value}\r\n"
            for name, value in fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="recipients"; '
            f'filename="{_quoted(filename)}"\r\nContent-Type: text/csv\r\n\r\n'
        )
        self.head = "".join(parts).encode("utf-8")
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        self.file.seek(self.start)
        left = self.size
        while left:
            block = self.file.read(min(UPLOAD_BLOCK, left))
            if not block:  # (the Content-Length is said: the body must be that long)
                raise ClientError("the file got shorter while it was being sent")
            left -= len(block)
            if self.on_read is not None:
                self.on_read(len(block))
            yield block
        yield self.tail


def _quoted(name: str) -> str:
    # A name in a Content-Disposition's quotes, as browsers escape it (the WHATWG's rule).
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def names_phone_column(first_line: bytes) -> bool:
    """Whether a file's first line is a CSV header naming a column the API takes numbers from,
    read as the API reads it: the delimiter it uses most, case-insensitive names, spaces and
    hyphens as `_` ("Phone Number" is phone_number)."""
    line = first_line.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    delimiter = max((",", ";", "\t"), key=line.count)
    cells = next(csv.reader([line], delimiter=delimiter), [])
    return any(re.sub(r"[\s-]+", "_", cell.strip()).casefold() in PHONE_COLUMNS for cell in cells)


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
