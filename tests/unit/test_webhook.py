"""The delivery-report webhook's form reading, without Redis."""

from __future__ import annotations

from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from bulksms.api import webhooks


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
