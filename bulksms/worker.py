"""The Celery application, for workers started from anywhere (`celery -A bulksms.worker worker`)."""

from bulksms.multiproc import use_directory

use_directory("worker")  # before prometheus_client is imported: the pool's children share it

from bulksms.app import create_app  # noqa: E402

celery_app = create_app().extensions["celery"]
