"""Two mends to kombu 5.7's Redis transport, for the worker.

A worker must ride out a Redis restart, whatever it holds. With kombu 5.7's Redis transport
it does not when it holds an unacknowledged message (with late acks: nearly always, a running
task or a countdown retry): on connection loss the channel closes its pools, then restores the
unacknowledged messages through a connection that is gone, `_connparams` reads `hostname` from
`None`, and the AttributeError stops the worker (`ignore_errors` lets only connection errors
pass).

(Acknowledging a task that finished meanwhile meets the same closed channel.)

Restoring cannot work then anyway: Redis is unreachable. What the worker held stays in Redis's
unacked hash, which kombu restores to the queue after the visibility timeout; bulksms's sweep
sends a pending batch again sooner (`DISPATCH_STALE_SECONDS`) and settles a call in flight, and
the batch's claim makes any duplicate task harmless. So the restore is skipped, and said.

And the channel makes a new redis-py client for every command it sends without one in hand
(acknowledging a task, publishing each of its events for Flower): redis-py 8 fills a table of
some 500 response callbacks for each, a tenth of a worker's CPU per alert. One client per
connection pool does the same work: a redis-py client holds no connection of its own (it takes
one from the pool for each command, so it is safe across threads), and a channel that
reconnects has a new pool, and so gets a new client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


def apply() -> None:
    """Install once (idempotent)."""
    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "bulksms_fix", False):
        return

    def restore_unacked(self: Any, client: Any = None) -> Any:
        transport = getattr(self.channel, "connection", None)
        if client is None and (transport is None or transport.client is None):
            log.warning(
                "broker connection lost holding %d unacknowledged message(s): left in Redis "
                "for the visibility timeout (and the sweep) to restore",
                len(self._delivered),
            )
            self._delivered.clear()
            return None
        return original(self, client)  # type: ignore[no-untyped-call]

    restore_unacked.bulksms_fix = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]

    # The same closed channel is reached by other paths (a task acknowledged, late, after the
    # connection was lost): there, say what happened in the words kombu and Celery handle, a
    # connection error (the message stays unacknowledged in Redis, redelivered later; the
    # batch's claim makes its second run do nothing).
    connparams = kombu_redis.Channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = getattr(self, "connection", None)
        if transport is None or transport.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return connparams(self, asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]

    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # (a new one after the channel reconnected)
        kept = self.__dict__.get("_bulksms_client")
        if kept is None or kept.connection_pool is not pool:
            kept = self._create_client()
            self.__dict__["_bulksms_client"] = kept
        yield kept

    kombu_redis.Channel.conn_or_acquire = contextmanager(conn_or_acquire)  # type: ignore[method-assign]
