"""The one place that talks to Plivo: send one batch, say what Plivo accepted, or why not.

The SDK's exceptions are mapped here, once, to four outcomes the task can act on:

- `Accepted`        Plivo took the batch (some numbers may be in `invalid_numbers`).
- `Refused`         Plivo said no for good (400/403/404...): fail the batch, never resend.
  `BadCredentials`  its 401 case: stop the whole job.
- `NotSent`         nothing reached Plivo, or Plivo asked us to come back (429, 5xx): retry.
- `OutcomeUnknown`  the request went out but no answer came back (read timeout, dropped
                    connection): Plivo may have sent it, so it must not be resent blindly.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import plivo
import plivo.exceptions as plivo_errors
import plivo.rest.client as plivo_client
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError


@dataclass(frozen=True)
class Outgoing:
    """One Plivo call: up to 1000 destinations, one text."""

    dst: tuple[str, ...]
    text: str
    url: str
    src: str | None = None
    powerpack_uuid: str | None = None
    message_expiry: int | None = None


@dataclass(frozen=True)
class Accepted:
    api_id: str
    message_uuids: tuple[str, ...]
    invalid_numbers: tuple[str, ...]


class SendError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Refused(SendError):
    """Permanent: Plivo refused this batch; resending would be refused again."""


class BadCredentials(Refused):
    """Plivo refused our credentials: every other batch of the job would fail too."""


class NotSent(SendError):
    """Transient, and Plivo did not take the batch: safe to retry."""


class OutcomeUnknown(SendError):
    """The request was written, the answer never came: Plivo may have sent the messages."""


_STATUS_IN_TEXT = re.compile(r"status code (\d{3})")
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def set_api_url(api_url: str) -> None:
    """Point the SDK at another API base (the sandbox).

    The SDK resets its base URL from this module constant on every request, so the constant is
    the one seam (plivo 4.63.0's `plivo.rest.client`). It is process-wide, like the setting it
    comes from.
    """
    plivo_client.PLIVO_API_BASE_URI = f"{api_url.rstrip('/')}/v1/Account"


class PlivoGateway:
    """Sends batches with the official SDK. One instance per process (it holds a session)."""

    def __init__(self, auth_id: str, auth_token: str, api_url: str, timeout: float) -> None:
        set_api_url(api_url)
        self._client = plivo.RestClient(auth_id, auth_token, timeout=timeout)
        # The SDK drops response headers; keep Retry-After for the retry decision.
        self._last = threading.local()
        self._client.session.hooks["response"].append(self._remember_headers)

    def _remember_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.retry_after = _parse_retry_after(response.headers.get("Retry-After"))

    def send(self, outgoing: Outgoing) -> Accepted:
        self._last.retry_after = None
        try:
            response = self._client.messages.create(
                src=outgoing.src,
                dst="<".join(outgoing.dst),  # never a list: the SDK would send its repr
                text=outgoing.text,
                url=outgoing.url,
                method="POST",
                powerpack_uuid=outgoing.powerpack_uuid,
                message_expiry=outgoing.message_expiry,
            )
        except plivo_errors.PlivoRestError as exc:
            raise self._classify_plivo(exc) from exc
        except requests.RequestException as exc:
            raise _classify_transport(exc) from exc
        return Accepted(
            api_id=str(getattr(response, "api_id", "") or ""),
            message_uuids=tuple(getattr(response, "message_uuid", None) or ()),
            invalid_numbers=tuple(str(n) for n in getattr(response, "invalid_number", None) or ()),
        )

    def _classify_plivo(self, exc: plivo_errors.PlivoRestError) -> SendError:
        reason = str(exc) or type(exc).__name__
        retry_after = getattr(self._last, "retry_after", None)
        if isinstance(exc, plivo_errors.AuthenticationError):
            return BadCredentials(reason)
        if isinstance(exc, plivo_errors.PlivoServerError):
            return NotSent(reason, retry_after)
        if isinstance(
            exc,
            plivo_errors.ValidationError
            | plivo_errors.ForbiddenError
            | plivo_errors.ResourceNotFoundError
            | plivo_errors.InvalidRequestError,
        ):
            return Refused(reason)
        match = _STATUS_IN_TEXT.search(reason)
        if match and int(match.group(1)) in _TRANSIENT_STATUSES:
            return NotSent(f"Plivo answered {match.group(1)}", retry_after)
        return Refused(reason)


def _classify_transport(exc: requests.RequestException) -> SendError:
    if isinstance(exc, requests.ConnectTimeout):
        return NotSent("connect timeout")
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        if isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError):
            return NotSent("connection refused")
        return OutcomeUnknown(f"connection dropped after the request was sent ({exc})")
    if isinstance(exc, requests.ReadTimeout):
        return OutcomeUnknown("read timeout")
    return OutcomeUnknown(f"{type(exc).__name__}: {exc}")


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from an API; the backoff applies instead
