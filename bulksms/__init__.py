"""bulksms: send one SMS text to very large recipient lists through Plivo."""

from bulksms.app import create_app

__all__ = ["create_app"]
