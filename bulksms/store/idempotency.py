"""Idempotency-Key records: ``pending|<digest>`` while the first request works, then
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


def take(client: redis.Redis, scope: str, digest: str, seconds: int) -> bool:
    """Take the key for a first request, briefly; False when it is held already."""
    return bool(client.set(keys.idempotency(scope), f"pending|{digest}", nx=True, ex=seconds))


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


def free(client: redis.Redis, scope: str) -> None:
    client.delete(keys.idempotency(scope))
