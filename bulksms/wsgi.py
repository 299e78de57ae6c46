"""The WSGI application, for servers started from anywhere (`gunicorn bulksms.wsgi:app`)."""

from bulksms.app import create_app

app = create_app()
