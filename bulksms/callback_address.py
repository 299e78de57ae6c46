"""Where a completion callback may go: only to globally routable addresses, unless the operator
says otherwise (`CALLBACK_ALLOW_PRIVATE`). Anyone with an API key chooses a job's `callback_url`;
without this, the worker would POST wherever they point it: loopback, the private network, a
cloud's metadata service (169.254.169.254).

The host is resolved, every address it resolves to is checked (an IPv4-mapped IPv6 address as
the IPv4 address it carries; numeric forms such as ``0x7f000001`` as the resolver reads them),
and the caller connects to the very address that was checked, so a second DNS answer cannot
send it elsewhere (DNS rebinding). Checked at submit and again at delivery.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from urllib.parse import urlsplit

RESOLVE_SECONDS = 2.0  # a resolver that does not answer must not hold a request for long


class NotAllowed(ValueError):
    """The callback may not go there; the message says why."""


class Unresolved(NotAllowed):
    """The host did not resolve (now): nowhere to check, nowhere to go."""


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def allowed_addresses(url: str, allow_private: bool) -> list[str]:
    """The addresses to connect to for `url`, in the resolver's order, once every one of them
    is public (or `allow_private`). Raises `NotAllowed`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise NotAllowed("callback_url must be an http(s) URL") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise NotAllowed("callback_url must be an http(s) URL")
    try:
        port = parts.port or default_port(parts.scheme)
    except ValueError:
        raise NotAllowed("callback_url has an invalid port") from None
    found = _resolve(host, port)
    if not allow_private:
        for address in found:
            if not _is_public(address):
                raise NotAllowed(
                    f"callback_url's host {host} is {address}, which is not a public address"
                )
    return found


# IPv6 prefixes that carry an IPv4 address a gateway translates to (NAT64, IPv4-translated):
# whatever IPv4 address they hold, refused (Python's is_global calls them global).
TRANSLATED = tuple(
    ipaddress.ip_network(n)
    for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96", "fec0::/10")
)  # (and IPv4-compatible ::a.b.c.d, and the old site-local range)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # (an IPv6 zone says nothing more)
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in TRANSLATED):
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:  # a tunnel to an IPv4 address: that address decides
            ip = embedded
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, waiting `RESOLVE_SECONDS` at most."""
    answer: list[list[str]] = []
    failure: list[str] = []

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except (OSError, UnicodeError) as exc:
            failure.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=look_up, name="callback-resolve", daemon=True)
    thread.start()
    thread.join(RESOLVE_SECONDS)
    if not answer or not answer[0]:
        why = failure[0] if failure else f"no answer within {RESOLVE_SECONDS:g} s"
        raise Unresolved(f"callback_url's host {host} could not be resolved ({why})")
    return answer[0]
