"""The floors of the HTTP stages: bare Flask endpoints served like the real app (the same
gunicorn settings), doing only what no service could skip.

With `BENCH_BARE_WRITE` set, the report endpoint first makes one write to the Redis at
`REDIS_URL`, on a connection made as the app makes its own, and waits for the answer: the floor
of any endpoint that records a report before it acknowledges it (`bench.run.reports_ceiling`).
So does the submit endpoint, storing the body it parsed under its job id: the floor of any
endpoint that stores a job before it answers 202 (`bench.run.small_submits`).
"""

import os
import threading
import uuid
from typing import cast

import redis
from flask import Flask, Response, abort, jsonify, request
from redis.connection import Connection

app = Flask(__name__)
WEBHOOK_MAX_BODY = 64 * 1024
WRITE = bool(os.environ.get("BENCH_BARE_WRITE"))
_client = (
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)
    if WRITE
    else None
)
_local = threading.local()  # each thread its own connection, as the report fast path keeps


def _one_write(*command: object) -> None:
    assert _client is not None
    connection: Connection | None = getattr(_local, "connection", None)
    if connection is None:
        connection = cast(Connection, _client.connection_pool.make_connection())
        _local.connection = connection
    connection.send_command(*command)  # type: ignore[no-untyped-call]
    connection.read_response()


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@app.post("/api/webhooks/plivo/delivery-report")
def delivery_report() -> Response:
    if WRITE:
        _one_write("HINCRBY", "bench:bare-writes", "count", 1)
    return Response(status=204)


@app.post("/api/bulk-sms")
def submit() -> tuple[Response, int]:
    """The small-submit floor: parse the same JSON and answer 202 with a job id."""
    body = request.get_json()
    job_id = uuid.uuid4().hex
    if WRITE:
        _one_write("SET", f"bench:bare-job:{job_id}", request.get_data(), "EX", 600)
    return jsonify({"job_id": job_id, "accepted": len(body["recipients"])}), 202


@app.post("/api/webhooks/plivo/inbound")
def inbound() -> Response:
    """The big-body floor: refuse from the length, unread, and close."""
    if (request.content_length or 0) > WEBHOOK_MAX_BODY:
        abort(Response(status=413, headers={"Connection": "close"}))
    return Response(status=204)
