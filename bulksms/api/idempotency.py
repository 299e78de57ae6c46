"""`Idempotency-Key` on every POST that makes a job (submit, retry): the same key and body make
one job, however often they arrive.

The first request takes the key (SET NX, briefly: a crashed request must not hold it for a day),
and records its answer under it once the job is stored, before the sweep can see the job or any
task is enqueued, for `IDEMPOTENCY_TTL` seconds: a job that may be sent always has its answer. A
repeat with the same body gets that answer again (same job id, nothing sent again); a repeat
while the first is still working waits for it; the same key with another body is refused with
409. Keys are scoped to the API key that used them. A first request may outlive its hold and a
retry take the key: the first of them to store its job answers it, the other keeps nothing and
answers the same (`JobStore.create`'s guard), and each frees only its own hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from bulksms.api.errors import ApiError
from bulksms.store import idempotency as records

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
CLAIM_SECONDS = 120  # how long an unfinished first request holds the key
WAIT_SECONDS = 15  # how long a repeat waits for the first request to finish


@dataclass
class Slot:
    """The key taken by this request; `remember` stores the answer to replay."""

    client: redis.Redis
    scope: str
    digest: str
    ttl: int
    token: str = field(default_factory=lambda: os.urandom(8).hex())
    answered: bool = False

    @property
    def guard(self) -> tuple[str, str]:
        """Where the job's answer goes, and what it may be written over: a hold for this body
        (this request's, or a later one's after this one's expired: the first to commit wins),
        never an answer already there (`JobStore.create`)."""
        return records.guard(self.scope, self.digest)

    def answered_by_another(self) -> dict[str, Any]:
        """After `KeyAnswered`: the answer another request wrote under the key for this body,
        or the 409 to tell the client (the key is another body's, or still being worked on)."""
        found = records.held(self.client, self.scope)
        if found is not None and found.digest != self.digest:
            raise reused()
        if found is None or found.answer is None:
            raise in_progress()
        return found.answer

    def remember(
        self, answer: dict[str, Any], client: redis.Redis | Pipeline | None = None
    ) -> None:
        """Store the answer to replay, or add its write to `client` (the job's pipeline). From
        here on the key is not freed, even if the write then fails: it may have reached Redis
        with the job, and a freed key would let a retry make a second job (a key whose answer
        never arrived is taken again after `CLAIM_SECONDS`)."""
        records.remember(client or self.client, self.scope, self.digest, answer, self.ttl)
        self.answered = True

    def refused(self) -> None:
        """Redis refused the job's writes, the answer's with them (`JobStore.create` says so
        only when nothing of the job was kept): the key is free again."""
        self.answered = False


def reused() -> ApiError:
    return ApiError(
        409, "idempotency_key_reused", f"This {HEADER} was used with a different request body."
    )


def in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_in_progress",
        f"A request with this {HEADER} is still being processed.",
        headers={"Retry-After": "5"},
    )


def digest_of(body: Any) -> str:
    try:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:  # (a body nested just shallow enough to parse, one frame deeper here)
        raise ApiError(400, "malformed_json", "The body's JSON is nested too deeply.") from None
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@contextmanager
def once(
    client: redis.Redis, idempotency_key: str, api_key: str, body: Any, ttl: int
) -> Iterator[Slot | dict[str, Any]]:
    """Yield a `Slot` to make the job with, or the stored answer of the first request."""
    if not KEY_RE.fullmatch(idempotency_key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} must be 1-255 printable ASCII characters without spaces.",
        )
    scope = hashlib.sha256(f"{api_key}\0{idempotency_key}".encode()).hexdigest()
    slot = Slot(client, scope, digest_of(body), ttl)
    deadline = time.monotonic() + WAIT_SECONDS
    while not records.take(client, scope, slot.digest, slot.token, CLAIM_SECONDS):
        held = records.held(client, scope)
        if held is None:
            continue  # it expired just now: try to take it
        if held.digest != slot.digest:
            raise reused()
        if held.answer is not None:
            yield held.answer
            return
        if time.monotonic() > deadline:
            raise in_progress()
        time.sleep(0.1)
    try:
        yield slot
    finally:
        if not slot.answered:  # refused or failed: nothing was made, the key is free again
            records.free(client, scope, records.pending(slot.digest, slot.token))
