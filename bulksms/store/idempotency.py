"""Idempotency-Key records: ``pending|<digest>|<token>`` while the first request works (its
token tells it from a later request that took the key after its hold expired), then
``done|<digest>|<answer JSON>`` (`bulksms.api.idempotency` says what they mean)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import redis
from redis.client import Pipeline

from bulksms.store import keys


class Held(NamedTuple):
    done: bool
    digest: str
    answer: dict[str, Any] | None


# Deletes the key only if it is still the caller's hold.
_FREE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def pending(digest: str, token: str) -> str:
    """A request's hold on the key, as stored."""
    return f"pending|{digest}|{token}"


def guard(scope: str, digest: str) -> tuple[str, str]:
    """The key, and how what it holds starts while a request for this body has it (a job's
    answer is written over that only: `JobStore.create`)."""
    return keys.idempotency(scope), pending(digest, "")


def take(client: redis.Redis, scope: str, digest: str, token: str, seconds: int) -> bool:
    """Take the key for a first request, briefly; False when it is held already."""
    hold = pending(digest, token)
    return bool(client.set(keys.idempotency(scope), hold, nx=True, ex=seconds))


def held(client: redis.Redis, scope: str) -> Held | None:
    found = client.get(keys.idempotency(scope))
    if found is None:
        return None
    state, digest, answer = (str(found).split("|", 2) + [""])[:3]
    done = state == "done"
    return Held(done, digest, json.loads(answer) if done else None)


def remember(
    client: redis.Redis | Pipeline, scope: str, digest: str, answer: dict[str, Any], seconds: int
) -> None:
    client.set(keys.idempotency(scope), f"done|{digest}|{json.dumps(answer)}", ex=seconds)


def free(client: redis.Redis, scope: str, hold: str) -> None:
    """Give the key back, if `hold` (the caller's) is still what it holds: after the hold
    expired, another request may have taken it, or answered it."""
    client.eval(_FREE, 1, keys.idempotency(scope), hold)
