"""The sandbox posting its reports over HTTP as Plivo does: on connections kept alive, and not
refused when the receiver closed one while it was idle (gunicorn does after its keep-alive)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from bulksms.devstack.sandbox import Sandbox, _Report


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    forms: list[dict[str, list[str]]]
    signed: list[bool]
    connections: int
    close_after_answer: bool


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        pass

    def do_POST(self) -> None:  # noqa: N802 (stdlib's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.forms.append(parse_qs(body.decode()))
        self.server.signed.append("X-Plivo-Signature-V3" in self.headers)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        # Kept alive as far as the answer says, then closed as an idle connection is.
        self.close_connection = self.server.close_after_answer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.forms, server.signed, server.connections, server.close_after_answer = [], [], 0, False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def post_three(receiver: Receiver) -> list[bool]:
    box = Sandbox("MA" + "A" * 18, "token", seed=1, report_threads=0)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/report?job=j&batch=0"
    connections: dict[str, http.client.HTTPConnection] = {}
    try:
        return [
            box._post(connections, _Report(0.0, n, url, {"MessageUUID": f"m{n}", "Status": "sent"}))
            for n in range(3)
        ]
    finally:
        for connection in connections.values():
            connection.close()


def test_reports_go_on_one_kept_alive_connection_signed(receiver: Receiver) -> None:
    assert post_three(receiver) == [True, True, True]
    assert receiver.connections == 1
    assert [f["MessageUUID"] for f in receiver.forms] == [["m0"], ["m1"], ["m2"]]
    assert receiver.signed == [True, True, True]


def test_a_connection_the_receiver_closed_while_idle_is_not_a_refused_report(
    receiver: Receiver,
) -> None:
    """Each report finds the last one's connection closed: it goes once more on a new one,
    and is neither refused nor posted twice."""
    receiver.close_after_answer = True
    assert post_three(receiver) == [True, True, True]
    assert receiver.connections == 3
    assert [f["MessageUUID"] for f in receiver.forms] == [["m0"], ["m1"], ["m2"]]
