"""gunicorn settings for `gunicorn wsgi:app` (read from the working directory)."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # requests wait on Redis, not the CPU: threads serve them cheaply
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60  # a million-recipient submit must fit
keepalive = 5
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
