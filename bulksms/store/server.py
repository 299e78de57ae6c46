"""What the Redis server promises about keeping bulksms's data: it must never evict it, and a
claim must be on disk (or on a replica) before its call leaves (`durability`).

Job keys carry TTLs (for retention), so under a `volatile-*` or `allkeys-*` policy a full Redis
would silently drop jobs and batches; a dropped batch record means a resend. Only `noeviction`
(writes refused when full, which bulksms answers with 503 and retries) keeps exactly-once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

SAFE_POLICY = "noeviction"


def eviction_policy(client: redis.Redis) -> str | None:
    """The server's `maxmemory-policy`, from INFO (which managed Redis services allow where
    they refuse CONFIG); None when Redis cannot be reached now."""
    try:
        info = client.info("memory")
    except redis.ConnectionError:
        return None
    return str(info.get("maxmemory_policy", SAFE_POLICY))


def cluster_enabled(client: redis.Redis) -> bool | None:
    """Whether the server runs in cluster mode (INFO's `cluster_enabled`); None when Redis
    cannot be reached now."""
    try:
        info = client.info("cluster")
    except redis.ConnectionError:
        return None
    return bool(info.get("cluster_enabled"))


# Each job's keys share a hash tag, but some scripts and a call's record span jobs (`keys`), and
# the store sends them on one connection: a cluster would refuse them (CROSSSLOT, MOVED) once
# jobs were taken, so it is refused at start-up instead.
CLUSTER_MESSAGE = (
    "Redis runs in cluster mode (cluster_enabled:1), which bulksms does not support: some of "
    "its scripts and transactions use keys of several jobs at once, which a cluster refuses. "
    "Point REDIS_URL at a single Redis primary."
)


def unsafe_policy_message(policy: str) -> str:
    return (
        f"Redis's maxmemory-policy is {policy!r}: when memory runs out it would evict jobs and "
        f"batches, and a batch record lost means its recipients texted again. Set it to "
        f"{SAFE_POLICY!r} (maxmemory-policy {SAFE_POLICY} in redis.conf, or CONFIG SET "
        f"maxmemory-policy {SAFE_POLICY}); give Redis the memory it needs instead."
    )


@dataclass(frozen=True)
class Durability:
    """How a claim is made durable before its call leaves (a host crash must not forget that
    a call was made, or the batch is sent again):

    - ``waitaof``: `WAITAOF 1 0` after the claim, on the claim's connection (Redis 7.2+,
      Valkey): the local append-only file has it on disk;
    - ``always``: the server fsyncs every write before answering (`appendfsync always`; the
      embedded default, whose Redis 6.2 has no WAITAOF): nothing to wait for;
    - ``wait``: no append-only file to trust, but replicas: `WAIT 1` (a replica holds it);
    - ``none``: nothing can make it so (a lost second of writes may resend calls): warned."""

    how: str

    @property
    def command(self) -> tuple[str, ...] | None:
        """What to send after a claim, on its connection; None: nothing to wait for."""
        if self.how == "waitaof":
            return ("WAITAOF", "1", "0", str(ACK_TIMEOUT_MS))
        if self.how == "wait":
            return ("WAIT", "1", str(ACK_TIMEOUT_MS))
        return None

    @property
    def assured(self) -> bool:
        return self.how != "none"

    def acknowledged(self, reply: Any) -> bool:
        """Whether the command's reply says the claim is durable."""
        if self.how == "waitaof":
            return int(reply[0]) >= 1
        return int(reply) >= 1


ACK_TIMEOUT_MS = 2000  # beyond this the call is not made (the batch is tried again later)


def answers_from_disk(client: redis.Redis) -> bool:
    """Whether the server fsyncs every write before it answers (`appendfsync always` with an
    append-only file): only then does waiting for its answer make a write durable. True unless
    the server says otherwise (a managed service that refuses CONFIG, a proxy without these
    fields): the safe guess."""
    aof = client.info("persistence").get("aof_enabled")
    if aof is None:
        return True
    if int(aof) != 1:
        return False
    try:
        fsync = str(client.config_get("appendfsync").get("appendfsync", "")).lower()
    except redis.ResponseError:
        return True
    return fsync not in ("everysec", "no")


def durability(client: redis.Redis) -> Durability:
    """What this server offers (read at start-up: replicas and settings seldom change)."""
    info = client.info()
    version = tuple(int(part) for part in str(info.get("redis_version", "0.0")).split(".")[:2])
    aof = int(info.get("aof_enabled", 0)) == 1
    replicas = int(info.get("connected_slaves", 0))
    if aof and version >= (7, 2):
        return Durability("waitaof")
    try:
        fsync = str(client.config_get("appendfsync").get("appendfsync", ""))
    except redis.ResponseError:  # a managed service that refuses CONFIG
        fsync = ""
    if aof and fsync == "always":
        return Durability("always")
    if replicas:
        return Durability("wait")
    return Durability("none")
