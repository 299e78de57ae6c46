"""gunicorn's settings for the web app, wherever gunicorn starts.

gunicorn reads `gunicorn.conf.py` only from its working directory; the checkout's (and the
image's) holds one line that loads this module. Anywhere else, name it: `gunicorn -c
python:bulksms.api.gunicorn_conf bulksms.api.wsgi:app` (as `bulksms up` does). Command-line
options win over these.
"""

import gc
import os

from bulksms.multiproc import use_directory

use_directory("web")  # several workers, one set of metrics (prometheus-client multiprocess)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Processes for the CPU (gunicorn's own advice: two a core, plus one), threads to overlap the
# waits on Redis. Measured on 2 cores (bench/): delivery reports went from 0.53 to 0.67 of a
# bare endpoint's rate with 5 workers × 4 threads instead of 2 × 8.
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1) + 1)))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Each process holds at most twice its threads in connections (gunicorn's default: 1000), and
# keeps at most its threads' number idle (it closes the next one to finish: the client
# reconnects). Clients that connect at once (a pool, a load generator) landed mostly on the one
# process that was accepting first: 10 to 15 of 16 connections on one of five, which then had
# a core's work queued behind its four threads and one GIL while the others idled; alerts' p50
# went from 2 to 4-10 ms in such minutes (bench/RESULTS.md, 2026-12-04). Given with --threads,
# give this too (`bulksms up` does): gunicorn reads it from here, not from the threads given.
worker_connections = 2 * threads
timeout = 60  # a million-recipient submit must fit
# Behind nginx (docker-compose.yml) the idle connections are nginx's to its upstream, which it
# drops after 4 s (deploy/nginx/): before this, so it never sends a request on one being closed.
keepalive = 5
accesslog = "-"
# gunicorn 25+ opens a control socket by default, at one path per user ($HOME/.gunicorn) that
# every gunicorn of that user takes over in turn; nothing here uses it. (Older ones ignore this.)
control_socket_disable = True
# Whose X-Forwarded-* to trust: the proxy's address. The app reads the same variable (with
# PROXY_COUNT); docker-compose.yml sets both to nginx's fixed address.
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


def post_worker_init(worker: object) -> None:
    # What the process loaded (the app and its libraries, some 86,000 objects) is moved out of
    # the collector's way. The processes load alike and serve alike, so each reached a full
    # collection in the same moment as the others, and each took 170-260 ms of a busy host
    # while the requests of every process waited (bench/RESULTS.md, 2026-12-05). Frozen, a full
    # collection looks only at what the process made since: under a millisecond there.
    gc.collect()  # (first: garbage frozen would be kept for good)
    gc.freeze()
