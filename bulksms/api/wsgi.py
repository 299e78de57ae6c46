"""The WSGI application, for servers started from anywhere (`gunicorn bulksms.api.wsgi:app`)."""

from bulksms.api.app import create_app

app = create_app()
