"""Small facts shared by every process: a signature nonce taken, the sweep's lock, and the
token bucket toward Plivo's API (run by Redis's own clock, so every worker on every host shares
one)."""

from __future__ import annotations

import redis

from bulksms.store import keys, scripts


def take_v2_nonce(client: redis.Redis, nonce: str, seconds: int) -> bool:
    """True the first time this V2 signature nonce is seen (for `seconds`), False after."""
    return bool(client.set(keys.v2_nonce(nonce), 1, nx=True, ex=seconds))


def take_sweep_lock(client: redis.Redis, milliseconds: int) -> bool:
    """True for the one worker that sweeps now; the lock lapses by itself."""
    return bool(client.set(keys.SWEEP_LOCK, "1", nx=True, px=milliseconds))


class PlivoBucket:
    """Capacity tokens, refilled at `per_second`: one per request to Plivo's API."""

    def __init__(self, client: redis.Redis, capacity: int, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self._take = client.register_script(scripts.BUCKET_TAKE)

    def take(self) -> float:
        """Take a token if one is there: 0.0, else the seconds until one will be."""
        return float(self._take(keys=[keys.PLIVO_BUCKET], args=[self.capacity, self.per_second]))
