"""The multiprocess directory of prometheus-client: set before prometheus_client is imported.

Standard library only, so that the gunicorn settings (`bulksms.api.gunicorn_conf`) and
`bulksms.worker.main` can call it first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_directory(role: str) -> str:
    """Give this process tree a multiprocess directory (a fresh one unless configured) and
    clear the values a previous run left in it. Run once, in the parent, before forking."""
    folder = os.environ.get(ENV)
    if not folder:
        folder = tempfile.mkdtemp(prefix=f"bulksms-metrics-{role}-")
        os.environ[ENV] = folder
        atexit.register(_remove, folder, os.getpid())
    prepare(Path(folder))
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported already (Celery's command line loads Flower's plugin, which imports it):
        # metrics made from now on must use the multiprocess value class.
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    return folder


def _remove(folder: str, owner: int) -> None:
    """The fresh directory goes with the process that made it (not with its forked children,
    which inherit this hook)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def prepare(folder: Path) -> None:
    """Create the directory, without the values a previous run left in it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
