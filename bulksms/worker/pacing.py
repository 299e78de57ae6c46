"""Sending at the pace Plivo really sends (README, "Pace").

Plivo sends an account's messages at its MPS (5 a second by default), and each sender at its own
cap; what it cannot send at once waits in its queue, and fails with error 420 after 3 hours. So
bulksms hands Plivo no more than `PLIVO_QUEUE_SECONDS` of the pace at a time, counted in
segments, in calls of at most half that (so the queue is topped up before it runs dry):

- before each call a worker asks the shared pace (`store.pacing.Pace`) for room;
- with no room, the batch is parked (`paced`) in its job's set and the job is put on the pace's
  schedule for when room will be there; the worker slot is free at once;
- the waker (a thread in every worker) takes jobs off the schedule as their time comes, one a
  tick, earliest first, and enqueues one paced batch of each: one batch of a job waits for room
  at a time, so jobs sending together take turns, and a job's batches go in order; a job that
  took the last room is scheduled a tick (at most an eighth of the bound) after the others
  that wait, or come to wait, for the same room, so their woken batch takes it first,
  whichever worker's waker woke it;
- a woken batch makes calls while there is room, then the job's next paced batches do, in the
  same task; when other jobs wait, a turn gives way after its share and goes to the back of
  the line;
- a call that leaves room while other jobs wait wakes the next job in line at once: many small
  jobs parked behind a full queue (a burst of alerts) go at the pace, not one a tick;
- urgent jobs may fill Plivo's queue to twice the bound: they go before campaigns that wait.
"""

from __future__ import annotations

import logging
import math
import threading

from flask import Flask

from bulksms.config import Settings
from bulksms.extensions import store
from bulksms.store import Sending, sender_of
from bulksms.store.pacing import Grant, Pace
from bulksms.worker.sweep import Enqueue

log = logging.getLogger(__name__)

MAX_DESTINATIONS = 1000  # Plivo's limit for one call
URGENT_ALLOWANCE = 2  # urgent calls may fill Plivo's queue to this many times the bound


class Pacer:
    """A worker's view of the pace: how big a call may be, and whether it may go now."""

    def __init__(self, pace: Pace, settings: Settings) -> None:
        self.pace = pace
        self.settings = settings

    def call_size(self, sending: Sending, segments_per_message: int) -> int:
        """Destinations in one call: half the queue bound's worth, 1 to 1000."""
        pace = self.settings.pace_for(sender_of(sending))
        half = pace * self.settings.plivo_queue_seconds / 2
        return max(1, min(MAX_DESTINATIONS, math.floor(half / max(1, segments_per_message))))

    def turn(self, sending: Sending, waiting: int) -> float:
        """Segments one turn may hand over: as much as there is room for when no other job
        waits; else a share of half the bound (what frees up between turns), at least a call."""
        if waiting <= 0:
            return math.inf
        pace = self.settings.pace_for(sender_of(sending))
        return pace * self.settings.plivo_queue_seconds / 2 / (waiting + 1)

    def bound(self, urgent: bool) -> float:
        """Seconds of the account's pace that may wait at Plivo after a call."""
        return self.settings.plivo_queue_seconds * (URGENT_ALLOWANCE if urgent else 1)

    def room_left(self, grant: Grant, urgent: bool) -> bool:
        """Whether the account's queue has room after the call `grant` let go."""
        return grant.go and grant.seconds < self.bound(urgent)

    def take(self, job_id: str, sending: Sending, segments: int, urgent: bool) -> Grant:
        bound = self.bound(urgent)
        sender = sender_of(sending)
        cap = self.settings.sender_cap(sender)
        return self.pace.take(
            job_id,
            segments,
            bound,
            self.settings.plivo_mps,
            (sender, cap) if cap else None,
        )

    def schedule(self, job_id: str, at: float) -> None:
        self.pace.schedule(job_id, at)


def wake_due(pace: Pace, enqueue: Enqueue) -> int:
    """Enqueue one paced batch of the job whose turn came first (one job a tick: two woken
    together would race for the same room, and the same one would win); returns how many."""
    woken = 0
    for job_id in pace.due():
        batch = store().next_paced(job_id)  # (marked enqueued as it is taken)
        if batch is None:
            continue
        enqueue(job_id, [batch], store().is_urgent(job_id))
        woken += 1
    return woken


def start(app: Flask, pace: Pace, settings: Settings, enqueue: Enqueue) -> threading.Event:
    """Wake paced batches in a daemon thread of this worker process; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.pace_wake_interval):
            with app.app_context():
                try:
                    wake_due(pace, enqueue)
                except Exception:  # Redis away, say: tried again at the next tick
                    log.exception("waking paced batches failed")

    threading.Thread(target=loop, name="bulksms-pace", daemon=True).start()
    return stop
