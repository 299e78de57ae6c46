"""nginx in front of gunicorn, with the deployment's own configuration
(deploy/nginx/bulksms.conf.template, as docker-compose.yml runs it): slow clients cost gunicorn
nothing, and what the app reads from the proxy (Host, X-Forwarded-*, X-Request-ID) arrives.

nginx comes from the machine's packages (Debian's `nginx`; .ci/run installs it); where there is
none the tests skip, saying so."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from bulksms.devstack.nginx import Nginx, find_nginx, running_nginx
from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, wait_until

NGINX = find_nginx()
pytestmark = pytest.mark.skipif(
    NGINX is None,
    reason="no nginx: install Debian's package (apt-get install nginx; .ci/run does) or set "
    "BULKSMS_NGINX to an nginx binary",
)

SLOW_CLIENTS = 40  # issue 19: what stalled every /healthz when gunicorn faced them directly
GAP = 2.0  # seconds between two bytes of one slow connection
WINDOW = 20.0  # seconds the slow clients are held while /healthz is polled
BOUND = 1.0  # seconds: the requirement for every /healthz answer
WEBHOOK = "/api/webhooks/plivo/delivery-report"


@pytest.fixture
def stack_overrides() -> dict[str, Any]:
    return {"proxy_count": 1}  # as docker-compose.yml runs it behind nginx


@pytest.fixture
def proxy(stack: Stack, tmp_path: Path) -> Iterator[Nginx]:
    assert NGINX is not None
    upstream = urlsplit(stack.base_url).netloc
    with running_nginx(NGINX, upstream, tmp_path / "nginx") as result:
        yield result


class SlowClients(threading.Thread):
    """`count` connections sending one byte every `gap` seconds and never finishing: half a
    request header to /healthz, half a body to the delivery-report webhook (whose length header
    promises far more than is ever sent). Their bytes are spread evenly over each gap. When
    nginx closes one (its header timeout), it is opened again at once, as an attacker would."""

    HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096
    BODY_HEAD = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\n"
    ).encode()

    def __init__(self, address: tuple[str, int], count: int, gap: float) -> None:
        super().__init__(daemon=True)
        self.address, self.count, self.gap = address, count, gap
        self.stop = threading.Event()
        self.all_open = threading.Event()
        self.sockets: list[socket.socket | None] = [None] * count
        self.sent = [0] * count  # bytes of the slow part sent on the current connection
        self.bytes = 0
        self.reopened = {"header": 0, "body": 0}

    def kind(self, i: int) -> str:
        return "header" if i % 2 == 0 else "body"

    def _open(self, i: int) -> None:
        conn = socket.create_connection(self.address, timeout=30)
        if self.kind(i) == "body":
            conn.sendall(self.BODY_HEAD)  # the headers whole: the body is the slow part
        self.sockets[i], self.sent[i] = conn, 0

    def _closed_by_server(self, conn: socket.socket) -> bool:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        with contextlib.suppress(OSError):
            conn.recv(65536)  # an answer (408, 400) or the end: either way this one is done
        return True

    def _tick(self, i: int) -> None:
        conn = self.sockets[i]
        kind = self.kind(i)
        if conn is not None and not self._closed_by_server(conn):
            try:
                slow = self.HEADER if kind == "header" else b"a" * 4096
                conn.sendall(slow[self.sent[i] : self.sent[i] + 1])
                self.sent[i] += 1
                self.bytes += 1
                return
            except OSError:
                pass
        if conn is not None:
            conn.close()
            self.reopened[kind] += 1
        self._open(i)

    def run(self) -> None:
        for i in range(self.count):
            self._open(i)
        self.all_open.set()
        while not self.stop.is_set():
            for i in range(self.count):
                if self.stop.wait(self.gap / self.count):
                    break
                self._tick(i)

    def close(self) -> None:
        self.stop.set()
        self.join(30)
        for conn in self.sockets:
            if conn is not None:
                conn.close()

    def summary(self) -> str:
        return f"{self.bytes} slow bytes sent; reopened after nginx closed them: {self.reopened}"


def test_slow_clients_through_nginx_leave_healthz_answering_within_a_second(
    proxy: Nginx,
) -> None:
    """40 slow connections (issue 19, item 1) held for 20 s through nginx: every /healthz
    answered 200 within 1 s throughout. nginx holds them on its event loop; gunicorn's threads
    only ever see complete requests."""
    url = f"{proxy.base_url}/healthz"
    address = urlsplit(proxy.base_url)
    clients = SlowClients((str(address.hostname), int(address.port or 80)), SLOW_CLIENTS, GAP)
    clients.start()
    try:
        assert clients.all_open.wait(60), "the slow connections could not be opened"
        answers: list[tuple[float, float, int | str]] = []  # (at, seconds, status or error)
        start = time.monotonic()
        while (at := time.monotonic() - start) < WINDOW:
            began = time.monotonic()
            try:
                # A new connection each time (no session), as a load balancer's probe makes.
                status: int | str = requests.get(url, timeout=30).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            answers.append((at, time.monotonic() - began, status))
            time.sleep(0.1)
        assert clients.is_alive(), "the slow clients stopped early"
    finally:
        clients.close()

    report = (
        f"{len(answers)} /healthz in {WINDOW:.0f} s; slowest "
        f"{max(s for _, s, _ in answers):.3f} s; {clients.summary()}\n"
        + "\n".join(
            f"  at {at:5.1f} s: {status} in {s:.3f} s"
            for at, s, status in answers
            if s >= BOUND or status != 200
        )
    )
    assert answers and answers[-1][0] > WINDOW - 5, report  # polled the whole window
    assert all(status == 200 for _, _, status in answers), report
    assert all(seconds < BOUND for _, seconds, _ in answers), report
    # The load was really there: on average each connection sent a byte at least every 4 s.
    assert clients.bytes >= SLOW_CLIENTS * (WINDOW / GAP) / 2, report
    print(report)


def test_the_proxy_passes_what_the_app_reads(stack: Stack, proxy: Nginx) -> None:
    """Host with its port (the campaign page compares a form's Origin with it), the caller's
    X-Request-ID (or nginx's own, logged by both), bodies bigger than nginx keeps in memory
    (streamed to the app) but not to the webhooks past their 64 KiB, and no phone number in
    nginx's log line."""
    given = requests.get(
        f"{proxy.base_url}/healthz", headers={"X-Request-ID": "proxy-test-1"}, timeout=30
    )
    assert given.headers["X-Request-ID"] == "proxy-test-1"
    made = requests.get(f"{proxy.base_url}/healthz", timeout=30).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # nginx's $request_id, passed on to the app

    # Signing in to the campaign page through nginx: the form's Origin is the proxy's address,
    # port included; another origin is still refused.
    browser = requests.Session()
    page = browser.get(f"{proxy.base_url}/ui/signin", timeout=30)
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:500]
    form = {"signin_token": token.group(1), "api_key": API_KEY}
    foreign = browser.post(
        f"{proxy.base_url}/ui/signin",
        data=form,
        headers={"Origin": "http://elsewhere.example"},
        allow_redirects=False,
        timeout=30,
    )
    assert foreign.status_code == 403
    signed_in = browser.post(
        f"{proxy.base_url}/ui/signin",
        data=form,
        headers={"Origin": proxy.base_url},
        allow_redirects=False,
        timeout=30,
    )
    assert signed_in.status_code in (302, 303), signed_in.text[:500]

    big = requests.post(
        f"{proxy.base_url}/api/bulk-sms/preview",
        json={"recipients": us_numbers(8000), "message": "through the proxy"},
        headers={"X-API-Key": API_KEY},
        timeout=60,
    )
    assert big.status_code == 200, big.text[:500]
    assert int(big.request.headers["Content-Length"]) >= 100_000  # (streamed: see below)
    refused = requests.post(
        f"{proxy.base_url}{WEBHOOK}",
        data=b"a" * (64 * 1024 + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert refused.status_code == 413 and "X-Request-ID" not in refused.headers  # by nginx
    # nginx's own refusal in the app's error shape, not nginx's HTML page.
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.json()["error"] == "payload_too_large" and refused.json()["message"]

    number = "+14155550123"
    added = requests.put(
        f"{proxy.base_url}/api/opt-outs/{number}", headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert added.status_code < 300, added.text
    lines = wait_until(
        lambda: [
            line for line in proxy.access_log.read_text().splitlines() if "/api/opt-outs/" in line
        ],
        what="nginx's access line for the opt-out",
    )
    assert "4155550123" not in proxy.access_log.read_text(), lines
    # A decoded newline before the number, in a request nginx buffers and in one it streams.
    for body in (b"", b"x" * 100_000):
        requests.delete(
            f"{proxy.base_url}/api/opt-outs/%0A%0A+14155550124",
            data=body,
            headers={"X-API-Key": API_KEY, "X-Request-ID": "newline"},
            timeout=30,
        )
    wait_until(
        lambda: proxy.access_log.read_text().count('"request_id":"newline"') == 2,
        what="nginx's access lines for the opt-outs with a newline",
    )
    log = proxy.access_log.read_text()
    assert "4155550124" not in log and "_bulksms_streamed" not in log, log
    # Any other path: from its first number on, however many it holds and however written.
    job = "123456" + "ab" * 13  # (a job's id: 32 hex digits, kept)
    for path in (
        "/api/bulk-sms/447911123803/447911123804",
        "/api/x/(415) 555-0199/y",
        "/api/x/+44+7911+123456",
        "/api/x/415_555_0123",
        "/api/x/tel14155550125",  # (against letters: helper-57's review)
        "/api/y/tel14155550126abcdefabcdefabcdefabc",  # (not an id: helper-58's)
        "/api/z/" + "".join(f"%25{ord(d):x}" for d in "14155550127"),  # (encoded twice)
        "/api/w/" + "".join(chr(0xFF10 + int(d)) for d in "4155550128"),  # (fullwidth)
        f"/api/bulk-sms/{job}/cancel",
    ):
        requests.get(f"{proxy.base_url}{path}", headers={"X-Request-ID": "masked"}, timeout=30)
    masked = wait_until(
        lambda: [line for line in proxy.access_log.read_text().splitlines() if "masked" in line][
            8:
        ],
        what="nginx's access lines for the paths with numbers",
    )
    log = proxy.access_log.read_text()
    assert not re.search(r"7911123|5550199|555-0199|123456\"|555_0123|555012[56]", log), log
    assert '"path":"/api/bulk-sms/****"' in log and '"path":"/api/x/****"' in log, masked
    assert '"path":"/api/x/tel****"' in log and '"path":"/api/y/tel****"' in log, masked
    assert '"path":"/api/z/****"' in log and '"path":"/api/w/****"' in log, masked
    assert f'"path":"/api/bulk-sms/{job}/cancel"' in log, masked
    assert made in proxy.access_log.read_text()


@pytest.mark.parametrize("key", [None, "a-wrong-key-of-more-than-32-characters"])
def test_a_big_body_without_a_valid_key_is_refused_before_it_is_all_sent(
    stack: Stack, proxy: Nginx, key: str | None
) -> None:
    """A body too big for nginx's memory is streamed to the app, which refuses a request
    without a valid key from its headers: no one without a key can make nginx spool 128 MiB
    to disk (nor hold it while a client sends it slowly). Buffered, nginx would wait for the
    whole body before asking the app, and nothing would answer here."""
    host, port = urlsplit(proxy.base_url).netloc.split(":")
    head = (
        "POST /api/bulk-sms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + (f"X-API-Key: {key}\r\n" if key else "")
        + "Content-Length: 100000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=60) as raw:
        raw.sendall(head.encode() + b"[" * (1024 * 1024))  # 1 MiB of the promised 100 MB
        answer = raw.recv(200)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert not any((proxy.folder / "client_body").iterdir())  # nothing spooled
    # Logged with the path the client asked for.
    wait_until(
        lambda: '"path":"/api/bulk-sms","status":401' in proxy.access_log.read_text(),
        what="nginx's access line for the refused body",
    )
