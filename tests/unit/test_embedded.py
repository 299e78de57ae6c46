"""`bulksms up`'s choices, made without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

from bulksms.devstack import up
from bulksms.devstack.up import local_redis_url


def test_a_folder_too_deep_for_a_unix_socket_gets_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert local_redis_url(6399, deep) == "redis://127.0.0.1:6399/0"


def test_a_free_port_is_bindable_and_outside_the_range_outgoing_connections_are_given() -> None:
    """A port from the kernel's outgoing range could be given to a client's connection before
    the server that was to bind it does (Flower's bind failed so under load)."""
    low = up._first_outgoing_port()
    ports = {up.free_port() for _ in range(50)}
    assert all(up.FREE_PORTS_FROM <= port < low for port in ports), sorted(ports)
    assert len(ports) == 50  # (none given twice: a stack asks for several before it binds)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
