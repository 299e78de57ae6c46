"""What the Redis server promises about keeping bulksms's data: it must never evict it.

Job keys carry TTLs (for retention), so under a `volatile-*` or `allkeys-*` policy a full Redis
would silently drop jobs and batches; a dropped batch record means a resend. Only `noeviction`
(writes refused when full, which bulksms answers with 503 and retries) keeps exactly-once.
"""

from __future__ import annotations

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


def unsafe_policy_message(policy: str) -> str:
    return (
        f"Redis's maxmemory-policy is {policy!r}: when memory runs out it would evict jobs and "
        f"batches, and a batch record lost means its recipients texted again. Set it to "
        f"{SAFE_POLICY!r} (maxmemory-policy {SAFE_POLICY} in redis.conf, or CONFIG SET "
        f"maxmemory-policy {SAFE_POLICY}); give Redis the memory it needs instead."
    )
