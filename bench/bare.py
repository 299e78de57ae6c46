"""The floors of the HTTP stages: bare Flask endpoints served like the real app (the same
gunicorn settings), doing only what no service could skip."""

import uuid

from flask import Flask, Response, abort, jsonify, request

app = Flask(__name__)
WEBHOOK_MAX_BODY = 64 * 1024


@app.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@app.post("/api/webhooks/plivo/delivery-report")
def delivery_report() -> Response:
    return Response(status=204)


@app.post("/api/bulk-sms")
def submit() -> tuple[Response, int]:
    """The small-submit floor: parse the same JSON and answer 202 with a job id."""
    body = request.get_json()
    return jsonify({"job_id": uuid.uuid4().hex, "accepted": len(body["recipients"])}), 202


@app.post("/api/webhooks/plivo/inbound")
def inbound() -> Response:
    """The big-body floor: refuse from the length, unread, and close."""
    if (request.content_length or 0) > WEBHOOK_MAX_BODY:
        abort(Response(status=413, headers={"Connection": "close"}))
    return Response(status=204)
