"""The campaign page's sign-in sessions, in Redis: the browser holds only a random id.

A session records which API key signed in (its fingerprint, never the key) and the session's CSRF
token. Its Redis key is an HMAC of the id under SECRET_KEY, so a reader of Redis (a backup, a
replica) cannot present what it finds there as a cookie. A session lasts `ttl` seconds from its
last use, and never more than `LIFETIME_SECONDS` from its start; signing out deletes it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis

from bulksms.store import keys

LIFETIME_SECONDS = 24 * 3600  # however busy: a stolen id is not good forever


@dataclass(frozen=True)
class Session:
    session_id: str
    key_fingerprint: str  # which API key signed in (`fingerprint`)
    csrf: str


def fingerprint(api_key: str) -> str:
    """An API key's name in sessions and rate limits: never the key itself."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


class Sessions:
    def __init__(self, client: redis.Redis, secret: str, ttl: int) -> None:
        self.redis, self.secret, self.ttl = client, secret.encode(), ttl

    def _key(self, session_id: str) -> str:
        digest = hmac.new(self.secret, session_id.encode(), hashlib.sha256).hexdigest()
        return keys.session(digest)

    def open(self, key_fingerprint: str) -> Session:
        session = Session(secrets.token_urlsafe(32), key_fingerprint, secrets.token_urlsafe(32))
        key = self._key(session.session_id)
        pipe = self.redis.pipeline(transaction=True)  # (never a session without its expiry)
        pipe.hset(key, mapping={"key": key_fingerprint, "csrf": session.csrf, "at": time.time()})
        pipe.expire(key, self.ttl)
        pipe.execute()
        return session

    def find(self, session_id: str) -> Session | None:
        """The live session with this id (its time renewed), or None."""
        if not session_id or len(session_id) > 64:
            return None
        key = self._key(session_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, ["key", "csrf", "at"])
        pipe.expire(key, self.ttl)  # (a key that is gone stays gone)
        (found, token, started), _ = pipe.execute()
        if not found or not token:
            return None
        if time.time() - float(started or 0) > LIFETIME_SECONDS:
            self.redis.delete(key)
            return None
        return Session(session_id, found, token)

    def close(self, session_id: str) -> None:
        self.redis.delete(self._key(session_id))
