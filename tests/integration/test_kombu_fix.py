"""The worker's mend to kombu's Redis channel: one redis-py client per connection pool for the
commands it sends without one (acknowledgements, Flower's events), not one per command."""

from __future__ import annotations

import kombu
import pytest
from kombu.transport import redis as kombu_redis

from bulksms.worker import kombu_fix


@pytest.fixture
def mended(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mends applied for this test only (the tests' own process is no worker)."""
    monkeypatch.setattr(kombu_redis.QoS, "restore_unacked", kombu_redis.QoS.restore_unacked)
    for name in ("_connparams", "conn_or_acquire"):
        monkeypatch.setattr(kombu_redis.Channel, name, getattr(kombu_redis.Channel, name))
    kombu_fix.apply()


@pytest.mark.usefixtures("mended")
def test_the_channel_keeps_one_client_per_pool(redis_url: str) -> None:
    with kombu.Connection(redis_url) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
            assert first.ping()
        given = object()
        with channel.conn_or_acquire(given) as passed:
            assert passed is given  # a client in hand is used as it is
        channel._pool = None  # as kombu leaves it when the connection was lost
        with channel.conn_or_acquire() as after:
            assert after is not first
            assert after.connection_pool is channel.pool
            assert after.ping()
        # Messages go through it as before: published, then read back.
        queue = connection.SimpleQueue("bulksms-test-kombu-fix")
        queue.put({"n": 1})
        assert queue.get(timeout=10).payload == {"n": 1}
        queue.close()
