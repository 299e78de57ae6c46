"""The floors of the HTTP stages: bare Flask endpoints served like the real app (the same
gunicorn settings), doing only what no service could skip."""

import uuid

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/api/webhooks/plivo/delivery-report")
def delivery_report() -> Response:
    return Response(status=204)


@app.post("/api/bulk-sms")
def submit() -> tuple[Response, int]:
    """The small-submit floor: parse the same JSON and answer 202 with a job id."""
    body = request.get_json()
    return jsonify({"job_id": uuid.uuid4().hex, "accepted": len(body["recipients"])}), 202
