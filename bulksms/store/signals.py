"""Small facts shared by every process: signature nonces taken, the sweep's lock, and the
token bucket toward Plivo's API (run by Redis's own clock, so every worker on every host shares
one)."""

from __future__ import annotations

import redis

from bulksms.store import keys, scripts


class Nonces:
    """Signature nonces, each bound to the first request it comes with. The same request again
    (Plivo retrying what we did not answer) passes until the caller settles the nonce, once its
    work is stored; any other request with that nonce is a replay. V2 signs neither the query
    nor the body, so this binding is all that stops a V2 signature being reused with other
    content."""

    def __init__(self, client: redis.Redis, seconds: int) -> None:
        self.redis = client
        self.seconds = seconds
        self._bind = client.register_script(scripts.NONCE_BIND)

    def first_use(self, nonce: str, request_digest: str, for_good: bool = False) -> bool:
        """True when `nonce` is new, or came with this very request and was not settled.
        `for_good`: a new nonce is remembered without end (for requests few and lasting)."""
        seconds = 0 if for_good else self.seconds
        return bool(self._bind(keys=[keys.nonce(nonce)], args=[request_digest, seconds]))

    def settle(self, nonce: str) -> None:
        """The request's work is stored: even the very same request is a replay from now on."""
        self.redis.set(keys.nonce(nonce), "settled", xx=True, keepttl=True)


def take_sweep_lock(client: redis.Redis, milliseconds: int) -> bool:
    """True for the one worker that sweeps now; the lock lapses by itself."""
    return bool(client.set(keys.SWEEP_LOCK, "1", nx=True, px=milliseconds))


class PlivoBucket:
    """Capacity tokens, refilled at `per_second`: one per request to Plivo's API."""

    def __init__(
        self, client: redis.Redis, capacity: int, per_second: float, key: str = keys.PLIVO_BUCKET
    ) -> None:
        self.key = key
        self.capacity = capacity
        self.per_second = per_second
        self._take = client.register_script(scripts.BUCKET_TAKE)

    def take(self) -> float:
        """Take a token if one is there: 0.0, else the seconds until one will be."""
        return float(self._take(keys=[self.key], args=[self.capacity, self.per_second, 0]))

    def hold(self, seconds: float) -> None:
        """No token for anyone for `seconds` (Plivo's Retry-After: asking sooner is refused,
        and may lengthen the wait)."""
        if seconds > 0:  # (0 would take a token)
            self._take(keys=[self.key], args=[self.capacity, self.per_second, seconds])
