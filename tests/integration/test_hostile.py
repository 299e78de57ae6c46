"""What anyone on the internet may send the open endpoints, against the real gunicorn: bodies too
big to hold, floods of readiness probes, and the log lines a job and the opt-out endpoints
leave behind (never a number)."""

from __future__ import annotations

import io
import multiprocessing
import secrets
import socket
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import requests
from flask.testing import FlaskClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bulksms import create_app, signature
from bulksms.api import report_fastpath
from bulksms.config import Settings
from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, wait_until

AUTH = {"X-API-Key": API_KEY}
WEBHOOKS = ("/api/webhooks/plivo/inbound", "/api/webhooks/plivo/delivery-report?job=x&batch=0")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def web_workers(stack: Stack) -> list[int]:
    master = stack.processes["web"].pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert children, "gunicorn has no workers"
    return [int(pid) for pid in children]


def post_unsigned(base_url: str, path: str, size: int) -> str:
    """POST `size` bytes with their length, as fast as the server takes them: what came back
    ('413', or 'reset' when the server closed while the body was still being sent)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        chunk = b"A=" + b"x" * 65534
        try:
            conn.sendall(head.encode())
            sent = 0
            while sent < size:
                conn.sendall(chunk[: size - sent])
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = conn.recv(4096)
        except ConnectionResetError:
            return "reset"
    return answer.split(b" ", 2)[1].decode() if answer else "reset"


def test_big_unsigned_bodies_are_refused_unread(stack: Stack) -> None:
    """Four concurrent 30 MB posts to each webhook: 413 from the length (or a reset while the
    client still sends), and no web worker grows by holding them."""
    before = {pid: rss_kib(pid) for pid in web_workers(stack)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda path: post_unsigned(stack.base_url, path, 30 * 1024 * 1024),
                [path for path in WEBHOOKS for _ in range(4)],
            )
        )
    assert set(answers) <= {"413", "reset"} and "413" in answers, answers
    for pid, size in before.items():
        grown = rss_kib(pid) - size
        assert grown < 50 * 1024, f"web worker {pid} grew by {grown} KiB"
    # Still serving, and a body just past the cap is refused with the JSON error.
    refused = requests.post(
        f"{stack.base_url}{WEBHOOKS[0]}",
        data=b"A=" + b"x" * (64 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert refused.status_code == 413 and refused.json()["error"] == "payload_too_large"


def test_a_body_without_a_length_is_cut_at_the_cap(stack: Stack) -> None:
    """Chunked: refused once 64 KB has come, never read whole."""

    def body() -> object:
        for _ in range(200):  # 12.8 MB, if it were all read
            yield b"x" * 65536

    try:
        answer = requests.post(
            f"{stack.base_url}{WEBHOOKS[0]}",
            data=body(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=60,
        )
    except requests.ConnectionError:
        return  # reset while still sending: refused all the same
    assert answer.status_code == 413


def test_past_the_bad_signature_limit_a_body_is_not_read(settings: Settings) -> None:
    client = create_app(replace(settings, rate_limit_bad_signatures="2/minute")).test_client()
    url = "/api/webhooks/plivo/inbound"
    for expected in (403, 403, 429):
        answer = client.post(url, data={"From": "1", "Text": "STOP"})
        assert answer.status_code == expected
    assert answer.headers["Retry-After"]

    class Unreadable(io.BytesIO):
        def read(self, *_: object) -> bytes:
            raise AssertionError("the body was read")

        readinto = readline = read  # type: ignore[assignment]

    refused = client.post(
        url,
        input_stream=Unreadable(b"From=1&Text=STOP"),
        content_type="application/x-www-form-urlencoded",
    )
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    # A report posted as V3 (a nonce header), 8 KB (Plivo's are under 2), is not read either:
    # only bodies of Plivo's size are taken in front of the limit, by the fast path.
    big = b"a=" + b"1" * 8192
    refused = client.post(
        report_fastpath.PATH + "?job=x&batch=0",
        input_stream=Unreadable(big),
        content_type="application/x-www-form-urlencoded",
        headers={
            "Content-Length": str(len(big)),
            signature.V3: "forged",
            signature.V3_NONCE: "n",
        },
    )
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"


def flood(base_url: str, paths: tuple[str, ...], clients: int, seconds: float) -> None:
    """`clients` threads asking for `paths` (in turn by thread) over and over for `seconds`
    (run in a process of its own: the test's timing thread must not wait on these for the
    GIL). Exits non-zero on an answer that is neither 200 nor 503 (readiness's no)."""
    deadline = time.monotonic() + seconds
    answered: list[int] = []

    def probe(n: int) -> None:
        with requests.Session() as session:
            # A kept-alive connection gunicorn closed as idle (its keep-alive is 5 s, and 200
            # threads in one process on a busy host can each wait that long for the GIL) is
            # found closed when reused: a GET is asked again once on a new one, as HTTP
            # allows. A connection closed without an answer twice running still fails.
            retry = Retry(total=1, connect=0, read=1, status=0, other=0)
            session.mount("http://", HTTPAdapter(max_retries=retry))
            while time.monotonic() < deadline:
                path = paths[n % len(paths)]
                answered.append(session.get(f"{base_url}{path}", timeout=60).status_code)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(probe, range(clients)))
    if len(answered) < clients or not set(answered) <= {200, 503}:
        raise SystemExit(f"{len(answered)} answers: {sorted(set(answered))}")


def liveness_under(stack: Stack, paths: tuple[str, ...]) -> float:
    """The 90th percentile of /healthz's time while 200 clients ask for `paths`."""
    flooding = multiprocessing.get_context("spawn").Process(
        target=flood, args=(stack.base_url, paths, 200, 8.0)
    )
    flooding.start()
    times: list[float] = []
    try:
        while flooding.is_alive():
            started = time.monotonic()
            live = requests.get(f"{stack.base_url}/healthz", timeout=30)
            assert live.status_code == 200
            times.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        flooding.join(120)
    assert flooding.exitcode == 0, f"{paths}: an answer was neither 200 nor 503 (see stderr)"
    assert len(times) > 10
    return statistics.quantiles(times, n=10)[8]


def test_many_readiness_probes_do_not_slow_liveness(stack: Stack) -> None:
    """200 clients asking for readiness without pause slow /healthz no more than 200 asking
    for /healthz itself: each process checks Redis and the workers at most once an interval
    and no caller waits on another's check (with no worker to answer, a Celery ping takes its
    whole second)."""
    stack.kill_workers()
    # Rounds alternated, each side's best taken: a busy host's load moves from one round to the
    # next, while probes that slowed liveness would slow every one of theirs.
    control: list[float] = []
    probed: list[float] = []
    for _ in range(2):
        control.append(liveness_under(stack, ("/healthz",)))
        probed.append(liveness_under(stack, ("/readyz", "/readyz/workers")))
    assert min(probed) <= 3 * min(control) + 0.25, (probed, control)


def test_no_log_line_holds_a_number(stack: Stack) -> None:
    """A whole job, the opt-out endpoints (numbers in their paths, in any form) and a STOP
    reply: every line written by gunicorn (its access log too) and the worker is read."""
    numbers = us_numbers(5, start=7000)
    answer = stack.submit({"recipients": numbers, "message": "Hi"})
    assert answer.status_code == 202
    stack.wait_for(answer.json()["job_id"], lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    target = numbers[0]
    national = target.removeprefix("+1")
    formatted = f"+1 ({national[:3]}) {national[3:6]}-{national[6:]}"
    for form in (target, quote(target, safe=""), quote(formatted, safe=""), national):
        for method in ("PUT", "GET", "DELETE"):
            found = requests.request(
                method, f"{stack.base_url}/api/opt-outs/{form}", headers=AUTH, timeout=30
            )
            assert found.status_code in (200, 404, 422), found.text
    url = f"{stack.base_url}/api/webhooks/plivo/inbound"
    params = {
        "From": numbers[1].lstrip("+"),
        "To": numbers[2].lstrip("+"),
        "Text": "STOP",
        "MessageUUID": str(uuid.uuid4()),
    }
    nonce = secrets.token_hex(8)
    key = stack.settings.webhook_key or ""
    headers = {signature.V3: signature.sign_v3(url, params, nonce, key), signature.V3_NONCE: nonce}
    assert requests.post(url, data=params, headers=headers, timeout=30).status_code == 204
    # A number with spaces in a raw request line: gunicorn cannot read it, and its error log
    # quotes what it took for the HTTP version ('415 555 0100 HTTP/1.1').
    spaced = numbers[3].removeprefix("+1")
    line = f"GET /api/opt-outs/+1 {spaced[:3]} {spaced[3:6]} {spaced[6:]} HTTP/1.1\r\n\r\n"
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(line.encode())
        assert raw.recv(100).startswith(b"HTTP/1.1 400")

    def written() -> str:
        return "\n".join(p.read_text(errors="replace") for p in stack.logs.glob("*.log"))

    # (gunicorn writes a request's access line once it has answered.)
    wait_until(lambda: "POST /api/webhooks/plivo/inbound" in written())
    wait_until(lambda: "Invalid request" in written())
    assert "/api/opt-outs/****" in written()
    for number in numbers:
        digits = number.removeprefix("+1")
        for shown in (
            digits,
            f"{digits[3:6]}-{digits[6:]}",
            f"{digits[:3]}) {digits[3:6]}",
            f"{digits[3:6]} {digits[6:]}",
        ):
            assert shown not in written(), f"{shown} is in the logs"


def test_a_report_over_the_cap_is_the_json_413(client: FlaskClient) -> None:
    """(Past the reports' fast path, which leaves it to Flask.)"""
    answer = client.post(
        WEBHOOKS[1],
        data=b"x" * (64 * 1024 + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413 and answer.get_json()["error"] == "payload_too_large"


def test_sign_in_takes_no_big_form(stack: Stack) -> None:
    """The sign-in form is open to anyone: a 30 MB urlencoded body is refused from its length,
    and no web worker grows by it."""
    before = {pid: rss_kib(pid) for pid in web_workers(stack)}
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        size = 30 * 1024 * 1024
        conn.sendall(
            f"POST /ui/signin HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        try:
            for _ in range(size // 65536):
                conn.sendall(b"a=1&" * 16384)
            answer = conn.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            answer = b"reset"
    assert answer.startswith((b"HTTP/1.1 413", b"reset")), answer[:100]
    for pid, size_before in before.items():
        assert rss_kib(pid) - size_before < 50 * 1024, f"web worker {pid} grew"


def test_a_huge_opt_out_cursor_is_a_400(stack: Stack) -> None:
    answer = requests.get(
        f"{stack.base_url}/api/opt-outs", params={"cursor": "9" * 100}, headers=AUTH, timeout=30
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_cursor"
