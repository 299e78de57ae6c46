"""The OpenAPI document: valid OpenAPI 3.1, and the live service keeps to it (schemathesis)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.helpers import API_KEY
from tests.helpers.stack import Stack

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def test_the_live_service_keeps_to_its_document(stack: Stack) -> None:
    """schemathesis generates requests for every operation (valid and not) against gunicorn:
    no 5xx, and every answer is one the document describes."""
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/api/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        both = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=both)
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(
                base_url=stack.base_url, headers={"X-API-Key": API_KEY}, checks=CHECKS
            )

        exercise()
        tested.append(operation.label)
    assert len(tested) == 22, tested  # all but the document itself, which schemathesis skips
