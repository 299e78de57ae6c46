"""A lean HTTP/1.1 load generator: prepared requests, kept-alive connections, one thread.

Used for the reports stage: the same requests go to the service and to its floor, so what
this client costs weighs on both sides of the ratio alike.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Result:
    answered: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""

    def answer(self) -> int | None:
        """The status of a complete answer in the buffer (consumed), or None."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return None
        self.buffer = self.buffer[end:]
        return int(head.split(" ", 2)[1])


def run(port: int, requests: Sequence[bytes], connections: int, seconds: float) -> Result:
    """Send `requests` in order over `connections`, one in flight on each, for `seconds` (or
    until they run out). The rate counts the answers within that time; every request sent is
    answered before this returns, so `statuses` covers all of them."""
    selector = selectors.DefaultSelector()
    conns = [_Conn(port) for _ in range(connections)]
    result = Result()
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds
    for conn in conns:
        if sent < len(requests):
            conn.sock.sendall(requests[sent])
            sent += 1
            selector.register(conn.sock, selectors.EVENT_READ, conn)
    while selector.get_map():
        for key, _ in selector.select(timeout=30):
            conn = key.data
            chunk = conn.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed a kept-alive connection")
            conn.buffer += chunk
            while (status := conn.answer()) is not None:
                now = time.perf_counter()
                result.statuses[status] += 1
                if now < deadline:
                    result.answered += 1
                    result.seconds = now - started
                if sent < len(requests) and now < deadline:
                    conn.sock.sendall(requests[sent])
                    sent += 1
                else:
                    selector.unregister(conn.sock)
                    break
    for conn in conns:
        conn.sock.close()
    return result
