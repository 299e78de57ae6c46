"""The Celery app for workers started from anywhere (`celery -A bulksms.worker.main worker`)."""

from bulksms.multiproc import use_directory

use_directory("worker")  # before prometheus_client is imported: the pool's children share it

from bulksms.config import ConfigError  # noqa: E402
from bulksms.worker.app import create_worker  # noqa: E402

try:
    celery_app = create_worker()
except ConfigError as exc:  # one line that says what to set, not a traceback
    raise SystemExit(f"bulksms worker: {exc}") from None
