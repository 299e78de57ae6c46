"""What a claim waits for, by what the Redis server offers (`store.server.Durability`); the
servers themselves are in tests/integration/test_durability.py (WAITAOF needs Redis 7.2, which
the embedded Redis 6.2 is not: its replies are read here)."""

from __future__ import annotations

from bulksms.store.server import ACK_TIMEOUT_MS, Durability


def test_waitaof_asks_for_the_local_fsync_and_reads_its_reply() -> None:
    waitaof = Durability("waitaof")
    assert waitaof.command == ("WAITAOF", "1", "0", str(ACK_TIMEOUT_MS))
    assert waitaof.acknowledged([1, 0])
    assert not waitaof.acknowledged([0, 2])  # on replicas, not on this disk: not enough


def test_wait_asks_for_one_replica() -> None:
    wait = Durability("wait")
    assert wait.command == ("WAIT", "1", str(ACK_TIMEOUT_MS))
    assert wait.acknowledged(1) and not wait.acknowledged(0)


def test_appendfsync_always_needs_no_wait_and_none_cannot_assure() -> None:
    assert Durability("always").command is None and Durability("always").assured
    assert Durability("none").command is None and not Durability("none").assured
