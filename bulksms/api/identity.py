"""Who asks: the API key a request presents, or the campaign page's session its cookie names.
(Read by authentication and by the rate limits, which count per key.)"""

from __future__ import annotations

import ipaddress

from flask import g, request

from bulksms.extensions import sessions, settings
from bulksms.store.sessions import Session, fingerprint

SESSION_COOKIE = "bulksms_session"


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    return key


def current_session() -> Session | None:
    """The page's session this request's cookie names, if it is live and its key still valid."""
    if "ui_session" not in g:
        found = None
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            found = sessions().find(session_id)
            current = {fingerprint(k) for k in settings().api_keys}
            if found is not None and found.key_fingerprint not in current:
                found = None  # its key was taken out of API_KEYS
        g.ui_session = found
    session: Session | None = g.ui_session
    return session


def client_address() -> str:
    """Who asks, for per-address limits: the client's IPv4 address, or its IPv6 /64 (one
    subscriber's share: counted address by address, a /64 would hold endless budgets)."""
    raw = request.remote_addr or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return f"ip:{raw}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
        address = address.ipv4_mapped
    return f"ip:{address}"
