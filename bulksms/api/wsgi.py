"""The WSGI application for servers started from anywhere (`gunicorn bulksms.api.wsgi:app`)."""

import sys

from bulksms.api.app import create_app
from bulksms.config import ConfigError

APP_LOAD_ERROR = 4  # gunicorn's exit code for "the app failed to load": it stops, not respawns

try:
    app = create_app()
except ConfigError as exc:  # one line that says what to set, not a traceback
    print(f"bulksms web: {exc}", file=sys.stderr)
    raise SystemExit(APP_LOAD_ERROR) from None
