"""The webhooks without Redis: how they read a form and a reply's time; 503 when Redis is down."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from bulksms import create_app
from bulksms.api import webhooks
from bulksms.api.optouts import sent_at
from bulksms.config import Settings
from bulksms.devstack.up import free_port
from tests.helpers.webhook import params, report


@given(
    st.one_of(
        st.text(alphabet="ab=&%+2C3E9fz ", max_size=30),
        st.dictionaries(st.text(max_size=8), st.text(max_size=8)).map(
            lambda d: "&".join(f"{k}={v}" for k, v in d.items())
        ),
        st.text(max_size=30),
    )
)
def test_forms_are_read_as_parse_qs_reads_them(text: str) -> None:
    assert webhooks.parse_form(text) == parse_qs(text, keep_blank_values=True)


def test_redis_down_is_503_so_plivo_retries(settings: Settings) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    answer = report(create_app(down).test_client(), settings, "f" * 32, params("delivered"))
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "service_unavailable"


def test_plivo_s_message_time_is_read_as_an_instant() -> None:
    utc = datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC).timestamp()
    assert sent_at("2026-11-30 12:00:01") == utc  # no offset: UTC
    assert sent_at("2026-11-30 13:00:01+01:00") == utc
    assert sent_at("2026-11-30 12:00:01.250000+00:00") == utc + 0.25
    assert sent_at("2026-11-30T12:00:01Z") == utc
    for unreadable in ("", "yesterday", "2026-13-01 00:00:00", "9" * 40):
        assert sent_at(unreadable) is None
    # A time far ahead counts as now (a STOP's give or take the slack): later replies still
    # apply.
    ahead = sent_at("9999-12-31 23:59:59")
    assert ahead is not None and ahead <= time.time() + 301
    ahead = sent_at("9999-12-31 23:59:59", stop=False)
    assert ahead is not None and ahead <= time.time()
