"""`bulksms up`'s choices, made without starting anything."""

from __future__ import annotations

from pathlib import Path

from bulksms.devstack.up import local_redis_url


def test_a_folder_too_deep_for_a_unix_socket_gets_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert local_redis_url(6399, deep) == "redis://127.0.0.1:6399/0"
