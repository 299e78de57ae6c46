"""The submit body's schema: its refusals are the API's answers, word for word, in the order the
API has always judged a body's faults; and it is what the OpenAPI document shows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bulksms.api import submission
from bulksms.api.errors import ApiError
from bulksms.api.openapi import document
from bulksms.api.schemas import EXPIRY_RANGE, SubmitRequest, refusal
from bulksms.config import Settings
from tests.helpers import SENDER

OK = {"recipients": ["+14155550100"], "message": "x"}


def answer(body: Any, settings: Settings) -> tuple[int, str, str, Any]:
    """What `POST /api/bulk-sms` answers, short of the opt-outs (which need Redis)."""
    with pytest.raises(ApiError) as refused:
        sub = submission.read_submission(body, settings)
        submission.check_spend(sub, settings)
        sub.priority()
    error = refused.value
    return error.status, error.code, error.message, error.details


def field(name: str, message: str) -> tuple[int, str, str, Any]:
    return 400, "invalid_field", message, {"field": name}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], (400, "invalid_body", "The body must be a JSON object.", None)),
        (
            {**OK, "zz": 1, "aa": 2},
            (400, "unknown_field", "Unknown field(s): aa, zz.", {"fields": ["aa", "zz"]}),
        ),
        (
            {"message": "x"},
            field(
                "recipients",
                "recipients must be a list of phone numbers (strings) or recipient objects.",
            ),
        ),
        (
            {**OK, "recipients": ["+14155550100", 1]},
            field(
                "recipients",
                "recipients must be a list of phone numbers (strings) or recipient objects.",
            ),
        ),
        (
            {**OK, "recipients": []},
            (422, "no_recipients", "recipients must not be empty.", {"field": "recipients"}),
        ),
        ({**OK, "message": None}, field("message", "message must be a string.")),
        ({**OK, "sender": 1}, field("sender", "sender must be a string.")),
        ({**OK, "powerpack_uuid": []}, field("powerpack_uuid", "powerpack_uuid must be a string.")),
        ({**OK, "default_region": 1}, field("default_region", "default_region must be a string.")),
        ({**OK, "callback_url": 1}, field("callback_url", "callback_url must be a string.")),
        ({**OK, "send_at": 1}, field("send_at", "send_at must be an ISO 8601 time string.")),
        (
            {**OK, "expiry_seconds": True},
            field("expiry_seconds", "expiry_seconds must be a whole number."),
        ),
        (
            {**OK, "expiry_seconds": 60.0},
            field("expiry_seconds", "expiry_seconds must be a whole number."),
        ),
        (
            {**OK, "expiry_seconds": EXPIRY_RANGE[1] + 1},
            (
                422,
                "invalid_expiry",
                "expiry_seconds must be between 5 and 10799.",
                {"field": "expiry_seconds", "min": 5, "max": 10799},
            ),
        ),
        (
            {**OK, "max_segments": 0},
            field("max_segments", "max_segments must be a whole number of at least 1."),
        ),
        (
            {**OK, "max_segments": False},
            field("max_segments", "max_segments must be a whole number of at least 1."),
        ),
        (
            {**OK, "priority": None},
            (
                422,
                "invalid_priority",
                'priority must be "normal" or "high".',
                {"field": "priority"},
            ),
        ),
        # Several faults: the first in the order the API has always judged them, custom checks
        # and the schema's interleaved (the length before the message's type, the numbers before
        # the priority).
        (
            {"recipients": [], "message": 5, "priority": "urgent"},
            (422, "no_recipients", "recipients must not be empty.", {"field": "recipients"}),
        ),
        (
            {"recipients": ["+14155550100"] * 3, "message": 5},
            (
                413,
                "too_many_recipients",
                "A request may carry at most 2 recipients; this one has 3.",
                {"limit": 2, "received": 3},
            ),
        ),
        ({**OK, "sender": "++1", "expiry_seconds": "1"}, (422, "invalid_sender")),
        ({**OK, "recipients": ["oops"], "priority": "urgent"}, (422, "no_valid_recipients")),
        ({**OK, "max_segments": "3", "priority": "urgent"}, (400, "invalid_field")),
    ],
)
def test_refusals_are_the_apis_answers(
    body: Any, expected: tuple[Any, ...], settings: Settings
) -> None:
    got = answer(body, replace(settings, max_recipients=2))
    assert got[: len(expected)] == expected


def test_a_lone_surrogate_is_judged_by_content_not_refused_as_a_wrong_type(
    settings: Settings,
) -> None:
    """JSON allows "\\ud800"; pydantic's own str check would call it no string (400)."""
    assert answer({**OK, "sender": "\ud800"}, settings)[1] == "invalid_sender"
    assert answer({**OK, "send_at": "\ud800"}, settings)[1] == "invalid_send_at"


def test_a_valid_body_reads_without_copying_its_recipients(settings: Settings) -> None:
    body = {**OK, "recipients": [f"+1415555{n:04d}" for n in range(2000)], "priority": "high"}
    sub = submission.read_submission(body, settings)
    assert sub.body.fields.recipients is body["recipients"]
    assert sub.priority() == "high" and sub.sending.src == SENDER


def test_every_field_answers_any_schema_error() -> None:
    for name in SubmitRequest.model_fields:
        assert refusal(SubmitRequest, name, "any_error_type").message.startswith(name)


def test_the_document_shows_the_schema_the_api_validates_with() -> None:
    shown = document()["components"]["schemas"]["SubmitRequest"]
    assert shown["additionalProperties"] is False
    assert sorted(shown["required"]) == ["message", "recipients"]
    assert set(shown["properties"]) == set(SubmitRequest.model_fields)
    assert shown["properties"]["priority"]["enum"] == ["normal", "high"]
    expiry = shown["properties"]["expiry_seconds"]["anyOf"][0]
    assert (expiry["minimum"], expiry["maximum"]) == EXPIRY_RANGE
    assert "title" not in shown["properties"]["message"]
