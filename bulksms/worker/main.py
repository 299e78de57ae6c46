"""The Celery app for workers started from anywhere (`celery -A bulksms.worker.main worker`)."""

from bulksms.multiproc import use_directory

use_directory("worker")  # before prometheus_client is imported: the pool's children share it

from bulksms.api.app import create_app  # noqa: E402

celery_app = create_app().extensions["celery"]
