"""The benchmarks' load generator (bench/load.py) against a tiny local HTTP server."""

from __future__ import annotations

import socketserver
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from bench import load


class _Handler(socketserver.StreamRequestHandler):
    """Answers each request of a kept-alive connection 204, counting them by connection."""

    server: _Server

    def handle(self) -> None:
        while True:
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line:
                return
            self.rfile.read(length)
            with self.server.lock:
                self.server.served[self.client_address] += 1
            if self.server.closing:  # (as gunicorn does past its idle connections)
                self.wfile.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                return
            self.wfile.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    served: Counter[tuple[str, int]]
    lock: threading.Lock
    closing = False  # each answer says `Connection: close`, and the connection is closed


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server(("127.0.0.1", 0), _Handler) as running:
        running.served, running.lock = Counter(), threading.Lock()
        thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        yield running
        running.shutdown()
        thread.join(10)


def test_a_paced_run_takes_every_connection_in_turn(server: _Server) -> None:
    """At a pace one connection could carry alone, every connection still takes its turn (as a
    load generator's connections do): none stays idle long enough for a server's keep-alive to
    close it under the generator. (Taking the last one back used one of eight for nearly all.)"""
    port = server.server_address[1]
    request = b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
    result = load.run(port, [request] * 80, 8, 30.0, rate=200.0)
    assert result.statuses == {204: 80}
    # (In strict turn, 10 each; an answer late past the next one's slot lets that one go on.)
    assert len(server.served) == 8 and min(server.served.values()) >= 5, server.served


def test_an_answer_that_closes_its_connection_is_no_error(server: _Server) -> None:
    """A server may close a kept-alive connection with an answer that says so (gunicorn does,
    past twice its threads' connections a process): the next request goes on a new connection,
    not on the closing one, where it would fail and count as the server's error."""
    server.closing = True
    port = server.server_address[1]
    request = b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
    result = load.run(port, [request] * 200, 4, 30.0)
    assert result.statuses == {204: 200}
    assert len(server.served) == 200  # (each on a connection of its own)
