"""The one place that talks to Plivo: send one batch, say what Plivo accepted, or why not.

Reads (`list_outbound`, `list_sent_by`, `lookup`) ask Plivo's Message API what became of
messages whose call got no answer; any failure there is a `LookupFailed`: ask again later.

The SDK's exceptions are mapped here, once, to four outcomes the task can act on:

- `Accepted`        Plivo took the batch (some numbers may be in `invalid_numbers`).
- `Refused`         Plivo said no for good (400/403/404...): fail the batch, never resend.
  `AccountRefused`  Plivo refused the account, not the batch (`BadCredentials`: 401;
                    `OutOfCredit`: "insufficient credit"): stop the whole job.
- `NotSent`         nothing reached Plivo, or Plivo asked us to come back (429, 503, 408):
                    retry.
- `OutcomeUnknown`  the request went out and no answer says what became of it (read timeout,
                    dropped connection, 500, or a gateway's 502/504, which say nothing of
                    Plivo's backend): Plivo may have sent it, so it must not be resent blindly.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class Found:
    """One message as Plivo's Message API shows it."""

    uuid: str
    src: str  # from_number, as Plivo writes it (digits, or an alphanumeric sender)
    dst: str
    state: str  # queued, sent, delivered, undelivered, failed, rejected…
    at: float  # message_time: when Plivo took it (unix seconds)
    units: int
    amount: float
    error_code: str


class LookupFailed(Exception):
    """Plivo's Message API did not answer a read (or said no): ask again later."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class SendError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Refused(SendError):
    """Permanent: Plivo refused this batch; resending would be refused again."""


class AccountRefused(Refused):
    """Plivo refused the account: every other batch of the job would be refused too."""


class BadCredentials(AccountRefused):
    """Plivo refused our credentials."""


class OutOfCredit(AccountRefused):
    """The account has no credit left (Plivo refuses every send for a while after)."""


class NotSent(SendError):
    """Transient, and Plivo did not take the batch: safe to retry."""


class OutcomeUnknown(SendError):
    """The request was written, the answer never came: Plivo may have sent the messages."""


_STATUS_IN_TEXT = re.compile(r"status code (\d{3})")
_NOT_TAKEN_STATUSES = {408, 425, 429, 503}  # Plivo (or its edge) did not take the request
_UNKNOWN_STATUSES = {500, 502, 504}  # whatever failed, it may have been after the send
_NO_CREDIT = re.compile(r"insufficient\s+(credit|balance|funds)", re.IGNORECASE)


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

    def list_outbound(self, to_number: str, since: float, until: float) -> list[Found]:
        """Outbound messages to `to_number` that Plivo took between `since` and `until` (unix
        seconds, whole seconds on Plivo's side), newest first: one request (up to 20, Plivo's
        page), which counts against the listing's own limit."""
        return self._list(since, until, 0, to_number=to_number.lstrip("+"))

    def list_sent_by(
        self, sender: str | None, powerpack: str | None, since: float, until: float, offset: int
    ) -> list[Found]:
        """One page (20) of the outbound messages from `sender` (or through the Powerpack
        `powerpack`) that Plivo took between `since` and `until`, newest first, from
        `offset`."""
        if sender:
            return self._list(since, until, offset, from_number=sender.lstrip("+"))
        return self._list(since, until, offset, powerpack_id=powerpack)

    def _list(self, since: float, until: float, offset: int, **where: str | None) -> list[Found]:
        self._last.retry_after = None
        try:
            page = self._client.messages.list(
                message_direction="outbound",
                message_time__gte=_plivo_time(since),
                message_time__lte=_plivo_time(until),
                limit=20,
                offset=offset,
                **where,
            )
        except Exception as exc:  # a read: whatever went wrong (the SDK itself fails on a 429's
            # body, which has no `objects`), the answer is "ask again later"
            raise LookupFailed(str(exc) or type(exc).__name__, self._last.retry_after) from exc
        error = getattr(page, "error", None)
        if error:
            raise LookupFailed(str(error), self._last.retry_after)
        return [_found(item) for item in page]

    def lookup(self, message_uuid: str) -> Found | None:
        """One message by its UUID; None if Plivo does not know it."""
        self._last.retry_after = None
        try:
            item = self._client.messages.get(message_uuid)
        except plivo_errors.ResourceNotFoundError:
            return None
        except Exception as exc:  # a read: ask again later
            raise LookupFailed(str(exc) or type(exc).__name__, self._last.retry_after) from exc
        return _found(item)

    def _classify_plivo(self, exc: plivo_errors.PlivoRestError) -> SendError:
        reason = str(exc) or type(exc).__name__
        retry_after = getattr(self._last, "retry_after", None)
        if isinstance(exc, plivo_errors.AuthenticationError):
            return BadCredentials(reason)
        if _NO_CREDIT.search(reason) or "status code 402" in reason:
            return OutOfCredit(reason)
        if isinstance(exc, plivo_errors.PlivoServerError):  # 500
            return OutcomeUnknown(f"Plivo answered 500: {reason}")
        if isinstance(
            exc,
            plivo_errors.ValidationError
            | plivo_errors.ForbiddenError
            | plivo_errors.ResourceNotFoundError
            | plivo_errors.InvalidRequestError,
        ):
            return Refused(reason)
        match = _STATUS_IN_TEXT.search(reason)
        status = int(match.group(1)) if match else 0
        if status in _NOT_TAKEN_STATUSES:
            return NotSent(f"Plivo answered {status}", retry_after)
        if status in _UNKNOWN_STATUSES or status >= 500:
            return OutcomeUnknown(f"Plivo answered {status}")
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


def _plivo_time(at: float) -> str:
    """A time as Plivo's filters take it (`YYYY-MM-DD HH:MM:SS`, UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _found(item: Any) -> Found:
    def field(name: str) -> str:
        value = getattr(item, name, None)
        return "" if value is None else str(value)

    try:
        when = datetime.fromisoformat(field("message_time"))
        at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        at = 0.0  # (an odd time is no evidence of when: it never falls inside a window)
    try:
        units, amount = int(field("units") or 0), float(field("total_amount") or 0)
    except ValueError:
        units, amount = 0, 0.0
    return Found(
        uuid=field("message_uuid"),
        src=field("from_number"),
        dst=field("to_number"),
        state=field("message_state"),
        at=at,
        units=units,
        amount=amount,
        error_code=field("error_code"),
    )


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from an API; the backoff applies instead
