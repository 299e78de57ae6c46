"""A lean HTTP/1.1 load generator: prepared requests, kept-alive connections, one thread.

Used for the reports and small-submit stages: the same requests go to the service and to its
floor, so what this client costs weighs on both sides of the ratio alike.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Result:
    answered: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # of the answers within the time
    bodies: list[bytes] = field(default_factory=list)  # every answer's body, if kept

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def quantile(self, q: int) -> float:
        """The q-th percentile latency, in seconds."""
        return statistics.quantiles(self.latencies, n=100)[q - 1] if self.latencies else 0.0


class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.since = 0.0  # when its request in flight was due
        self.closing = False  # its last answer said `Connection: close`

    def answer(self) -> tuple[int, bytes] | None:
        """The status and body of a complete answer in the buffer (consumed), or None."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                self.closing = True
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return None
        body = self.buffer[head_end + 4 : end]
        self.buffer = self.buffer[end:]
        return int(head.split(" ", 2)[1]), body


def run(
    port: int,
    requests: Sequence[bytes],
    connections: int,
    seconds: float,
    rate: float | None = None,
    keep_bodies: bool = False,
) -> Result:
    """Send `requests` in order over `connections`, one in flight on each, for `seconds` (or
    until they run out): as fast as answers come, or (`rate`) one every 1/`rate` s. The rate
    counts the answers within that time; every request sent is answered before this returns,
    so `statuses` covers all of them. A latency runs from when its request was due (paced: its
    slot in the schedule, so a request held back by busy connections counts its wait)."""
    selector = selectors.DefaultSelector()
    conns = [_Conn(port) for _ in range(connections)]
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    # The longest idle first: each connection takes its turn, as a load generator's own
    # connections do (wrk's, k6's). Taking the last one back left most of them idle at a paced
    # rate until gunicorn closed them (its keep-alive is 5 s), and one reused as it was being
    # closed failed: an error of the generator's, counted against the side it happened on.
    idle = deque(conns)
    result = Result()
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds

    def due(now: float) -> float:
        return started + sent / rate if rate else now

    def replace(conn: _Conn) -> None:
        """A fresh connection, idle, in the place of one the server closed (or said it would)."""
        selector.unregister(conn.sock)
        conn.sock.close()
        fresh = _Conn(port)
        selector.register(fresh.sock, selectors.EVENT_READ, fresh)
        conns[conns.index(conn)] = fresh
        if conn in idle:  # (keeping its turn)
            idle[idle.index(conn)] = fresh
        else:
            idle.append(fresh)

    while True:
        now = time.perf_counter()
        while idle and sent < len(requests) and now < deadline and due(now) <= now:
            conn = idle.popleft()
            conn.since = due(now)
            conn.sock.sendall(requests[sent])
            sent += 1
        if len(idle) == len(conns) and (sent >= len(requests) or now >= deadline):
            break
        wait = 30.0 if not rate or not idle else max(0.0, due(now) - now)
        for key, _ in selector.select(timeout=wait):
            conn = key.data
            try:
                chunk = conn.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:  # closed by the server: its request in flight, if any, failed
                if conn not in idle:
                    result.statuses[0] += 1
                replace(conn)
                continue
            conn.buffer += chunk
            if (answer := conn.answer()) is not None:
                now = time.perf_counter()
                status, body = answer
                result.statuses[status] += 1
                if keep_bodies:
                    result.bodies.append(body)
                if now < deadline:
                    result.answered += 1
                    result.seconds = now - started
                    result.latencies.append(now - conn.since)
                if conn.closing:  # (gunicorn closes one past its idle ones: `worker_connections`)
                    replace(conn)
                else:
                    idle.append(conn)
    for conn in conns:
        conn.sock.close()
    return result
