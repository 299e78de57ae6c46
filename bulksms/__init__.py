"""bulksms: send one SMS text to very large recipient lists through Plivo."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulksms.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: `bulksms.worker.main` and the gunicorn
    # settings must configure prometheus-client's multiprocess mode before anything imports it.
    if name == "create_app":
        from bulksms.api.app import create_app

        return create_app
    raise AttributeError(name)
