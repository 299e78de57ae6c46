"""gunicorn settings for `gunicorn wsgi:app` (read from the working directory)."""

import os

from bulksms.multiproc import use_directory

use_directory("web")  # several workers, one set of metrics (prometheus-client multiprocess)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # requests wait on Redis, not the CPU: threads serve them cheaply
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60  # a million-recipient submit must fit
keepalive = 5
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# gunicorn's own lines (start-up, access log) as JSON, like the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"level": "INFO", "handlers": []},  # the app adds its own (bulksms.logs)
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}


def child_exit(server: object, worker: object) -> None:
    from bulksms import metrics  # imported here: after the multiprocess directory is set

    metrics.process_exited(worker.pid)  # type: ignore[attr-defined]
