"""An alert's body (recipients as strings and a message without placeholders, nothing else) is
read without the schema (`submission._read_plain`): into the same Submission, or left to the
general reading, which answers what the fast one would not judge."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bulksms.api import submission
from bulksms.api.errors import ApiError
from bulksms.config import Settings
from tests.helpers import SENDER

PLAIN = [
    {"recipients": ["+14155550100"], "message": "Disk full on db-3"},
    {"recipients": ["+14155550100", "+1 (415) 555-0101", "+14155550100"], "message": "x"},
    {"recipients": ["+14155550100", "not a number", ""], "message": "café } ok"},
    {"recipients": ["+14155550100"], "message": "Ünïcödé ✓ " * 70},  # UCS-2, many segments
    {"recipients": ["+14155550100"], "message": "[~]^|€" * 50},  # GSM-7's extension table
]
GENERAL = [
    {"recipients": ["+14155550100"], "message": "Hi {{name}}"},  # a template
    {"recipients": ["+14155550100"], "message": "{{{{ braces"},
    {"recipients": [{"to": "+14155550100"}], "message": "x"},  # a recipient object
    {"recipients": ["+14155550100"], "message": "x", "priority": "high"},  # an option
    {"recipients": ["+14155550100"], "message": "x", "zz": 1},
    {"recipients": [SENDER, "+14155550100"], "message": "x"},  # the sender's own number
    {"recipients": [], "message": "x"},
    {"recipients": "+14155550100", "message": "x"},
    {"recipients": ["+14155550100", 7], "message": "x"},
    {"recipients": ["+14155550100"], "message": 7},
    {"recipients": ["+14155550100"], "message": " \u200b "},  # nothing to show
    {"recipients": ["+14155550100"], "message": "\ud800"},
    {"recipients": ["+14155550100"], "message": "x" * 1700},  # too long for GSM-7
    {"recipients": ["+14155550100"], "message": "x" * 7000},  # too long for a template
    {"recipients": ["nothing valid"], "message": "x"},  # refused: no valid recipient
    {"recipients": ["+14155550100"], "message": "\u2713" * 800},  # too long for UCS-2
    {"message": "x", "sender": "Acme"},
    ["+14155550100"],
]


def generally(body: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the general reading makes of `body` (and its checks after): the Submission's
    every part, or the refusal."""
    with monkeypatch.context() as patched:
        patched.setattr(submission, "_read_plain", lambda body, settings: None)
        return outcome(body, settings)


def outcome(body: Any, settings: Settings) -> Any:
    try:
        sub = submission.read_submission(body, settings)
        submission.check_spend(sub, settings)
        return (
            sub.recipients,
            sub.sending,
            sub.encoded,
            sub.template,
            sub.rows,
            sub.labels is None,
            sub.send_at,
            sub.callback_url,
            sub.personal,
            sub.priority(),
            sub.total_segments,
            submission.accepted_document(sub),
        )
    except ApiError as refused:
        return refused.status, refused.code, refused.message, refused.details


@pytest.mark.parametrize("body", PLAIN)
def test_a_plain_body_is_read_fast_into_what_the_general_reading_makes(
    body: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert submission._read_plain(body, settings) is not None
    assert outcome(body, settings) == generally(body, settings, monkeypatch)


@pytest.mark.parametrize("body", GENERAL)
def test_any_other_body_is_left_to_the_general_reading(
    body: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert submission._read_plain(body, settings) is None
    assert outcome(body, settings) == generally(body, settings, monkeypatch)


def test_the_service_s_sender_or_powerpack_is_the_plain_body_s(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = PLAIN[0]
    powerpack = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    through = replace(settings, plivo_sender_id=None, plivo_powerpack_uuid=powerpack)
    sub = submission._read_plain(body, through)
    assert sub is not None and (sub.sending.src, sub.sending.powerpack_uuid) == (None, powerpack)
    assert outcome(body, through) == generally(body, through, monkeypatch)
    nobody = replace(settings, plivo_sender_id=None, plivo_powerpack_uuid=None)
    assert submission._read_plain(body, nobody) is None
    assert outcome(body, nobody)[1] == "no_sender"


def test_a_spend_limit_still_applies(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"recipients": ["+14155550100", "+14155550101"], "message": "x"}
    capped = replace(settings, max_segments_per_job=1)
    assert outcome(body, capped)[1] == "too_many_segments"
    assert outcome(body, capped) == generally(body, capped, monkeypatch)
