"""The CLI's own parsing, without a service to talk to."""

from __future__ import annotations

import http.server
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import requests
from click.testing import CliRunner, Result
from werkzeug.formparser import FormDataParser

from bulksms.api.contacts import PHONE_COLUMNS
from bulksms.api.schemas import SubmitForm, SubmitRequest
from bulksms.cli import client as cli_client
from bulksms.cli.client import Client, ClientError, Multipart, read_numbers
from bulksms.cli.main import _seekable, main


def test_numbers_from_text_and_csv_files() -> None:
    assert read_numbers("+14155550100\n\n# note\n(415) 555-0101\n") == [
        "+14155550100",
        "(415) 555-0101",
    ]
    assert read_numbers("name,phone\nAda,+14155550100\nBob,+14155550101\n") == [
        "+14155550100",
        "+14155550101",
    ]
    assert read_numbers("+14155550100,Ada\n+14155550101,Bob\n") == ["+14155550100", "+14155550101"]
    assert read_numbers("Name;Mobile\nAda;+14155550100\n") == ["+14155550100"]
    assert read_numbers("contact,note\n+14155550100,x\n") == ["+14155550100"]


@dataclass
class Upload:
    """A multipart body as the API's Werkzeug reads it."""

    form: dict[str, str]
    file: bytes
    filename: str | None
    content_type: str


def parse_multipart(body: Multipart) -> Upload:
    sent = b"".join(body)
    assert len(sent) == len(body)  # the Content-Length requests sends
    parser = FormDataParser()
    _, form, files = parser.parse(
        io.BytesIO(sent), "multipart/form-data", len(sent), {"boundary": body.boundary}
    )
    assert list(files) == ["recipients"]
    part = files["recipients"]
    with part.stream:  # (a big one in a temporary file)
        return Upload(form.to_dict(), part.read(), part.filename, part.content_type)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str, str, Any]]:
    """Every API call the CLI makes, as (url, key, path, body): the JSON body, or an upload as
    the API reads it. Answered with a job, or a preview."""
    made: list[tuple[str, str, str, Any]] = []

    def call(self: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = kwargs.get("data")
        if isinstance(data, Multipart):
            assert kwargs["headers"]["Content-Type"] == data.content_type
            body: Any = parse_multipart(data)  # now: the command closes its file
        else:
            body = kwargs.get("json")
        made.append((self.url, self.key, path, body))
        return dict(PREVIEW if path.endswith("/preview") else JOB)

    monkeypatch.setattr(Client, "_call", call)
    monkeypatch.chdir(tmp_path)  # no .env, no data/api-key
    for name in ("BULKSMS_URL", "BULKSMS_API_KEY", "API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return made


JOB = {
    "job_id": "0" * 32,
    "state": "queued",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "recipients": {"received": 1, "accepted": 1, "duplicates": 0, "invalid": 0},
    "invalid": [],
    "batches": 1,
    "counts": {},
    "encoding": "GSM-7",
    "estimated_segments": 1,
}


PREVIEW = {
    "recipients": {"received": 9, "accepted": 6, "duplicates": 1, "invalid": 2, "suppressed": 0},
    "invalid": [
        {"row": 4, "input": "junk", "reason": "not_a_number"},
        {"row": 7, "input": "+14155550107", "reason": "missing_field", "field": "name"},
    ],
    "encoding": "mixed",
    "encodings": {"GSM-7": 5, "UCS-2": 1},
    "segments_per_message": {"min": 1, "max": 2},
    "estimated_segments": 7,
    "segments_histogram": {"1": 5, "2": 1},
    "estimated_cost": 0.0525,
    "messages": [
        {"to": "+14155550100", "text": "Hi Ada!", "segments": 1, "encoding": "GSM-7"},
        {"to": "+14155550101", "text": "Hi Émile,\nsee you", "segments": 2, "encoding": "UCS-2"},
    ],
}


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str = "", code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_send_has_an_option_for_every_field_of_the_request() -> None:
    send = main.commands["send"]
    options = {param.name: param for param in send.params if isinstance(param, click.Option)}
    for name in SubmitRequest.model_fields.keys() - {"recipients"}:
        assert f"--{name.replace('_', '-')}" in options[name].opts
    assert options["message"].required and "-m" in options["message"].opts
    assert "--region" in options["default_region"].opts  # the flag scripts already use


def test_send_builds_the_body_from_the_field_names(calls: list[Any]) -> None:
    invoke(
        "send", "-", "-m", "hello", "--region", "US", "--sender", "", "--priority", "high",
        "--max-segments", "3", "--expiry-seconds", "60", "--send-at", "2030-01-01T09:00:00Z",
        "--key", "k",
        stdin="+14155550100\n(415) 555-0101\n",
    )  # fmt: skip
    [(_, _, path, body)] = calls
    assert path == "/api/bulk-sms"
    assert body == {
        "recipients": ["+14155550100", "(415) 555-0101"],
        "message": "hello",
        "default_region": "US",  # an empty --sender is the service's sender, as it always was
        "priority": "high",
        "max_segments": 3,
        "expiry_seconds": 60,
        "send_at": "2030-01-01T09:00:00Z",
    }
    SubmitRequest.model_validate(body)  # what the CLI sends, the API's schema reads


def test_url_and_key_from_the_group_the_command_or_the_environment(calls: list[Any]) -> None:
    job_id = "0" * 32
    invoke("pause", job_id, env={"BULKSMS_URL": "http://env:1", "API_KEY": "a,b"})
    invoke("--url", "http://group:2", "--key", "g", "resume", job_id)
    invoke("--url", "http://group:2", "--key", "g", "retry", job_id, "--url", "http://cmd:3")
    invoke("cancel", job_id, "--key", "c", env={"BULKSMS_API_KEY": "e", "API_KEY": "x"})
    assert [(url, key) for url, key, _, _ in calls] == [
        ("http://env:1", "a"),  # API_KEY may list several keys: the first is used
        ("http://group:2", "g"),
        ("http://cmd:3", "g"),
        ("http://127.0.0.1:8000", "c"),
    ]


def test_the_phone_columns_are_the_apis() -> None:
    assert cli_client.PHONE_COLUMNS == PHONE_COLUMNS


def test_a_multipart_body_holds_the_file_byte_for_byte_and_the_fields(tmp_path: Path) -> None:
    # Three blocks and a bit; a BOM, CRLF and LF, a boundary-like line, bytes that are not UTF-8.
    row = b'+14155550100,Ada,"a, b"\r\n--x--\n'
    rows = 3 * cli_client.UPLOAD_BLOCK // len(row) + 1
    data = b"\xef\xbb\xbfphone,name,note\r\n" + row * rows
    data += b"\xff\xfe\r\n"
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    fields = {"message": "Hi {{name}},\nsee you é", "max_segments": "3", "phone_column": "phone"}
    read: list[int] = []
    with path.open("rb") as file:
        body = Multipart(fields, file, 'my "list".csv')
        body.on_read = read.append
        upload = parse_multipart(body)
        assert sum(read) == len(data) and max(read) == cli_client.UPLOAD_BLOCK
        assert upload.file == data
        assert upload.form == fields
        assert upload.filename == 'my "list".csv'  # (escaped as browsers do, read back)
        assert upload.content_type == "text/csv"
        assert body.content_type == f"multipart/form-data; boundary={body.boundary}"
        # requests streams it (the body is the object, read as it is sent), with its length.
        prepared = requests.Request("POST", "http://api/", data=body).prepare()
        assert prepared.body is body and "Transfer-Encoding" not in prepared.headers
        assert prepared.headers["Content-Length"] == str(len(body))
        # Sent again (a redirect that keeps the body): the same bytes, read from the file again.
        assert parse_multipart(body) == upload
    assert (
        Multipart({}, io.BytesIO(b"x"), "a").boundary != Multipart({}, io.BytesIO(), "a").boundary
    )


def test_a_multipart_body_is_the_file_from_where_it_stood() -> None:
    stream = io.BytesIO(b"skipped\nphone\n+14155550100\n")
    stream.readline()
    body = Multipart({"message": "m"}, stream, "contacts.csv")
    assert body.size == len(b"phone\n+14155550100\n")
    assert parse_multipart(body).file == b"phone\n+14155550100\n"


def test_standard_input_from_a_pipe_is_read_once_and_kept_to_upload() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"phone\n+14155550100\n")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, click.Context(main) as context:
        assert not pipe.seekable()
        kept = _seekable(pipe)
        assert kept.readline() == b"phone\n"
        kept.seek(0)
        assert kept.read() == b"phone\n+14155550100\n"
    assert context and kept.closed  # with the command


@pytest.mark.parametrize(
    ("content", "options", "upload"),
    [
        ("+14155550100\n(415) 555-0101\n", [], False),  # a list of numbers: JSON, as always
        ("name,msisdn\nAda,+14155550100\n", [], False),  # a column the API does not look for
        ("name,phone\nAda,+14155550100\n", [], True),  # the API finds the numbers itself
        ("Name;Phone Number\nAda;+14155550100\n", [], True),  # as the API reads headers
        ('"name","MOBILE"\nAda,+14155550100\n', [], True),
        ("+14155550100\n", ["--csv"], True),
        ("cell\n+14155550100\n", ["--phone-column", "cell"], True),
        ("name,msisdn\nAda,+14155550100\n", ["-m", "Hi {{ Name }}"], True),
        ("name,phone\nAda,+14155550100\n", ["-m", "{{{{ not a placeholder"], True),
        ("+14155550100\n", ["-m", "{{{{ not a placeholder"], False),
    ],
)
def test_send_posts_json_or_uploads_the_file(
    calls: list[Any], tmp_path: Path, content: str, options: list[str], upload: bool
) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(content.encode())
    options = options if "-m" in options else ["-m", "hello", *options]
    invoke("send", str(path), *options, "--key", "k")
    [(_, _, _, body)] = calls
    if not upload:
        assert isinstance(body, dict) and body["recipients"] == read_numbers(content)
        return
    assert isinstance(body, Upload)
    assert body.file == content.encode() and body.filename == "list.csv"
    assert body.form["message"] == options[1]
    assert body.form.get("phone_column") == ("cell" if "--phone-column" in options else None)


def test_an_upload_carries_the_fields_as_form_fields(calls: list[Any]) -> None:
    csv_text = "phone,name\r\n+14155550100,Ada\r\n"
    invoke(
        "send", "-", "-m", "Hi {{name}}", "--region", "US", "--sender", "", "--priority", "high",
        "--max-segments", "3", "--phone-column", "phone", "--key", "k", "--idempotency-key", "i",
        stdin=csv_text,
    )  # fmt: skip
    [(_, _, path, body)] = calls
    assert path == "/api/bulk-sms"
    assert body == Upload(
        {
            "message": "Hi {{name}}",
            "default_region": "US",  # an empty --sender is the service's, as in JSON
            "priority": "high",
            "max_segments": "3",
            "phone_column": "phone",
        },
        csv_text.encode(),
        "contacts.csv",  # standard input has no name of its own
        "text/csv",
    )
    assert set(body.form) <= set(SubmitForm.model_fields)  # what the API's form reads


def test_send_and_preview_have_a_phone_column_option() -> None:
    for name in ("send", "preview"):
        options = {p.name: p for p in main.commands[name].params if isinstance(p, click.Option)}
        assert options["phone_column"].opts == ["--phone-column"]
        assert options["message"].required


def test_a_malformed_template_is_a_usage_error_before_any_call(calls: list[Any]) -> None:
    result = invoke("send", "-", "-m", "Hi {{ first name }}", "--key", "k", stdin="x\n", code=2)
    assert "Invalid value for '-m' / '--message'" in result.output
    assert "character 4" in result.output and "{{{{" in result.output
    assert calls == []


def test_preview_prints_the_counts_the_invalid_rows_the_segments_and_the_first_messages(
    calls: list[Any],
) -> None:
    out = invoke(
        "preview", "-", "-m", "Hi {{name}}!", "--key", "k", stdin="phone,name\n+14155550100,Ada\n"
    ).output
    [(_, _, path, body)] = calls
    assert path == "/api/bulk-sms/preview" and isinstance(body, Upload)
    assert out.splitlines() == [
        "recipients: 9 received, 6 accepted, 1 duplicates, 2 invalid, 0 suppressed",
        "  invalid: row 4: 'junk' (not_a_number)",
        "  invalid: row 7: '+14155550107' (missing_field: name)",
        "encoding: mixed (5 GSM-7, 1 UCS-2)",
        "segments: 7 in all, 1 to 2 per message",
        "  5 messages of 1 segment",
        "  1 message of 2 segments",
        "estimated cost: 0.0525",
        "first 2 messages, as sent:",
        "  to +14155550100 (1 segment, GSM-7):",
        "    Hi Ada!",
        "  to +14155550101 (2 segments, UCS-2):",
        "    Hi Émile,",
        "    see you",
    ]


def test_preview_json_prints_the_document(calls: list[Any]) -> None:
    import json

    out = invoke("preview", "-", "-m", "hi", "--json", "--key", "k", stdin="+14155550100\n")
    [(_, _, path, body)] = calls
    assert path == "/api/bulk-sms/preview" and body["recipients"] == ["+14155550100"]
    assert json.loads(out.output) == PREVIEW


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """An HTTP server on 127.0.0.1 that sends /away/... to `localhost` (another host to a
    client, the same server here) and /here/... to itself; it records (path, X-API-Key)."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("X-API-Key")))
            port = self.server.server_address[1]
            if self.path.startswith(("/away", "/here")):
                host = "localhost" if self.path.startswith("/away") else "127.0.0.1"
                self.send_response(307)
                self.send_header("Location", f"http://{host}:{port}/landed")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_host_is_not_followed_with_the_key(
    redirecting: tuple[str, list[tuple[str, str | None]]],
) -> None:
    url, seen = redirecting
    with pytest.raises(ClientError, match="307 redirect to http://localhost:.* another host"):
        Client(url, "secret")._call("GET", "/away")
    with pytest.raises(ClientError, match="another host"):
        list(Client(f"{url}/away", "secret").export("x", None))
    assert seen == [("/away", "secret"), ("/away/api/bulk-sms/x/messages.csv", "secret")]
    seen.clear()
    assert Client(url, "secret")._call("GET", "/here") == {}  # the same host: followed
    assert seen == [("/here", "secret"), ("/landed", "secret")]


@pytest.mark.parametrize(
    "new", ["http://127.0.0.1:99999/x", "http://[::1/x", "http://127.0.0.1:port/x"]
)
def test_a_redirect_to_an_address_python_cannot_read_is_not_the_same_host(new: str) -> None:
    # (urlsplit or its port raises on these: refused, not a traceback)
    assert not cli_client._same_host("http://127.0.0.1:8000/a", new)
    assert cli_client._same_host("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b")
