"""The delivery-report webhook without Redis: how it reads a form, and 503 when Redis is down."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from bulksms import create_app
from bulksms.api import webhooks
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
