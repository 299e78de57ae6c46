"""The reports stage's floor: a bare Flask endpoint answering 204, served like the real app."""

from flask import Flask, Response

app = Flask(__name__)


@app.post("/api/webhooks/plivo/delivery-report")
def delivery_report() -> Response:
    return Response(status=204)
