"""The OpenAPI document is valid OpenAPI 3.1 and lists every route."""

from __future__ import annotations

from flask.testing import FlaskClient
from openapi_spec_validator import validate


def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    answer = client.get("/api/openapi.json")
    assert answer.status_code == 200
    document = answer.get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)
    for rule in client.application.url_map.iter_rules():
        # (the campaign page is HTML for people: not part of the JSON API's contract)
        if rule.endpoint != "static" and not rule.endpoint.startswith("ui.") and rule.rule != "/":
            path = rule.rule.replace("<job_id>", "{job_id}").replace("<number>", "{number}")
            assert path in document["paths"], f"{rule.rule} is not in the document"
