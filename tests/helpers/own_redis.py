"""A Redis server a test may stop and start (never the shared test server)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bulksms.devstack.up import free_port, start_redis


class OwnRedis:
    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = start_redis(self.port, self.folder)

    def stop(self) -> None:
        assert self.process
        self.process.terminate()  # a clean shutdown: the append-only file is flushed
        self.process.wait(15)
