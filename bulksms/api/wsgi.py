"""The WSGI application for servers started from anywhere (`gunicorn bulksms.api.wsgi:app`)."""

from bulksms.api.app import create_app
from bulksms.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:  # one line that says what to set, not a traceback
    raise SystemExit(f"bulksms web: {exc}") from None
