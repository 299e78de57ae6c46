"""A local Plivo: the Message API's send call, and signed delivery reports posted back.

It answers like Plivo (Basic auth with the configured credentials, `<`-joined bulk `dst` of at
most 1000 unique numbers, Plivo's 202 and error shapes, `invalid_number`), then posts each
message's reports (`queued`, `sent`, then mostly `delivered`, some `undelivered` or `failed` with
Plivo error codes) to the request's `url`, signed with V3 and V2 headers as Plivo signs them,
retrying a refused report as Plivo does (on a shorter clock).

Like Plivo, it is a queue, not a sink: with an account MPS set (`Faults.mps`), the messages it
accepts leave one after another at that many segments a second, in the order accepted; each
message records when it was accepted and when it left (`left_at`), its `sent` and final reports
follow its leaving, and one whose wait would pass its `message_expiry` (3 hours by default) fails
with error 420 instead, without leaving.

It keeps a record of every message it accepted, so tests count "sent exactly once" on the Plivo
side, and it has fault switches for tests and benchmarks (`Faults`), set at start or at run time
with `POST /sandbox/faults`. Everything under `/sandbox/` is the sandbox's own control API.

Served by the standard library's threading HTTP server, with each answer written in one send
and TCP_NODELAY set (a header/body split stalls every SDK call by ~40 ms: Nagle's algorithm
waits for the client's delayed ACK).
"""

from __future__ import annotations

import base64
import heapq
import hmac
import http.client
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bulksms import message, signature

log = logging.getLogger("bulksms.devstack.sandbox")

MESSAGE_PATH = re.compile(r"^/v1/Account/([^/]+)/Message/?$")
ONE_MESSAGE_PATH = re.compile(r"^/v1/Account/([^/]+)/Message/([^/]+)/?$")
LIST_LIMIT = 20  # Plivo's most messages a page
TIME_FILTERS = {"message_time__gte", "message_time__gt", "message_time__lte", "message_time__lt"}
DST_RE = re.compile(r"^\+?[1-9][0-9]{6,14}\Z")
MAX_DESTINATIONS = 1000
# Plivo's messaging error codes, for the failures the sandbox simulates.
UNDELIVERED_CODES = ("20", "80", "70")  # network error, temporarily / permanently unavailable
FAILED_CODES = ("50", "90", "1000")  # invalid destination, no route, unknown error
EXPIRED_CODE = "420"  # waited in Plivo's queue past its expiry: failed, not charged
DEFAULT_EXPIRY = 10_800  # seconds: Plivo's 3 hours


@dataclass
class Faults:
    """Switches that make the sandbox misbehave. All off by default."""

    latency_ms: int = 0  # added before every answer to a send
    fail_next: list[int] = field(default_factory=list)  # statuses for the next sends (500, 429…)
    error_rate: float = 0.0  # share of sends answered with error_status
    error_status: int = 500
    retry_after: int | None = None  # Retry-After header sent with 429/503 answers
    drop_next: int = 0  # accept the next N sends, then close the connection unanswered
    drop_rate: float = 0.0  # share of sends accepted and then dropped
    lose_next: int = 0  # read the next N sends and drop the connection without accepting them
    # Statuses for the next sends, answered after accepting them: a gateway (502, 504) or the
    # backend (500) failing on the way back, the messages sent all the same.
    accept_then_fail: list[int] = field(default_factory=list)
    no_credit: bool = False  # refuse every send as Plivo does an account out of credit
    invalid_numbers: list[str] = field(default_factory=list)  # listed in invalid_number
    reports: bool = True  # post delivery reports at all
    shuffle_reports: bool = False  # post a message's reports in random order
    repeat_rate: float = 0.0  # share of reports posted twice
    signatures: str = "both"  # sign reports with v3, v2 or both families of headers
    no_queued: bool = False  # post no `queued` report (whether Plivo does is not documented)
    no_receipt: list[str] = field(default_factory=list)  # number prefixes whose last word is sent
    part_reports: bool = False  # report a long message part by part, as older Plivo accounts do
    report_delay_ms: int = 20  # between one status and the next
    undelivered_rate: float = 0.05
    failed_rate: float = 0.03
    lean: bool = False  # keep no per-message text (benchmarks of a million messages)
    # Plivo's queue: the account sends `mps` segments a second (0: at once, no queue); what
    # waits longer than the send's message_expiry (default 3 hours) fails with error 420.
    mps: float = 0.0
    default_expiry: int = DEFAULT_EXPIRY
    # The Message API's reads: listing has its own limit (Plivo's default: 20 a minute; 0: none).
    list_per_minute: int = 20

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            setattr(self, name, value)


@dataclass(order=True)
class _Report:
    due: float
    seq: int
    url: str = field(compare=False)
    params: dict[str, str] = field(compare=False)
    attempt: int = field(default=0, compare=False)
    headers: dict[str, str] | None = field(default=None, compare=False)  # kept for retries


class Sandbox:
    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        signing_key: str | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        report_retry_delays: tuple[float, ...] = (1.0, 3.0, 7.0),
        report_threads: int = 8,
        main_signing_key: str | None = None,
    ) -> None:
        self.auth_id, self.auth_token = auth_id, auth_token
        self.signing_key = signing_key or auth_token
        # The `Ma-` headers: signed with the main account's token (a subaccount's differs).
        self.main_signing_key = main_signing_key or self.signing_key
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.retry_delays = report_retry_delays
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.sends: list[dict[str, Any]] = []  # every send request: when, and the answer
        self.counters = {
            "requests": 0,
            "accepted_requests": 0,
            "refused_requests": 0,
            "dropped_requests": 0,
            "lost_requests": 0,
            "reports_posted": 0,
            "reports_refused": 0,
            "reports_given_up": 0,
            "list_requests": 0,
            "list_refused": 0,
            "lookups": 0,
        }
        self._listed: list[float] = []  # when recent list requests came (the per-minute limit)
        self._queue: list[_Report] = []
        self._seq = 0
        self._free = 0.0  # when Plivo's queue (at `faults.mps`) will have sent all it holds
        self._wake = threading.Condition(self.lock)
        self._inflight = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._post_reports, name=f"sandbox-reports-{i}", daemon=True)
            for i in range(report_threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- the Message API ----------------------------------------------------------------------
    def authorised(self, header: str | None, path_auth_id: str) -> bool:
        expected = (
            "Basic " + base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        )
        return hmac.compare_digest((header or "").encode(), expected.encode()) and (
            path_auth_id == self.auth_id
        )

    def decide_fault(self) -> tuple[int | None, bool, int | None]:
        """(error status to answer instead, whether to drop the connection after accepting,
        error status to answer after accepting)."""
        with self.lock:
            f = self.faults
            if f.fail_next:
                return f.fail_next.pop(0), False, None
            if f.accept_then_fail:
                return None, False, f.accept_then_fail.pop(0)
            if f.error_rate and self.random.random() < f.error_rate:
                return f.error_status, False, None
            if f.drop_next > 0:
                f.drop_next -= 1
                return None, True, None
            return None, bool(f.drop_rate and self.random.random() < f.drop_rate), None

    def accept(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Validate a send like Plivo; on success record it and schedule its reports."""
        api_id = str(uuid.uuid4())
        dst = body.get("dst")
        src, powerpack = body.get("src"), body.get("powerpack_uuid")
        text = body.get("text")
        if not isinstance(dst, str) or not dst:
            return 400, {"api_id": api_id, "error": "dst parameter is required"}
        if not src and not powerpack:
            return 400, {"api_id": api_id, "error": "src or powerpack_uuid is required"}
        if src and powerpack:
            return 400, {"api_id": api_id, "error": "specify src or powerpack_uuid, not both"}
        if not isinstance(text, str) or not text:
            return 400, {"api_id": api_id, "error": "text parameter is required"}
        numbers = list(dict.fromkeys(dst.split("<")))  # a repeated number: dropped, as Plivo does
        if len(numbers) > MAX_DESTINATIONS:
            return 400, {
                "api_id": api_id,
                "error": f"more than {MAX_DESTINATIONS} destination numbers",
            }
        with self.lock:
            refused_list = set(self.faults.invalid_numbers)
            faults = Faults(**asdict(self.faults))
        invalid = [n for n in numbers if not DST_RE.match(n) or n in refused_list]
        accepted = [n for n in numbers if n not in set(invalid)]
        url = body.get("url")
        segments = max(1, message.encode(text).segments)
        try:
            expiry = int(body.get("message_expiry") or faults.default_expiry)
        except (TypeError, ValueError):
            return 400, {"api_id": api_id, "error": "message_expiry must be a whole number"}
        now = time.time()
        records = []
        with self.lock:
            leaving = self._leave_times(len(accepted), segments, now, expiry, faults.mps)
        for number, left_at in zip(accepted, leaving, strict=True):
            outcome, code = self._outcome(faults)
            if any(number.startswith(prefix) for prefix in faults.no_receipt):
                outcome, code = "sent", ""  # (the carrier gives no receipt)
            if left_at is None:
                outcome, code = "failed", EXPIRED_CODE
            record = {
                "message_uuid": str(uuid.uuid4()),
                "api_id": api_id,
                "dst": number,
                "src": src or "",
                "powerpack_uuid": powerpack,
                "status": outcome,
                "error_code": code,
                "url": url,
                "accepted_at": now,
                "left_at": left_at,  # None: expired in the queue
                "expires_at": now + expiry,
                "segments": segments,
            }
            if not faults.lean:
                record["text"] = text
                record["message_expiry"] = body.get("message_expiry")
            records.append(record)
        with self.lock:
            self.messages.extend(records)
            self.counters["accepted_requests"] += 1
        if url and faults.reports:
            self._schedule_reports(records, faults)
        answer: dict[str, Any] = {
            "api_id": api_id,
            "message": "message(s) queued",
            "message_uuid": [r["message_uuid"] for r in records],
        }
        if invalid:
            answer["invalid_number"] = invalid
        return 202, answer

    # -- the Message API's reads --------------------------------------------------------------
    def _state(self, record: dict[str, Any], now: float) -> str:
        """A message's state now: queued until it leaves, sent, then its outcome."""
        step = self.faults.report_delay_ms / 1000
        if record["left_at"] is None:
            return "failed" if now >= record["expires_at"] else "queued"
        if now < record["left_at"]:
            return "queued"
        if record["status"] == "sent" or now < record["left_at"] + step:
            return "sent"
        return str(record["status"])

    def _message_object(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        state = self._state(record, now)
        final = state not in ("queued", "sent")
        charged = state != "queued" and record["error_code"] != EXPIRED_CODE
        return {
            "message_uuid": record["message_uuid"],
            "from_number": record["src"].lstrip("+"),
            "to_number": record["dst"].lstrip("+"),
            "message_direction": "outbound",
            "message_state": state,
            "message_type": "sms",
            "message_time": _plivo_time(record["accepted_at"]),
            "units": record["segments"],
            "total_rate": "0.00500",
            "total_amount": f"{0.005 * record['segments']:.5f}" if charged else "0.00000",
            "error_code": record["error_code"] if final else "",
            "resource_uri": f"/v1/Account/{self.auth_id}/Message/{record['message_uuid']}/",
        }

    def lookup(self, message_uuid: str) -> tuple[int, dict[str, Any]]:
        """`GET Message/{uuid}/`: the message, as Plivo shows it."""
        now = time.time()
        with self.lock:
            self.counters["lookups"] += 1
            found = next((m for m in self.messages if m["message_uuid"] == message_uuid), None)
            if found is None:
                return 404, {"api_id": str(uuid.uuid4()), "error": "not found"}
            return 200, {"api_id": str(uuid.uuid4()), **self._message_object(found, now)}

    def list_messages(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """`GET Message/`: outbound messages newest first, with the SDK's filters (`to_number`,
        `from_number`, `powerpack_id`, `message_time__gte` and the like, `message_state`,
        `limit` ≤ 20, `offset`), in Plivo's shape: `meta` (with `next`) and `objects`."""
        now = time.time()
        api_id = str(uuid.uuid4())
        try:
            limit = int(query.get("limit", LIST_LIMIT))
            offset = int(query.get("offset", 0))
            times = {k: _parse_plivo_time(v) for k, v in query.items() if k in TIME_FILTERS}
        except ValueError as exc:
            return 400, {"api_id": api_id, "error": str(exc)}
        if not 0 < limit <= LIST_LIMIT or offset < 0:
            return 400, {"api_id": api_id, "error": "0 < limit <= 20 and 0 <= offset"}
        with self.lock:
            per_minute = self.faults.list_per_minute
            self._listed = [t for t in self._listed if t > now - 60]
            if per_minute and len(self._listed) >= per_minute:
                self.counters["list_refused"] += 1
                return 429, {"api_id": api_id, "error": "too many requests"}
            self._listed.append(now)
            self.counters["list_requests"] += 1
            chosen = [m for m in self.messages if _listed(m, query, times)]
            if query.get("message_direction", "outbound") != "outbound":
                chosen = []
            chosen.sort(key=lambda m: m["accepted_at"], reverse=True)
            objects = [self._message_object(m, now) for m in chosen]
        if "message_state" in query:
            objects = [o for o in objects if o["message_state"] == query["message_state"]]
        page = objects[offset : offset + limit]
        more = offset + limit < len(objects)
        base = f"/v1/Account/{self.auth_id}/Message/?limit={limit}&offset="
        return 200, {
            "api_id": api_id,
            "meta": {
                "limit": limit,
                "offset": offset,
                "total_count": len(objects),
                "next": f"{base}{offset + limit}" if more else None,
                "previous": f"{base}{max(0, offset - limit)}" if offset else None,
            },
            "objects": page,
        }

    def _leave_times(
        self, count: int, segments: int, now: float, expiry: int, mps: float
    ) -> list[float | None]:
        """When each of `count` messages leaves the queue (None: it expires first). Called
        with the lock held: the queue is one line, first in first out."""
        if mps <= 0:
            return [now] * count
        times: list[float | None] = []
        for _ in range(count):
            leaves = max(self._free, now) + segments / mps
            if leaves - now > expiry:
                times.append(None)  # never sent: takes no room in the queue
            else:
                self._free = leaves
                times.append(leaves)
        return times

    def _outcome(self, faults: Faults) -> tuple[str, str]:
        roll = self.random.random()
        if roll < faults.failed_rate:
            return "failed", self.random.choice(FAILED_CODES)
        if roll < faults.failed_rate + faults.undelivered_rate:
            return "undelivered", self.random.choice(UNDELIVERED_CODES)
        return "delivered", ""

    # -- delivery reports ---------------------------------------------------------------------
    def _schedule_reports(self, records: list[dict[str, Any]], faults: Faults) -> None:
        """queued at once; sent when the message leaves the queue, then its final status one
        step later (failed 420 at its expiry if it never leaves); shuffled and repeated when
        the faults say so."""
        step = faults.report_delay_ms / 1000
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with self.lock:
            for r in records:
                queued_at = r["accepted_at"] + step
                if r["left_at"] is None:
                    steps = [("queued", queued_at), ("failed", r["expires_at"])]
                else:
                    sent_at = max(queued_at + step, r["left_at"])
                    steps = [("queued", queued_at), ("sent", sent_at)]
                    if r["status"] != "sent":  # (no receipt: `sent` is the last word)
                        steps.append((r["status"], sent_at + step))
                if faults.no_queued:
                    steps = steps[1:]
                parts = r["segments"] if faults.part_reports and r["segments"] > 1 else 1
                for part in range(1, parts + 1):
                    self._schedule_part(r, part, parts, steps, queued_at, step, faults, stamp)
            self._wake.notify_all()

    def _schedule_part(
        self,
        r: dict[str, Any],
        part: int,
        parts: int,
        steps: list[tuple[str, float]],
        queued_at: float,
        step: float,
        faults: Faults,
        stamp: str,
    ) -> None:
        """One message's reports, or one part's (`part_reports`: each part its own UUID, the
        first part's as ParentMessageUUID, `PartInfo` "k of n", its own units)."""
        parent = r["message_uuid"]
        own = parent if part == 1 else str(uuid.uuid5(uuid.UUID(parent), str(part)))
        units = r["segments"] if parts == 1 else 1
        for sequence, (status, due) in enumerate(steps, 1):
            final = status == r["status"]
            params = {
                "MessageUUID": own,
                "ParentMessageUUID": parent,
                "Status": status,
                "To": r["dst"].lstrip("+"),
                "From": r["src"].lstrip("+"),
                "ErrorCode": r["error_code"] if final else "",
                "Units": str(units),
                "PartInfo": f"{part} of {parts}",
                "Sequence": str(sequence),
                "TotalRate": "0.0050",
                # Plivo charges at `sent`: that report and the later ones carry it.
                "TotalAmount": f"{0.005 * units:.5f}"
                if status != "queued" and r["error_code"] != EXPIRED_CODE
                else "0.00000",
                "MessageTime": stamp,
            }
            if faults.shuffle_reports:
                due = queued_at + self.random.uniform(0, 3 * step)
            self._push(due, r["url"], params)
            if faults.repeat_rate and self.random.random() < faults.repeat_rate:
                self._push(due + self.random.uniform(0, 3 * step), r["url"], params)

    def _push(self, due: float, url: str, params: dict[str, str]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Report(due, self._seq, url, params))

    def _post_reports(self) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}  # kept alive, by host
        try:
            self._post_until_stopped(connections)
        finally:
            for connection in connections.values():
                connection.close()

    def _post_until_stopped(self, connections: dict[str, http.client.HTTPConnection]) -> None:
        while True:
            with self.lock:
                while not self._stopping and (not self._queue or self._queue[0].due > time.time()):
                    timeout = (self._queue[0].due - time.time()) if self._queue else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                report = heapq.heappop(self._queue)
                self._inflight += 1
            ok = self._post(connections, report)
            with self.lock:
                self._inflight -= 1
                if ok:
                    self.counters["reports_posted"] += 1
                else:
                    self.counters["reports_refused"] += 1
                    if report.attempt < len(self.retry_delays):
                        report.due = time.time() + self.retry_delays[report.attempt]
                        report.attempt += 1
                        heapq.heappush(self._queue, report)
                    else:
                        self.counters["reports_given_up"] += 1
                self._wake.notify_all()

    def _post(self, connections: dict[str, http.client.HTTPConnection], report: _Report) -> bool:
        """One report, on a connection kept alive to its host. (The standard library's client:
        the suite's reports are posted from the test process, where a heavier one cost 2 ms of
        its CPU a report and held every report-heavy test to its pace.)"""
        if report.headers is None:  # Plivo retries a report with the same nonce
            report.headers = self.sign(report.url, report.params)
        url = urlsplit(report.url)
        target = f"{url.path}?{url.query}" if url.query else url.path
        headers = {**report.headers, "Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode(report.params)
        for first in (True, False):
            reused = url.netloc in connections
            connection = connections.pop(url.netloc, None) or _connection(url.scheme, url.netloc)
            try:
                connection.request("POST", target, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (http.client.HTTPException, OSError) as exc:
                connection.close()
                if first and reused and isinstance(exc, _CLOSED_WHILE_IDLE):
                    continue  # the server closed it while idle: once more, on a new one
                log.info("report to %s failed: %s", report.url, type(exc).__name__)
                return False
            if not response.will_close:
                connections[url.netloc] = connection
            return 200 <= response.status < 300
        return False

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """Plivo's headers for one report, in the families `faults.signatures` names."""
        mode, headers = self.faults.signatures, dict[str, str]()
        if mode in ("both", "v2"):
            nonce = f"{secrets.randbelow(10**20):020d}"  # (20 digits)
            headers |= {
                signature.V2: signature.sign_v2(url, nonce, self.signing_key),
                signature.MA_V2: signature.sign_v2(url, nonce, self.main_signing_key),
                signature.V2_NONCE: nonce,
            }
        if mode in ("both", "v3"):
            nonce = f"{secrets.randbelow(10**20):020d}"
            headers |= {
                signature.V3: signature.sign_v3(url, params, nonce, self.signing_key),
                signature.MA_V3: signature.sign_v3(url, params, nonce, self.main_signing_key),
                signature.V3_NONCE: nonce,
            }
        return headers

    def report_backlog(self) -> int:
        with self.lock:
            return len(self._queue) + self._inflight

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                **self.counters,
                "messages": len(self.messages),
                "reports_pending": len(self._queue) + self._inflight,
            }

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.sends.clear()
            self._queue.clear()
            self._free = 0.0
            self._listed.clear()
            self.faults = Faults()
            for key in self.counters:
                self.counters[key] = 0

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self._wake.notify_all()


def _plivo_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime(at))


def _parse_plivo_time(text: str) -> float:
    """Plivo's filter format, `YYYY-MM-DD HH:MM[:ss[.uuuuuu]]`, in UTC."""
    for form in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            parsed = datetime.strptime(text.strip(), form)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC).timestamp()
    raise ValueError(f"not a time Plivo takes: {text!r}")


def _listed(record: dict[str, Any], query: dict[str, str], times: dict[str, float]) -> bool:
    for name, wanted in (("to_number", "dst"), ("from_number", "src")):
        if name in query and query[name].lstrip("+") != str(record[wanted] or "").lstrip("+"):
            return False
    if "powerpack_id" in query and query["powerpack_id"] != record.get("powerpack_uuid"):
        return False
    at = int(record["accepted_at"])  # Plivo's times are whole seconds
    bounds = {
        "message_time__gte": lambda t: at >= t,
        "message_time__gt": lambda t: at > t,
        "message_time__lte": lambda t: at <= t,
        "message_time__lt": lambda t: at < t,
    }
    return all(bounds[name](value) for name, value in times.items())


# What a kept-alive connection the server closed while it was idle raises on its next request.
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _connection(scheme: str, netloc: str) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(netloc, timeout=8)
    return http.client.HTTPConnection(netloc, timeout=8)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's session expects
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Server: plivo-sandbox",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)  # one write
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
        sandbox = self.server.sandbox
        try:
            body = self._body()
        except ValueError:
            self._answer(400, {"api_id": str(uuid.uuid4()), "error": "invalid JSON"})
            return
        match = MESSAGE_PATH.match(self.path.split("?")[0])
        if match:
            self._send_message(sandbox, match.group(1), body)
        elif self.path == "/sandbox/faults":
            try:
                sandbox.faults.update(body)
            except (ValueError, TypeError) as exc:
                self._answer(400, {"error": str(exc)})
                return
            self._answer(200, asdict(sandbox.faults))
        elif self.path == "/sandbox/reset":
            sandbox.reset()
            self._answer(200, {"reset": True})
        else:
            self._answer(404, {"api_id": str(uuid.uuid4()), "error": "not found"})

    def _send_message(self, sandbox: Sandbox, auth_id: str, body: Any) -> None:
        with sandbox.lock:
            sandbox.counters["requests"] += 1
            latency = sandbox.faults.latency_ms
            sent: dict[str, Any] = {"at": time.time(), "status": None}
            sandbox.sends.append(sent)
        if latency:
            time.sleep(latency / 1000)
        if not sandbox.authorised(self.headers.get("Authorization"), auth_id):
            sent["status"] = 401
            self._answer(401, {"api_id": str(uuid.uuid4()), "error": "authentication failed"})
            return
        with sandbox.lock:
            lose = sandbox.faults.lose_next > 0
            if lose:
                sandbox.faults.lose_next -= 1
                sandbox.counters["lost_requests"] += 1
        if lose:  # the request arrived whole, and vanished: the sender cannot know which
            sent["status"] = "lost"
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if sandbox.faults.no_credit:
            sent["status"] = 400
            self._answer(400, {"api_id": str(uuid.uuid4()), "error": "Insufficient credit"})
            return
        error, drop, late_error = sandbox.decide_fault()
        if error:
            sent["status"] = error
            with sandbox.lock:
                sandbox.counters["refused_requests"] += 1
                retry_after = sandbox.faults.retry_after
            headers = (
                {"Retry-After": str(retry_after)} if retry_after and error in (429, 503) else {}
            )
            self._answer(
                error, {"api_id": str(uuid.uuid4()), "error": f"simulated {error}"}, headers
            )
            return
        status, answer = sandbox.accept(body if isinstance(body, dict) else {})
        if late_error and status == 202:  # sent, and answered with an error all the same
            sent["status"] = f"accepted, answered {late_error}"
            self._answer(late_error, {"api_id": answer["api_id"], "error": "simulated"})
            return
        sent["status"] = "dropped" if drop and status == 202 else status
        if drop and status == 202:
            with sandbox.lock:
                sandbox.counters["dropped_requests"] += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(status, answer)

    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        sandbox = self.server.sandbox
        path, _, raw_query = self.path.partition("?")
        one, listing = ONE_MESSAGE_PATH.match(path), MESSAGE_PATH.match(path)
        if one or listing:
            auth_id = (one or listing).group(1)  # type: ignore[union-attr]
            if not sandbox.authorised(self.headers.get("Authorization"), auth_id):
                self._answer(401, {"api_id": str(uuid.uuid4()), "error": "authentication failed"})
            elif one:
                self._answer(*sandbox.lookup(one.group(2)))
            else:
                query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
                status, body = sandbox.list_messages(query)
                self._answer(status, body, {"Retry-After": "60"} if status == 429 else None)
        elif self.path == "/sandbox/messages":
            with sandbox.lock:
                messages = list(sandbox.messages)
            self._answer(200, {"messages": messages})
        elif self.path == "/sandbox/times":  # lighter than every message, for benchmarks
            with sandbox.lock:
                accepted = [m["accepted_at"] for m in sandbox.messages]
                left = [m["left_at"] for m in sandbox.messages]
            self._answer(200, {"accepted_at": accepted, "left_at": left})
        elif self.path == "/sandbox/sends":
            with sandbox.lock:
                sends = list(sandbox.sends)
            self._answer(200, {"sends": sends})
        elif self.path == "/sandbox/stats":
            self._answer(200, sandbox.stats())
        elif self.path == "/sandbox/faults":
            self._answer(200, asdict(sandbox.faults))
        else:
            self._answer(404, {"error": "not found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        super().__init__(address, _Handler)
        self.sandbox = sandbox


def serve(sandbox: Sandbox, host: str, port: int, poll_interval: float = 0.5) -> _Server:
    """Start serving in a background thread; returns the server (`.server_address`). Its
    `shutdown` waits for the thread's next look (`poll_interval`): a test suite starting one
    per test asks for a shorter one."""
    server = _Server((host, port), sandbox)
    threading.Thread(
        target=server.serve_forever, args=(poll_interval,), name="sandbox-http", daemon=True
    ).start()
    return server


def make_credentials() -> tuple[str, str]:
    """Sandbox credentials that look real enough for the SDK (MA + 18 characters)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    auth_id = "MA" + "".join(secrets.choice(alphabet) for _ in range(18))
    return auth_id, secrets.token_urlsafe(30)


def faults_from_json(text: str) -> Faults:
    faults = Faults()
    faults.update(json.loads(text))
    return faults
