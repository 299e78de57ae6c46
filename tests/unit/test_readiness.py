"""The readiness checks' sharing (`ops._Shared`): however many ask, a process probes once an
interval, and nobody waits on another's probe but the very first caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from bulksms.api import ops


class Probe:
    """A probe that counts its calls and, when `gate` is given, holds each call until it is set."""

    def __init__(self, answer: bool = True, gate: threading.Event | None = None) -> None:
        self.answer = answer
        self.gate = gate
        self.calls = 0
        self.running = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        self.running.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never let the probe answer"
        return self.answer


def test_one_probe_an_interval_however_many_ask() -> None:
    shared = ops._Shared(60.0, "no")
    probe = Probe()
    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(lambda _: shared.check(probe), range(500)))
    assert probe.calls == 1
    assert {v.text for v in verdicts} == {"ok"}


def test_the_verdict_is_asked_again_after_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ops, "time", SimpleNamespace(monotonic=lambda: now[0]))
    shared = ops._Shared(5.0, "no worker answered")
    probe = Probe()
    assert shared.check(probe) == ("ok", 0.0)
    now[0] += 4.9
    assert shared.check(probe) == ("ok", pytest.approx(4.9))
    assert probe.calls == 1
    now[0] += 0.2
    probe.answer = False
    assert shared.check(probe) == ("no worker answered", 0.0)
    assert probe.calls == 2


def test_while_a_probe_runs_others_take_the_last_verdict_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe that hangs (a Celery ping with no worker takes its whole second) holds only the
    thread that runs it: the others answer with the verdict before, without waiting."""
    now = [1000.0]
    monkeypatch.setattr(ops, "time", SimpleNamespace(monotonic=lambda: now[0]))
    shared = ops._Shared(5.0, "no")
    assert shared.check(Probe()) == ("ok", 0.0)
    now[0] += 3600  # a quiet hour: the next caller probes again
    gate = threading.Event()
    slow = Probe(answer=False, gate=gate)
    with ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(shared.check, slow)
        assert slow.running.wait(30)
        others = Probe()
        verdicts = [shared.check(others) for _ in range(50)]  # (waiting, they would hang here)
        now[0] += 1  # the probe's second
        gate.set()
        assert hanging.result(30) == ("no", 0.0)
    # The hour-old verdict, saying it is an hour old.
    assert verdicts == [("ok", 3600.0)] * 50
    assert others.calls == 0  # nobody probed beside the one running
    assert shared.check(others) == ("no", 0.0)  # the new verdict, shared for the interval


def test_the_first_caller_waits_for_the_first_verdict() -> None:
    """With no verdict yet there is none to share: the first callers wait for the probe."""
    shared = ops._Shared(60.0, "no")
    gate = threading.Event()
    slow = Probe(gate=gate)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(shared.check, slow)
        assert slow.running.wait(30)
        second = pool.submit(shared.check, slow)
        time.sleep(0.05)
        assert not second.done()  # waiting for the probe, not answering ""
        gate.set()
        assert (first.result(30).text, second.result(30).text) == ("ok", "ok")
    assert slow.calls == 1


def test_a_probe_that_raises_is_a_verdict_too() -> None:
    shared = ops._Shared(60.0, "no")

    def broken() -> bool:
        raise ConnectionError("refused")

    assert shared.check(broken).text == "unavailable (ConnectionError)"
    assert shared.check(Probe()).text == "unavailable (ConnectionError)"  # shared like any other
