"""Celery as both sides configure it, and the one way work is put on its queues.

The web process only publishes (by task name: it never imports the worker's code); workers
consume (`bulksms.worker.app`). Crash settings (README, "Exactly once"): a batch message is
acknowledged only after its task ran (`task_acks_late`), goes back to the queue if its worker dies
(`task_reject_on_worker_lost`), a worker holds one message at a time
(`worker_prefetch_multiplier = 1`), and an unacknowledged message is redelivered after
`visibility_timeout`. None of this decides whether a batch is sent: the batch's own state in
Redis does (`bulksms.worker.dispatch`).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from celery.utils.nodenames import anon_nodename
from kombu.entity import Queue
from kombu.exceptions import ChannelError

from bulksms import ids
from bulksms.config import Settings

QUEUE = "bulksms"
URGENT_QUEUE = "bulksms.urgent"  # small or high-priority jobs: always served first

SEND_BATCH = "bulksms.send_batch"
FAN_OUT = "bulksms.fan_out"
NOTIFY = "bulksms.notify"

FAN_OUT_ABOVE = 20  # batches: a bigger job's tasks are enqueued by a worker (`start`)
# A header on every message: when it was pushed (this host's clock). The sweep reads the next
# message's (`queue_heads`) to tell a batch task still waiting from one that vanished.
PUSHED = "bulksms_pushed"
HEAD_LOOK = 10  # messages read from a queue's head for one that says when it was pushed
EMPTY = math.inf  # a queue's head when it holds nothing: every task pushed before was taken


@before_task_publish.connect(weak=False, dispatch_uid="bulksms.pushed")
def _say_when_pushed(headers: dict[str, Any], **_: Any) -> None:
    """Every message Celery publishes (a retry too, which would carry its first push's)."""
    headers[PUSHED] = pushed_now()


def make_celery(settings: Settings, **options: Any) -> Celery:
    """A Celery app with bulksms's broker settings; `options` go to `Celery(...)`."""
    app = Celery("bulksms", **options)
    app.config_from_object(
        {
            "broker_url": settings.broker_url,
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,  # a Redis outage is waited out, never fatal
            "broker_transport_options": {
                "visibility_timeout": settings.celery_visibility_timeout,
                "queue_order_strategy": "priority",
            },
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_default_queue": QUEUE,
            # Workers consume both; with the "priority" order kombu's Redis transport asks for
            # the urgent queue first on every poll, so an alert never waits behind a campaign.
            "task_queues": (Queue(URGENT_QUEUE), Queue(QUEUE)),
            # Flower shows tasks from the worker's events. A `task-sent` event would be a
            # second publish per task that nothing needs (issue 18: alerts).
            "worker_send_task_events": True,
            "task_send_sent_event": False,
            "worker_hijack_root_logger": False,
        }
    )
    return app


def prepare(celery: Celery) -> None:
    """Load now, in the web process, what its first publish would load inside a request: the
    app's finalization, the AMQP router and producer pool, the result backend, the broker
    transport's module (measured on 2 busy cores: a first publish took 80 ms, 27 ms after this;
    the rest is the broker connection). No connection is opened here: Redis may not be up."""
    celery.finalize(auto=True)
    _ = celery.amqp.router, celery.amqp.producer_pool, celery.backend
    with celery.connection_for_write() as connection:
        _ = connection.transport


def queue_for(urgent: bool) -> str:
    return URGENT_QUEUE if urgent else QUEUE


def start(celery: Celery, job_id: str, batches: int, urgent: bool) -> None:
    """Set a new job going. Its 1000 tasks would cost a million-recipient submit a second, so a
    big job's are enqueued by one `fan_out` task on a worker instead; a small job's right away.
    If this fails, the job is stored and the sweep enqueues its batches."""
    if batches <= FAN_OUT_ABOVE:
        enqueue(celery, job_id, range(batches), urgent)
    else:
        celery.send_task(FAN_OUT, (job_id,), queue=queue_for(urgent))


def start_messages(job_id: str, batches: int, urgent: bool) -> list[tuple[str, str]]:
    """What sets a new job going (`start`), as messages for the store to push in the same
    round trip as the job's own writes: a small job's `send_batch` tasks, a big job's
    `fan_out`."""
    if batches <= FAN_OUT_ABOVE:
        return messages(SEND_BATCH, [(job_id, batch) for batch in range(batches)], urgent)
    return messages(FAN_OUT, [(job_id,)], urgent)


def messages(name: str, calls: Iterable[tuple[Any, ...]], urgent: bool) -> list[tuple[str, str]]:
    """Task `name` once per args in `calls`, as the broker holds them: (the queue's Redis
    list, the message), for the store to push in the same round trip as the job's own writes
    (so an alert costs one round trip, not one publish a task).

    The message is the one `send_task` would put there, made here because Celery's own making
    of it (argument reprs, option merging) cost an alert more than the rest of its request: a
    task protocol 2 message (Celery's "Message Protocol" reference: these headers, and a body
    of [args, kwargs, embed]) in the envelope of kombu's Redis transport (base64 body, delivery
    info), less what reads as it is when left out (`LEFT_OUT`), and without JSON's optional
    spaces. Redis writes each message twice to its append-only file (pushed, then kept while
    its task runs), and a Redis rewrites that file each time it doubles: `send_task`'s 1,063
    bytes were an alert's biggest write. `tests/integration/test_small_submits.py` compares
    the two, and real workers run them."""
    queue = queue_for(urgent)
    form = _template(name, queue, _origin())
    pushed = pushed_now()
    out = []
    for args in calls:
        task_id, tag = ids.uuid4_text(), ids.uuid4_text()
        body = f"[{json.dumps(list(args), separators=_COMPACT)},{{}},{{}}]"
        shown = repr(args)  # (JSON escapes no printable ASCII but quotes and backslashes)
        if not (shown.isascii() and shown.isprintable() and '"' not in shown and "\\" not in shown):
            shown = json.dumps(shown)[1:-1]  # (escaped as in the whole envelope)
        message = form.format(
            id=task_id,
            body=base64.b64encode(body.encode()).decode(),
            argsrepr=shown,
            pushed=pushed,
            tag=tag,
        )
        out.append((queue, message))
    return out


_COMPACT = (",", ":")
_MARK = re.compile(r"@@bulksms:(\w+)@@")

# What `send_task` writes and `messages` leaves out, by where it is, with the value `send_task`
# gives it: each reads the same when missing (the worker's `Request` and the task's `Context`
# default it so; kombu's Redis transport ignores the delivery mode). Left out too: the reply
# queue, which serves results, and bulksms keeps none (`task_ignore_result`, no result
# backend; a retry's message names it again). The integration test checks each against
# `send_task`'s own message. (Kept although they read the same when missing: the correlation
# id, which Celery's own tools for moving tasks read, and the priority, which a worker's
# `inspect` shows.)
LEFT_OUT: dict[str, dict[str, Any]] = {
    "headers": {
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "parent_id": None,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    },
    "properties": {"delivery_mode": 2},
    "embed": {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
}


@functools.lru_cache(maxsize=256)
def _template(name: str, queue: str, origin: str) -> str:
    """The envelope `messages` makes, as a format string of its JSON with a field for each
    per-message value: dumped once, not per message (that cost an alert more than the rest of
    making its writes)."""

    def mark(value: str) -> str:
        return f"@@bulksms:{value}@@"

    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": mark("id"),
        "root_id": mark("id"),
        "argsrepr": mark("argsrepr"),
        "kwargsrepr": "{}",
        "origin": origin,
        PUSHED: mark("pushed"),
    }
    envelope = {
        "body": mark("body"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": mark("id"),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": mark("tag"),
        },
    }
    # (even items are text, odd ones name a value)
    parts = _MARK.split(json.dumps(envelope, separators=_COMPACT))
    return "".join(
        "{" + part + "}" if i % 2 else part.replace("{", "{{").replace("}", "}}")
        for i, part in enumerate(parts)
    )


@functools.cache
def _origin() -> str:
    """The `origin` header `send_task` gives a message: this process's node name."""
    return str(anon_nodename())


def enqueue(celery: Celery, job_id: str, batches: Iterable[int], urgent: bool) -> None:
    """One `send_batch` task per batch, over one broker connection, on the job's queue."""
    queue = queue_for(urgent)
    with celery.producer_or_acquire() as producer:
        for batch in batches:
            celery.send_task(SEND_BATCH, (job_id, batch), producer=producer, queue=queue)


def pushed_now() -> str:
    return f"{time.time():.3f}"


def notify(celery: Celery, job_id: str) -> None:
    celery.send_task(NOTIFY, (job_id,))


def queue_heads(celery: Celery) -> dict[bool, float | None]:
    """For each batch queue (by urgency), when the message a worker takes next was pushed: the
    oldest, as kombu's Redis transport pushes on a list's left and pops from its right (the
    first of the oldest `HEAD_LOOK` that says: its `PUSHED` header); `EMPTY` where the queue
    is; None where none says or the broker is not Redis. The sweep reads it to tell a batch
    task still waiting from one that vanished."""
    heads: dict[bool, float | None] = {}
    with celery.connection_or_acquire() as connection:
        client = getattr(connection.default_channel, "client", None)
        for urgent in (True, False):
            oldest = client.lrange(queue_for(urgent), -HEAD_LOOK, -1) if client else []
            known = (pushed_at(m) for m in reversed(oldest))
            heads[urgent] = next((at for at in known if at is not None), None)
            if client and not oldest:
                heads[urgent] = EMPTY
    return heads


def pushed_at(message: bytes | str) -> float | None:
    """When a message (kombu's Redis envelope) was pushed, if it says."""
    try:
        return float(json.loads(message)["headers"][PUSHED])
    except (ValueError, LookupError, TypeError):
        return None


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the batch queues (any broker: a passive declare counts them)."""
    total = 0
    with celery.connection_or_acquire() as connection:
        for queue in (URGENT_QUEUE, QUEUE):
            try:
                _, count, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
            except ChannelError:  # the Redis transport's word for an empty queue: no list
                count = 0
            total += int(count)
    return total
