"""One request-rate limit toward Plivo, shared by every worker on every host.

A token bucket in Redis (capacity = the limit's count, refilled evenly over its period), so
adding workers never adds requests: they wait for tokens instead.
"""

from __future__ import annotations

import time

import redis
from limits import parse

from bulksms.store.signals import PlivoBucket


class PlivoThrottle:
    def __init__(self, client: redis.Redis, rate: str) -> None:
        item = parse(rate)
        self.capacity = item.amount
        self.per_second = item.amount / item.get_expiry()
        self.bucket = PlivoBucket(client, self.capacity, self.per_second)

    def take(self) -> float:
        """Take a token if one is there: 0.0, else the seconds until one will be."""
        return self.bucket.take()

    def wait(self) -> float:
        """Block until a token is taken; returns the seconds waited."""
        waited = 0.0
        while (pause := self.take()) > 0:
            pause = min(pause, 1.0)
            time.sleep(pause)
            waited += pause
        return waited
