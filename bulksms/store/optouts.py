"""The opt-out set in Redis: who must not be sent to (`bulksms.api.optouts` says how numbers
get in and out)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import redis

from bulksms.store import keys, scripts

CHUNK = 10_000
_MESSAGE_UUID = re.compile(r"[A-Za-z0-9-]{1,64}")
REPLY_RESULTS = {1: "applied", 0: "repeat", -1: "older"}
# The replies from one number recorded at one time (replies without a MessageTime share one):
# a retry comes within Plivo's retry window, long before a hundred more replies from the person.
REPLIES_KEPT = 100


def opt_out(client: redis.Redis, number: str) -> None:
    client.sadd(keys.OPT_OUTS, number.lstrip("+"))


def suppressed(client: redis.Redis, candidates: Sequence[str]) -> set[str]:
    """Which of these E.164 numbers opted out, asked the cheaper way round: the opt-out set
    read whole when it is the smaller (usually: a thousand opt-outs against a million
    recipients), else each candidate looked up in it (at once, for a chunk or fewer: an
    alert's one number costs one round trip)."""
    if not candidates:
        return set()
    size = client.scard(keys.OPT_OUTS) if len(candidates) > CHUNK else len(candidates) + 1
    if not size:
        return set()
    if size <= len(candidates):
        wanted = set(candidates)
        found = (f"+{n}" for n in cast(set[str], client.smembers(keys.OPT_OUTS)))
        return {n for n in found if n in wanted}
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(candidates), CHUNK):
        chunk = [n.lstrip("+") for n in candidates[start : start + CHUNK]]
        pipe.smismember(keys.OPT_OUTS, chunk)
    flags = [flag for answer in pipe.execute() for flag in answer]
    return {n for n, flag in zip(candidates, flags, strict=True) if flag}


def apply_reply(
    client: redis.Redis, number: str, stop: bool, sent_at: float | None, message_uuid: str
) -> str:
    """A STOP (or START) reply from `number`: applied unless this very message (`message_uuid`)
    was applied already, or a reply sent after it (`sent_at`, Plivo's MessageTime) was. Plivo
    may post replies out of order, and retries them: the last one the person sent wins.
    Returns 'applied', 'repeat' or 'older'."""
    uuid = message_uuid if _MESSAGE_UUID.fullmatch(message_uuid) else ""
    done = client.register_script(scripts.OPT_OUT_REPLY)(
        keys=[keys.OPT_OUTS, keys.OPT_OUT_REPLIES],
        args=[
            number.lstrip("+"),
            int(stop),
            "" if sent_at is None else repr(sent_at),
            uuid,
            REPLIES_KEPT,
        ],
    )
    return REPLY_RESULTS[int(cast(int, done))]


def opt_in(client: redis.Redis, number: str) -> bool:
    """Take a number off the list; False when it was not on it."""
    return bool(client.srem(keys.OPT_OUTS, number.lstrip("+")))


def is_opted_out(client: redis.Redis, number: str) -> bool:
    return bool(client.sismember(keys.OPT_OUTS, number.lstrip("+")))


def page(client: redis.Redis, cursor: int) -> tuple[list[str], int]:
    """Some opted-out numbers (E.164) and the cursor for more (0: no more)."""
    after, found = client.sscan(keys.OPT_OUTS, cursor, count=1000)
    return sorted(f"+{n}" for n in cast(list[str], found)), int(after)


def opt_out_many(client: redis.Redis, numbers: Sequence[str]) -> None:
    client.sadd(keys.OPT_OUTS, *(n.lstrip("+") for n in numbers))
