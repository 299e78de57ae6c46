from bulksms.worker.main import celery_app  # noqa: F401  (celery -A worker worker|flower)
