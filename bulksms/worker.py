"""The Celery application, for workers started from anywhere (`celery -A bulksms.worker worker`)."""

from bulksms.app import create_app

celery_app = create_app().extensions["celery"]
