"""A claim is durable before its call leaves: a host crash (a power loss drops what Redis has not
fsynced) must not forget that a call was made, or the batch is sent again. A power loss cannot
be produced here, so these show what the worker waits for, on real Redis servers: the embedded
one fsyncs every write (appendfsync always), one with a replica is waited for (WAIT), and a
claim not acknowledged in time is not called on."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bulksms.config import Settings
from bulksms.devstack.up import free_port, start_redis
from bulksms.store import JobStore, NewJob, Sending
from bulksms.store.model import Claim
from bulksms.worker import dispatch
from bulksms.worker.dispatch import Owner
from bulksms.worker.pacing import Pacer
from tests.helpers.fakes import FakeGateway, FakePace, NoThrottle

NUMBERS = ["+14155550100", "+14155550101", "+14155550102"]
SETTINGS = Settings(
    api_base_url="https://sms.example.com", send_backoff_base=1.0, send_max_attempts=3
)


class Server:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] = start_redis(self.port, folder)
        self.client = redis.Redis(port=self.port, decode_responses=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def store_on(server: Server) -> JobStore:
    store = JobStore(server.client, 3600)
    store.create(NewJob("j1", Sending("hi", "+14155550199"), NUMBERS, 3, 0, 0, 0, 2, "GSM-7", 1))
    return store


def send(store: JobStore, gateway: FakeGateway, batch: int = 0) -> str:
    pacer = Pacer(FakePace(), SETTINGS)  # type: ignore[arg-type]
    return dispatch.send_batch(store, gateway, NoThrottle(), pacer, SETTINGS, "j1", batch)  # type: ignore[arg-type]


def test_the_embedded_redis_has_each_claim_on_disk_before_the_call(
    servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers.append(Server(tmp_path / "embedded"))
    store = store_on(servers[0])
    assert servers[0].client.config_get("appendfsync") == {"appendfsync": "always"}
    assert store.durability().how == "always"
    seen: list[tuple[Claim, str]] = []
    gateway = FakeGateway()

    def between(owner: Owner, claim: Claim) -> None:  # the claim is made, the call not yet
        record = redis.Redis(port=servers[0].port, decode_responses=True).hget(
            "bulksms:{j1}:batches", str(owner.batch)
        )
        seen.append((claim, str(record)))
        assert gateway.sent == []

    monkeypatch.setattr(dispatch, "before_call", between)
    assert send(store, gateway) == "submitted"
    ((claim, record),) = seen
    assert claim.durable is True and record.startswith("sending|")
    assert len(gateway.sent) == 1


def test_with_a_replica_and_no_fsync_each_claim_waits_for_the_replica(
    servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = Server(tmp_path / "primary")
    replica = Server(tmp_path / "replica")
    servers.extend([primary, replica])
    primary.client.config_set("appendfsync", "everysec")  # nothing local to trust
    replica.client.replicaof("127.0.0.1", primary.port)
    deadline = time.monotonic() + 60
    # (connected, and done with its first full sync: a WAIT counts it only from then)
    while replica.client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.1)
    store = store_on(primary)
    assert store.durability().how == "wait"
    seen: list[Claim] = []
    monkeypatch.setattr(dispatch, "before_call", lambda owner, claim: seen.append(claim))
    gateway = FakeGateway()
    assert send(store, gateway, batch=0) == "submitted"
    assert [c.durable for c in seen] == [True]  # WAIT 1: the replica has it
    # The replica gone (crashed): no acknowledgement comes, so no call is made on that claim.
    replica.process.kill()
    replica.process.wait(15)
    with pytest.raises(dispatch.RetryLater) as later:
        send(store, gateway, batch=1)
    assert later.value.reason == "not durable"
    assert len(gateway.sent) == 1 and len(seen) == 1  # the hook never reached: no call
    record = primary.client.hget("bulksms:{j1}:batches", "1")
    assert record is not None and record.startswith("pending|")  # released, to try again
    assert record.split("|")[2] == "1"  # (its number never given again)


def test_a_redis_that_cannot_make_a_claim_durable_is_said_so(
    servers: list[Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers.append(Server(tmp_path / "everysec"))
    servers[0].client.config_set("appendfsync", "everysec")
    store = store_on(servers[0])
    assert store.claim_batch("j1", 0).durable is None
    assert "host crash may forget the last second of claims" in caplog.text
