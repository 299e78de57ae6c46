"""The Celery app for workers started from anywhere (`celery -A bulksms.worker.main worker`)."""

import os
import time

from bulksms.multiproc import use_directory

# A fault hook (the chaos soak, tests/integration/test_chaos.py): this worker's clock is off by
# that many seconds, as a host's may be. Everything two hosts compare is on Redis's clock.
_skew = float(os.environ.get("BULKSMS_FAULT_CLOCK_SKEW_SECONDS") or 0)
if _skew:
    _host_time = time.time
    time.time = lambda: _host_time() + _skew

use_directory("worker")  # before prometheus_client is imported: the pool's children share it

from bulksms.config import ConfigError  # noqa: E402
from bulksms.worker.app import create_worker  # noqa: E402

try:
    celery_app = create_worker()
except ConfigError as exc:  # one line that says what to set, not a traceback
    raise SystemExit(f"bulksms worker: {exc}") from None
