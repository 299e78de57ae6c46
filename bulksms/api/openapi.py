"""The OpenAPI 3.1 document of the public contract, served at `/api/openapi.json`.

The paths and answers are written by hand: they are the contract other programs rely on, and the
test suite runs schemathesis against the live service to hold the code to it. The request bodies'
schemas are generated from the pydantic models that validate them (`bulksms.api.schemas`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import GenerateJsonSchema

from bulksms.api.schemas import REQUEST_BODIES
from bulksms.message import GSM7, UCS2
from bulksms.store import JobState, Status

bp = Blueprint("openapi", __name__)

ERROR_CODES = {
    400: "Malformed JSON, a field of the wrong type, an unknown field, a bad Idempotency-Key.",
    401: "No API key, or not a valid one.",
    403: "The Plivo signature is missing or wrong (or V2 where PLIVO_SIGNATURES=v3); a campaign "
    "page session's request without its X-CSRF-Token.",
    404: "No such job (it may have expired), or no such path.",
    410: "The job's per-recipient data were deleted.",
    409: "The Idempotency-Key was used with another body, or that request is still running.",
    413: "Too many recipients (MAX_RECIPIENTS), or the body is too large.",
    415: "The body is not application/json.",
    422: "Well-formed but unacceptable: no valid recipient, empty or too long a message, ...",
    429: "Rate limited; retry after Retry-After seconds.",
    503: "Redis is unavailable, or (a submit, `urgent_backlog`) more urgent work waits than "
    "URGENT_BACKLOG_SECONDS allows; retry after Retry-After seconds.",
}
RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "string"},
        "required": True,
        "description": "Seconds to wait.",
    }
}
COUNT = {"type": "integer", "minimum": 0}
TIME = {"type": "string", "format": "date-time"}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
CURSOR = {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "description": "The same key and request return the same job, never a second one.",
}
STATUS_FILTER = {
    "name": "status",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": [s.value for s in Status]},
}


def _limit(most: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": most},
    }


def _page(field: str, items: dict[str, Any]) -> dict[str, Any]:
    """A page of a listing: its items under `field`, and the cursor to the next page."""
    return _json(
        {
            "type": "object",
            "required": [field, "next_cursor"],
            "properties": {
                field: {"type": "array", "items": items},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "One page; next_cursor is null on the last.",
    )


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_CODES[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _error(s) for s in statuses}


def _form(*fields: str) -> dict[str, Any]:
    """A body Plivo posts: a urlencoded form of string fields."""
    properties = {name: {"type": "string"} for name in fields}
    schema = {"type": "object", "properties": properties}
    return {
        "required": False,
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class _Untitled(GenerateJsonSchema):
    """Pydantic's JSON Schema without a title on each property ("Expiry Seconds"): the name
    already says it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def request_schemas() -> dict[str, Any]:
    """`components.schemas` of every request body, from its model (its nested models too)."""
    found: dict[str, Any] = {}
    for model in REQUEST_BODIES:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", schema_generator=_Untitled
        )
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    # The form's file part is not a model's field: the contact file itself.
    form = found["SubmitForm"]
    form["properties"] = {
        "recipients": {
            "type": "string",
            "contentMediaType": "text/csv",
            "description": "The contact file: CSV with a header row (UTF-8, with or without "
            "BOM; `,` `;` or tab; CRLF or LF). One column holds the numbers (phone_column); "
            "the message's {{placeholders}} name other columns (case-insensitive, spaces read "
            "as _). An empty cell is a missing value.",
        },
        **form["properties"],
    }
    form["required"] = ["recipients", *form.get("required", [])]
    return found


SUBMIT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}},
        "multipart/form-data": {
            "schema": {"$ref": "#/components/schemas/SubmitForm"},
            "encoding": {"recipients": {"contentType": "text/csv"}},
        },
    },
}


INVALID = {
    "type": "array",
    "maxItems": 100,
    "items": {
        "type": "object",
        "required": ["input", "reason"],
        "properties": {
            "row": {
                "type": "integer",
                "description": "A CSV row as a spreadsheet numbers it (the header is 1); a "
                "JSON recipient's place, from 1.",
            },
            "input": {"type": "string"},
            "reason": {
                "type": "string",
                "description": "A number's fault, or missing_field, too_long (the filled "
                "text), empty_message.",
            },
            "field": {"type": "string", "description": "What the row lacks or has too much of."},
        },
    },
}

SEGMENTS = {
    "encoding": {
        "type": "string",
        "enum": [GSM7, UCS2, "mixed"],
        "description": "mixed: a template's texts differ (see encodings).",
    },
    "encodings": {
        "type": "object",
        "additionalProperties": COUNT,
        "description": "A template's job: messages by encoding.",
    },
    "segments_per_message": {
        "oneOf": [
            COUNT,
            {
                "type": "object",
                "required": ["min", "max"],
                "properties": {"min": COUNT, "max": COUNT},
            },
        ],
        "description": "A template's texts differ in length: the fewest and the most.",
    },
    "estimated_segments": {**COUNT, "description": "The exact sum over every message."},
}

ACCEPTED = {
    **_json({"$ref": "#/components/schemas/Accepted"}, "Job accepted."),
    "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
}


# Answered by gunicorn before the app sees the request (its limit_request_line), as text.
URI_TOO_LONG = {"description": "The request line (path and query) is too long: not JSON."}


def document() -> dict[str, Any]:
    """The OpenAPI document; every operation may meet gunicorn's 414."""
    found = _document()
    for operations in found["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("414", URI_TOO_LONG)
    return found


def _document() -> dict[str, Any]:
    recipients = {
        "type": "object",
        "required": ["received", "accepted", "duplicates", "invalid"],
        "properties": {
            k: COUNT for k in ("received", "accepted", "duplicates", "invalid", "suppressed")
        },
        "description": "received = accepted + duplicates + invalid + suppressed (opted out).",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bulksms",
            "version": "1",
            "description": "Send one SMS text to very large recipient lists through Plivo.",
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": {
            "/api/bulk-sms": {
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first.",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": [s.value for s in JobState]},
                        },
                        _limit(500),
                        CURSOR,
                    ],
                    "responses": {
                        "200": _page("jobs", {"$ref": "#/components/schemas/JobStatus"}),
                        **_errors(400, 401, 429, 503),
                    },
                },
                "post": {
                    "operationId": "submitJob",
                    "summary": "Submit one message, or a template, for a list of recipients "
                    "(JSON) or a contact file (multipart).",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": SUBMIT_BODY,
                    "responses": {
                        "202": ACCEPTED,
                        **_errors(400, 401, 409, 413, 415, 422, 429, 503),
                    },
                },
            },
            "/api/bulk-sms/preview": {
                "post": {
                    "operationId": "previewJob",
                    "summary": "What the same submit would answer, and its first five messages "
                    "as they would be sent: no job is made, nothing is stored.",
                    "requestBody": SUBMIT_BODY,
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Preview"}, "The preview."),
                        **_errors(400, 401, 413, 415, 422, 429, 503),
                    },
                },
            },
            "/api/bulk-sms/{job_id}": {
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Erase a finished job's per-recipient data; its counts stay.",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/JobStatus"}, "Erased."),
                        **_errors(401, 404, 409, 429, 503),
                    },
                },
                "get": {
                    "operationId": "getJob",
                    "summary": "A job's state and counts (read from counters: cost independent "
                    "of the job's size).",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/JobStatus"}, "The job."),
                        **_errors(401, 404, 429, 503),
                    },
                },
            },
            **{
                f"/api/bulk-sms/{{job_id}}/{action}": {
                    "post": {
                        "operationId": f"{action}Job",
                        "summary": summary,
                        "parameters": [JOB_ID],
                        "responses": {
                            "200": _json({"$ref": "#/components/schemas/JobStatus"}, "The job."),
                            **_errors(401, 404, 409, 429, 503),
                        },
                    }
                }
                for action, summary in (
                    ("cancel", "Batches not yet sent are never sent (counted cancelled)."),
                    ("pause", "No batch starts while paused."),
                    ("resume", "Continue with the batches still pending."),
                )
            },
            "/api/bulk-sms/{job_id}/retry": {
                "post": {
                    "operationId": "retryJob",
                    "summary": "A new job, linked by retry_of, for the recipients that failed or "
                    "went undelivered for a network error or a temporary unavailability.",
                    "parameters": [JOB_ID, IDEMPOTENCY_KEY],
                    "responses": {
                        "202": ACCEPTED,
                        **_errors(400, 401, 404, 409, 410, 413, 422, 429, 503),
                    },
                }
            },
            "/api/bulk-sms/{job_id}/messages": {
                "get": {
                    "operationId": "listMessages",
                    "summary": "Every recipient's status, a page at a time.",
                    "parameters": [JOB_ID, STATUS_FILTER, _limit(1000), CURSOR],
                    "responses": {
                        "200": _page("messages", {"$ref": "#/components/schemas/Message"}),
                        **_errors(400, 401, 404, 410, 429, 503),
                    },
                }
            },
            "/api/bulk-sms/{job_id}/messages.csv": {
                "get": {
                    "operationId": "exportMessages",
                    "summary": "The same, as a CSV file streamed (any number of rows).",
                    "parameters": [JOB_ID, STATUS_FILTER],
                    "responses": {
                        "200": {
                            "description": "number,message_uuid,status,error_code,error,updated_at",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 404, 410, 429, 503),
                    },
                }
            },
            "/api/bulk-sms/{job_id}/errors": {
                "get": {
                    "operationId": "jobErrors",
                    "summary": "The job's recipients with an error, grouped by error code (read "
                    "from every batch: one read a batch).",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["errors"],
                                "properties": {
                                    "errors": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["code", "meaning", "count", "retryable"],
                                            "properties": {
                                                "code": {"type": "string"},
                                                "meaning": {"type": "string"},
                                                "count": COUNT,
                                                "retryable": {
                                                    "type": "boolean",
                                                    "description": "Whether retry sends to "
                                                    "these recipients again.",
                                                },
                                            },
                                        },
                                    }
                                },
                            },
                            "Errors by code, the most frequent first.",
                        ),
                        **_errors(401, 403, 404, 410, 429, 503),
                    },
                }
            },
            "/api/opt-outs": {
                "get": {
                    "operationId": "listOptOuts",
                    "summary": "Opted-out numbers, a page at a time.",
                    "parameters": [CURSOR],
                    "responses": {
                        "200": _page("opt_outs", {"type": "string"}),
                        **_errors(400, 401, 429, 503),
                    },
                }
            },
            "/api/opt-outs/{number}": {
                method: {
                    "operationId": f"{method}OptOut",
                    "summary": summary,
                    "parameters": [
                        {
                            "name": "number",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/OptOut"}, "The number."),
                        **_errors(
                            *(
                                (401, 404, 422, 429, 503)
                                if method != "put"
                                else (401, 422, 429, 503)
                            )
                        ),
                    },
                }
                for method, summary in (
                    ("get", "Whether a number has opted out (404 if not)."),
                    ("put", "Opt a number out."),
                    ("delete", "Opt a number back in (404 if it was not out)."),
                )
            },
            "/api/webhooks/plivo/inbound": {
                "post": {
                    "operationId": "inboundMessage",
                    "summary": "Plivo's inbound SMS: STOP opts the sender out, START back in.",
                    "security": [],
                    "requestBody": _form(
                        "From", "To", "Text", "MessageUUID", "MessageTime", "MessageIntent"
                    ),
                    "responses": {
                        "204": {"description": "Taken (or a replayed nonce, ignored)."},
                        **_errors(403, 413, 429, 503),
                    },
                }
            },
            "/api/webhooks/plivo/delivery-report": {
                "post": {
                    "operationId": "deliveryReport",
                    "summary": "Plivo's delivery reports (signed; not for API clients).",
                    "security": [],
                    "parameters": [
                        {
                            "name": "job",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "batch",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": _form(
                        "MessageUUID",
                        "Status",
                        "To",
                        "From",
                        "ErrorCode",
                        "Units",
                        "TotalRate",
                        "TotalAmount",
                        "ParentMessageUUID",
                        "PartInfo",
                    ),
                    "responses": {
                        "204": {
                            "description": "Recorded (or not ours; a replayed nonce: ignored)."
                        },
                        **_errors(403, 413, 429, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "liveness",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "The process serves.")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readiness",
                    "summary": "The web process can serve: Redis answers.",
                    "security": [],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Readiness"}, "Ready."),
                        "503": _json({"$ref": "#/components/schemas/Readiness"}, "Not ready."),
                    },
                }
            },
            "/readyz/workers": {
                "get": {
                    "operationId": "workersReadiness",
                    "summary": "A worker answered a ping (shared by all callers for 5 s).",
                    "security": [],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Readiness"}, "Ready."),
                        "503": _json({"$ref": "#/components/schemas/Readiness"}, "Not ready."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (the API key as a bearer token).",
                    "security": [{"ApiKey": []}, {"Bearer": []}],
                    "responses": {
                        "200": {
                            "description": "Prometheus metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 429),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "This document.")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {},
                    },
                },
                **request_schemas(),
                "Accepted": {
                    "type": "object",
                    "required": [
                        "job_id",
                        "status_url",
                        "state",
                        "batches",
                        "recipients",
                        "invalid",
                        "encoding",
                        "segments_per_message",
                        "estimated_segments",
                    ],
                    "properties": {
                        "job_id": {"type": "string"},
                        "status_url": {"type": "string"},
                        "state": {"type": "string", "enum": [s.value for s in JobState]},
                        "batches": COUNT,
                        "recipients": recipients,
                        "invalid": INVALID,
                        **SEGMENTS,
                        "estimated_duration_seconds": {
                            "type": "number",
                            "minimum": 0,
                            "description": "How long its segments take to leave Plivo's queue "
                            "at its sender's pace (PLIVO_MPS, or a lower sender cap), if the "
                            "job has the pace to itself.",
                        },
                        "retry_of": {"type": "string"},
                    },
                },
                "Preview": {
                    "type": "object",
                    "required": [
                        "recipients",
                        "invalid",
                        "encoding",
                        "segments_per_message",
                        "estimated_segments",
                        "segments_histogram",
                        "messages",
                    ],
                    "properties": {
                        "recipients": recipients,
                        "invalid": INVALID,
                        **SEGMENTS,
                        "segments_histogram": {
                            "type": "object",
                            "additionalProperties": COUNT,
                            "description": "Messages by their number of segments.",
                        },
                        "estimated_cost": {
                            "type": "number",
                            "description": "estimated_segments × PRICE_PER_SEGMENT, when set.",
                        },
                        "messages": {
                            "type": "array",
                            "maxItems": 5,
                            "items": {
                                "type": "object",
                                "required": ["to", "text", "segments", "encoding"],
                                "properties": {
                                    "to": {"type": "string"},
                                    "text": {"type": "string"},
                                    "segments": COUNT,
                                    "encoding": {"type": "string", "enum": [GSM7, UCS2]},
                                },
                            },
                        },
                    },
                },
                "JobStatus": {
                    "type": "object",
                    "required": [
                        "job_id",
                        "state",
                        "created_at",
                        "updated_at",
                        "recipients",
                        "batches",
                        "counts",
                    ],
                    "properties": {
                        "job_id": {"type": "string"},
                        "state": {"type": "string", "enum": [s.value for s in JobState]},
                        "created_at": TIME,
                        "updated_at": TIME,
                        "message_length": COUNT,
                        "recipients": recipients,
                        "batches": {
                            "type": "object",
                            "required": ["total", "pending", "submitted", "failed"],
                            "properties": {
                                k: COUNT
                                for k in ("total", "pending", "submitted", "failed", "cancelled")
                            },
                        },
                        "counts": {
                            "type": "object",
                            "required": [s.value for s in Status],
                            "properties": {s.value: COUNT for s in Status},
                        },
                        "closed": {
                            "type": "string",
                            "description": "Why the job stopped waiting for reports.",
                        },
                        "halted": {
                            "type": "string",
                            "description": "Why the job's unsent batches were failed.",
                        },
                        "erased_at": TIME,
                        "send_at": TIME,
                        "retry_of": {"type": "string"},
                        "billed": {
                            "type": "object",
                            "description": "What Plivo billed, from the delivery reports: "
                            "Units and TotalAmount, once per recipient.",
                            "required": ["units", "amount"],
                            "properties": {
                                "units": COUNT,
                                "amount": {"type": "number", "minimum": 0},
                            },
                        },
                        "progress": {
                            "type": "object",
                            "description": "While the job is queued or sending: the messages a "
                            "second it gets at the pace, the recipients not yet handed to Plivo, "
                            "and when its last message should leave Plivo's queue.",
                            "required": ["rate_per_second", "remaining", "estimated_completion_at"],
                            "properties": {
                                "rate_per_second": {"type": "number", "minimum": 0},
                                "remaining": COUNT,
                                "estimated_completion_at": TIME,
                            },
                        },
                    },
                },
                "Message": {
                    "type": "object",
                    "required": [
                        "number",
                        "message_uuid",
                        "status",
                        "error_code",
                        "error",
                        "updated_at",
                    ],
                    "properties": {
                        "number": {"type": "string"},
                        "message_uuid": {"type": ["string", "null"]},
                        "status": {"type": "string", "enum": [s.value for s in Status]},
                        "error_code": {"type": ["string", "null"]},
                        "error": {"type": ["string", "null"]},
                        "updated_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "OptOut": {
                    "type": "object",
                    "required": ["number", "opted_out"],
                    "properties": {"number": {"type": "string"}, "opted_out": {"type": "boolean"}},
                },
                "Readiness": {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {
                        "status": {"type": "string"},
                        "checks": {"type": "object"},
                        "checked_seconds_ago": {
                            "type": "number",
                            "description": "How old the verdict is: a check is shared by all "
                            "callers, and while the next one runs they get the last.",
                        },
                    },
                },
            },
        },
    }


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    return jsonify(document())
