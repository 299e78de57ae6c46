"""Templates and contact files through the API (Flask test client, real Redis): what a submit
and a preview answer, what is stored, and what each batch will send."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import JobStore, keys
from tests.helpers import API_KEY
from tests.helpers.stack import Stack

AUTH = {"X-API-Key": API_KEY}


def post_json(client: FlaskClient, body: Any, path: str = "/api/bulk-sms") -> Any:
    return client.post(
        path, data=json.dumps(body), headers={"Content-Type": "application/json", **AUTH}
    )


def post_csv(client: FlaskClient, data: bytes, path: str = "/api/bulk-sms", **fields: str) -> Any:
    form: dict[str, Any] = {**fields, "recipients": (io.BytesIO(data), "contacts.csv")}
    return client.post(path, data=form, headers=AUTH, content_type="multipart/form-data")


def test_a_json_template_is_filled_per_recipient_and_counted_exactly(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    a, b, c, d = us_numbers(4)
    body = {
        "message": "Hi {{ Name }}, your code is {{code}}",
        "recipients": [
            {"to": a, "fields": {"name": "Ana", "code": 1234}},
            {"to": b, "fields": {"NAME": "Bo", "code": "99"}},
            {"to": c, "fields": {"name": "Cy"}},  # no code: missing_field
            {"to": a, "fields": {"name": "Twice", "code": "1"}},  # a duplicate: first row kept
            {"to": d, "fields": {"name": "Émile 😀", "code": "7"}},  # UCS-2 for this row only
        ],
    }
    answer = post_json(client, body)
    assert answer.status_code == 202, answer.get_json()
    doc = answer.get_json()
    assert doc["recipients"] == {
        "received": 5,
        "accepted": 3,
        "duplicates": 1,
        "invalid": 1,
        "suppressed": 0,
    }
    assert doc["invalid"] == [{"row": 3, "input": c, "reason": "missing_field", "field": "code"}]
    assert doc["encoding"] == "mixed"
    assert doc["encodings"] == {"GSM-7": 2, "UCS-2": 1}
    assert doc["segments_per_message"] == 1 and doc["estimated_segments"] == 3

    store = JobStore(rdb, 3600)
    job = store.job(doc["job_id"])
    assert job is not None and job.field_names == ("name", "code")
    texts = {}
    for batch in range(job.batches):
        work = store.batch_work(doc["job_id"], batch)
        texts.update({n: work.text_at(i) for i, n in enumerate(work.numbers)})
    assert texts == {
        a: "Hi Ana, your code is 1234",
        b: "Hi Bo, your code is 99",
        d: "Hi Émile 😀, your code is 7",
    }


def test_equal_texts_share_a_batch_and_the_others_fill_their_own(
    client: FlaskClient, rdb: redis.Redis, settings: Any
) -> None:
    numbers = us_numbers(7)
    towns = ["Oslo", "Rome", "Oslo", "Lima", "Rome", "Oslo", "Kyiv"]
    body = {
        "message": "Storm warning for {{town}}",
        "recipients": [
            {"to": n, "fields": {"town": t}} for n, t in zip(numbers, towns, strict=True)
        ],
    }
    doc = post_json(client, body).get_json()
    store = JobStore(rdb, 3600)
    batches = []
    for batch in range(doc["batches"]):
        work = store.batch_work(doc["job_id"], batch)
        batches.append(sorted({work.text_at(i) for i in range(len(work.numbers))}))
        assert work.run(0, 1000) == (len(work.numbers) if len(batches[-1]) == 1 else 1)
    # Oslo's three and Rome's two each in a batch of one text; Lima and Kyiv together.
    assert sorted(batches) == [
        ["Storm warning for Kyiv", "Storm warning for Lima"],
        ["Storm warning for Oslo"],
        ["Storm warning for Rome"],
    ]
    assert doc["batches"] == 3


def test_an_excel_csv_with_bom_crlf_semicolons_and_a_quoted_newline(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    a, b, c = us_numbers(3)
    data = (
        f'\ufeffFirst Name;Mobile;Note\r\nAna;{a};"two\r\nlines"\r\nBo;{b};\r\n;{c};x\r\n\r\n'
    ).encode()
    answer = post_csv(client, data, message="Hello {{first_name}}")
    assert answer.status_code == 202, answer.get_json()
    doc = answer.get_json()
    assert doc["recipients"]["accepted"] == 2
    # Row 4 as a spreadsheet numbers it: the header is row 1 and the quoted newline is a cell's.
    assert doc["invalid"] == [
        {"row": 4, "input": c, "reason": "missing_field", "field": "first_name"}
    ]
    store = JobStore(rdb, 3600)
    work = store.batch_work(doc["job_id"], 0)
    assert {work.text_at(i) for i in range(len(work.numbers))} == {"Hello Ana", "Hello Bo"}


@pytest.mark.parametrize(
    ("data", "fields", "code"),
    [
        ("phone,name\n+14155550100,Jos\xe9\n".encode("latin-1"), {}, "not_utf8"),
        (b"name,town\nAna,Oslo\n", {}, "no_phone_column"),
        (b"phone,Name,name\n+14155550100,a,b\n", {}, "duplicate_columns"),
        (b"phone,name\n+14155550100,Ana\n", {"phone_column": "cell"}, "no_phone_column"),
        (b"phone,name\n+14155550100,Ana\n", {"message": "Hi {{town}}"}, "unfilled_placeholder"),
        (b"phone,name\n+14155550100,\n", {"message": "Hi {{name}}"}, "unfilled_placeholder"),
        (b"phone,name\n+14155550100,Ana\n", {"message": "Hi {{}}"}, "invalid_template"),
        (b"phone\n+14155550100\n", {"message": "Hi {{name"}, "invalid_template"),
        (b"phone,name\n", {}, "no_recipients"),
    ],
)
def test_a_contact_file_that_cannot_be_read_is_a_422_naming_the_problem(
    client: FlaskClient, rdb: redis.Redis, data: bytes, fields: dict[str, str], code: str
) -> None:
    before = set(rdb.keys("bulksms:*"))
    answer = post_csv(client, data, **{"message": "Hi {{name}}", **fields})
    assert (answer.status_code, answer.get_json()["error"]) == (422, code), answer.get_json()
    assert set(rdb.keys("bulksms:*")) == before  # nothing stored


def test_a_row_too_long_once_filled_is_refused_alone(client: FlaskClient) -> None:
    a, b = us_numbers(2)
    body = {
        "message": "{{text}}",
        "recipients": [
            {"to": a, "fields": {"text": "x" * 1601}},
            {"to": b, "fields": {"text": "y" * 200}},
        ],
    }
    doc = post_json(client, body).get_json()
    assert doc["invalid"] == [{"row": 1, "input": a, "reason": "too_long", "field": "message"}]
    assert doc["segments_per_message"] == 2 and doc["estimated_segments"] == 2


def test_a_row_that_fills_to_nothing_visible_is_refused_alone(client: FlaskClient) -> None:
    a, b = us_numbers(2)
    body = {
        "message": "\u200b{{text}}",
        "recipients": [
            {"to": a, "fields": {"text": "\ufeff\u2060"}},  # (a value, but an invisible one)
            {"to": b, "fields": {"text": "Hello"}},
        ],
    }
    doc = post_json(client, body).get_json()
    assert doc["invalid"] == [{"row": 1, "input": a, "reason": "empty_message"}]
    assert doc["recipients"]["accepted"] == 1


def test_segments_differ_by_row_and_the_spend_guard_counts_them_exactly(
    client: FlaskClient,
) -> None:
    a, b = us_numbers(2)
    body: dict[str, Any] = {
        "message": "{{text}}",
        "recipients": [
            {"to": a, "fields": {"text": "short"}},
            {"to": b, "fields": {"text": "z" * 400}},  # 3 segments
        ],
    }
    refused = post_json(client, {**body, "max_segments": 3})
    assert refused.status_code == 422 and refused.get_json()["details"]["segments"] == 4
    accepted = post_json(client, {**body, "max_segments": 4})
    assert accepted.status_code == 202
    assert accepted.get_json()["segments_per_message"] == {"min": 1, "max": 3}


def test_preview_answers_like_a_submit_and_writes_nothing(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    numbers = us_numbers(8)
    rows = "".join(f"{n},Name{i},{'é' if i == 2 else ''}\n" for i, n in enumerate(numbers))
    data = ("phone,name,accent\n" + rows + "junk,x,\n").encode()
    before = {k: rdb.type(k) for k in rdb.keys("*") if "bulksms:rl" not in k}
    answer = post_csv(client, data, "/api/bulk-sms/preview", message="Hi {{name}}!")
    assert answer.status_code == 200, answer.get_json()
    doc = answer.get_json()
    assert doc["recipients"]["accepted"] == 8 and doc["recipients"]["invalid"] == 1
    assert doc["invalid"] == [{"row": 10, "input": "junk", "reason": "not_a_number"}]
    assert doc["segments_histogram"] == {"1": 8}
    assert doc["messages"][:2] == [
        {"to": numbers[0], "text": "Hi Name0!", "segments": 1, "encoding": "GSM-7"},
        {"to": numbers[1], "text": "Hi Name1!", "segments": 1, "encoding": "GSM-7"},
    ]
    assert len(doc["messages"]) == 5
    after = {k: rdb.type(k) for k in rdb.keys("*") if "bulksms:rl" not in k}
    assert after == before


def test_fields_are_listed_exported_neutralised_and_erased(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    a, b = us_numbers(2)
    data = f'phone,name\n{a},=HYPERLINK("http://x")\n{b},"Bo, Jr."\n'.encode()
    doc = post_csv(client, data, message="Hi {{name}}").get_json()
    job_id = doc["job_id"]
    listed = client.get(f"/api/bulk-sms/{job_id}/messages", headers=AUTH).get_json()
    assert {m["number"]: m["fields"] for m in listed["messages"]} == {
        a: {"name": '=HYPERLINK("http://x")'},
        b: {"name": "Bo, Jr."},
    }
    exported = client.get(f"/api/bulk-sms/{job_id}/messages.csv", headers=AUTH).get_data(
        as_text=True
    )
    lines = exported.splitlines()
    assert lines[0].endswith(",name")
    assert any(line.endswith(',"\'=HYPERLINK(""http://x"")"') for line in lines)
    assert any(line.endswith(',"Bo, Jr."') for line in lines)
    store = JobStore(rdb, 3600)
    job = store.job(job_id)
    assert job is not None
    assert rdb.exists(keys.fields(job_id, 0))
    store.erase(job)
    assert not rdb.exists(keys.fields(job_id, 0))


def test_a_job_of_shared_and_personal_texts_reaches_each_recipient_once_with_its_own(
    stack: Stack,
) -> None:
    """The real stack: gunicorn, a worker, the SDK and the sandbox recording each text."""
    numbers = us_numbers(1200)
    recipients: list[Any] = []
    expected: dict[str, str] = {}
    for i, number in enumerate(numbers):
        if i % 3 == 0:  # a third personal: a text of their own
            fields, text = {"name": f"N{i}", "day": "Mon"}, f"Hi N{i}, see you Mon"
        else:  # the rest share two texts
            day = "Tue" if i % 2 else "Wed"
            fields, text = {"name": "team", "day": day}, f"Hi team, see you {day}"
        recipients.append({"to": number, "fields": fields})
        expected[number] = text
    recipients.append("+12015550100")  # a plain number: no fields, refused (missing_field)
    answer = stack.submit({"message": "Hi {{name}}, see you {{day}}", "recipients": recipients})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json()["recipients"]["invalid"] == 1
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()

    sent = stack.sandbox.messages
    assert sorted(m["dst"] for m in sent) == sorted(numbers)  # each once
    assert {m["dst"]: m["text"] for m in sent} == expected  # each its own text
    calls = Counter(m["api_id"] for m in sent)
    # The 800 of the two shared texts go in bulk calls (a batch each: at most 1000 numbers);
    # the 400 personal ones one call each.
    assert len(calls) == 400 + 2
    assert sum(doc["counts"].values()) == 1200
    stack.counts_match_the_sandbox(job_id)


def test_a_retry_sends_each_failed_recipient_its_own_text_again(stack: Stack) -> None:
    stack.sandbox.faults.update({"undelivered_rate": 0.3, "failed_rate": 0.2})
    numbers = us_numbers(150)
    recipients = [{"to": n, "fields": {"n": str(i)}} for i, n in enumerate(numbers)]
    body = {"message": "{{{{ref}} #{{n}}", "recipients": recipients}
    job_id = stack.submit(body).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    expected = {
        m["dst"]: m["text"]
        for m in stack.sandbox.messages
        if m["status"] in ("failed", "undelivered") and m["error_code"] in ("20", "80")
    }
    assert expected
    assert all(text == "{{ref}} #" + str(numbers.index(n)) for n, text in expected.items())
    stack.sandbox.faults.update({"undelivered_rate": 0.0, "failed_rate": 0.0})
    before = len(stack.sandbox.messages)
    answer = requests.post(
        f"{stack.base_url}/api/bulk-sms/{job_id}/retry", headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    retry_id = answer.json()["job_id"]
    stack.wait_for(retry_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    assert {m["dst"]: m["text"] for m in stack.sandbox.messages[before:]} == expected


def test_an_idempotency_key_covers_the_contact_file_itself(client: FlaskClient) -> None:
    a, b = us_numbers(2)
    first = f"phone,name\n{a},Ana\n".encode()
    key = {"Idempotency-Key": "contacts-1"}

    def send(data: bytes) -> Any:
        form = {"message": "Hi {{name}}", "recipients": (io.BytesIO(data), "c.csv")}
        return client.post(
            "/api/bulk-sms", data=form, headers={**AUTH, **key}, content_type="multipart/form-data"
        )

    made = send(first)
    assert made.status_code == 202
    again = send(first)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["job_id"] == made.get_json()["job_id"]
    other = send(f"phone,name\n{b},Bo\n".encode())  # the same key with another file
    assert (other.status_code, other.get_json()["error"]) == (409, "idempotency_key_reused")


@pytest.mark.parametrize(
    ("form", "extra", "status", "code"),
    [
        ({"message": ["Hi {{name}}", "Bye {{name}}"]}, None, 400, "duplicate_field"),
        ({"message": "Hi {{name}}"}, "recipients", 400, "duplicate_field"),
        ({"message": "Hi {{name}}", "priority": "x"}, None, 422, "invalid_priority"),
        ({"message": "Hi {{name}}", "max_segments": "\u0663"}, None, 400, "invalid_field"),
        (
            {"message": "Hi {{name}}", "expiry_seconds": "\u0661\u0662\u0660"},
            None,
            400,
            "invalid_field",
        ),
        ({"message": "x" * 6401}, None, 422, "message_too_long"),
        (
            {"message": " ".join(f"{{{{f{i}}}}}" for i in range(21))},
            None,
            422,
            "too_many_placeholders",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/api/bulk-sms", "/api/bulk-sms/preview"])
def test_a_form_that_is_not_what_it_seems_is_refused_and_changes_nothing(
    client: FlaskClient,
    rdb: redis.Redis,
    path: str,
    form: dict[str, Any],
    extra: str | None,
    status: int,
    code: str,
) -> None:
    before = {k for k in rdb.keys("*") if "bulksms:rl" not in k}
    data: dict[str, Any] = {
        **form,
        "recipients": (io.BytesIO(b"phone,name\n+14155550100,A\n"), "c.csv"),
    }
    if extra:
        data["recipients"] = [data["recipients"], (io.BytesIO(b"phone\n+14155550101\n"), "d.csv")]
    answer = client.post(path, data=data, headers=AUTH, content_type="multipart/form-data")
    assert (answer.status_code, answer.get_json()["error"]) == (status, code), answer.get_json()
    assert {k for k in rdb.keys("*") if "bulksms:rl" not in k} == before


@pytest.mark.parametrize("path", ["/api/bulk-sms", "/api/bulk-sms/preview"])
def test_a_form_field_that_is_not_utf8_is_refused(client: FlaskClient, path: str) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="message"\r\n\r\nHi {{name}} \xe9\r\n'
        b'--b\r\nContent-Disposition: form-data; name="recipients"; filename="c.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nphone,name\n+14155550100,A\n\r\n--b--\r\n"
    )
    answer = client.post(
        path, data=body, headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (answer.status_code, answer.get_json()["error"]) == (400, "not_utf8")


def test_a_lone_surrogate_in_the_message_is_a_422_not_a_500(client: FlaskClient) -> None:
    answer = client.post(
        "/api/bulk-sms",
        data='{"recipients": ["+14155550100"], "message": "Hi \\ud800"}',
        headers={"Content-Type": "application/json", **AUTH},
    )
    assert (answer.status_code, answer.get_json()["error"]) == (422, "invalid_message")


def test_a_carriage_return_in_a_value_cannot_start_a_row_in_the_export(
    client: FlaskClient,
) -> None:
    (a,) = us_numbers(1)
    body = {
        "message": "Hi {{name}}",
        "recipients": [{"to": a, "fields": {"name": "Ann\r=cmd|' /C calc'!A0"}}],
    }
    job_id = post_json(client, body).get_json()["job_id"]
    exported = client.get(f"/api/bulk-sms/{job_id}/messages.csv", headers=AUTH).get_data()
    parsed = list(csv.reader(io.StringIO(exported.decode(), newline="")))
    assert len(parsed) == 2 and parsed[1][-1] == "Ann\r=cmd|' /C calc'!A0"
