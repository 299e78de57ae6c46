"""Log lines: JSON, with their context, never a secret, numbers masked."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.glogging import SafeAtoms

from bulksms import logs
from bulksms.config import Settings
from tests.helpers import API_KEY


@pytest.fixture
def lines(settings: Settings, app: Flask) -> Iterator[io.StringIO]:
    """Log lines as JSON text (configured after the app, which configures logging too)."""
    out = io.StringIO()
    logs.configure(replace(settings, redis_url="redis://:hunter22@127.0.0.1:1/0"), out)
    yield out
    logs.configure(settings)


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@contextmanager
def written_by(settings: Settings, name: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A gunicorn logger (its filter set by `logs.configure`, as the app sets it), and what it
    writes through a handler of its own, as gunicorn's are."""
    logs.configure(settings)
    out = io.StringIO()
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_secrets_never_appear_and_numbers_are_masked(
    lines: io.StringIO, settings: Settings
) -> None:
    log = logging.getLogger("bulksms.test")
    log.warning(
        "key %s token %s pw hunter22 to +14155550100 and 14155550101",
        API_KEY,
        settings.plivo_auth_token,
    )
    try:
        raise RuntimeError(f"boom {settings.plivo_auth_token} +442079460958")
    except RuntimeError:
        log.exception("failed")
    text = lines.getvalue()
    assert API_KEY not in text
    assert str(settings.plivo_auth_token) not in text
    assert "hunter22" not in text
    assert "+14155550100" not in text and "+1415555****" in text
    assert "1415555****" in text
    assert "+44207946****" in text
    first, second = records(lines)
    assert first["level"] == "WARNING" and first["logger"] == "bulksms.test"
    assert "exc_info" in second


def test_job_ids_are_not_mistaken_for_numbers() -> None:
    assert (
        logs.mask_numbers("job 3f2d8b88f15744e08f2769b9fc1e1d41")
        == "job 3f2d8b88f15744e08f2769b9fc1e1d41"
    )


def test_request_lines_carry_the_request_id(lines: io.StringIO, client: FlaskClient) -> None:
    answer = client.get(
        "/api/bulk-sms/" + "0" * 32, headers={"X-API-Key": API_KEY, "X-Request-ID": "req-123"}
    )
    assert answer.headers["X-Request-ID"] == "req-123"
    with client.application.test_request_context(headers={"X-Request-ID": "req-456"}):
        client.application.preprocess_request()
        logging.getLogger("bulksms.x").info("inside")
    assert any(r.get("request_id") == "req-456" for r in records(lines))


def test_bound_fields_reach_every_line(lines: io.StringIO) -> None:
    with logs.bound(job_id="j1", batch=3, task_id="t1"):
        logging.getLogger("celery.x").info("sending")
    (record,) = records(lines)
    assert (record["job_id"], record["batch"], record["task_id"]) == ("j1", 3, "t1")


def test_log_dir_writes_combined_and_error_files(settings: Settings, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "logs"
    logs.configure(replace(settings, log_dir=str(folder)), io.StringIO())
    try:
        logging.getLogger("bulksms.t").info("fine")
        logging.getLogger("bulksms.t").error("bad")
        assert "fine" in (folder / "combined.log").read_text()
        assert "bad" in (folder / "error.log").read_text()
        assert "fine" not in (folder / "error.log").read_text()
    finally:
        logs.configure(settings)


def test_gunicorn_request_lines_mask_numbers_in_every_form(settings: Settings) -> None:
    """gunicorn's access log has its own handler: the filter sits on its logger."""
    with written_by(settings, "gunicorn.access") as (access, out):
        for line in (
            "PUT /api/opt-outs/+447700900123 HTTP/1.1",
            "PUT /api/opt-outs/%2B447700900123 HTTP/1.1",
            "DELETE /api/opt-outs/+1%20(415)%20555-0100 HTTP/1.1",
            "GET /api/opt-outs/447700900123?x=1 HTTP/1.1",
            "GET /api/bulk-sms/ab12/recipients?to=%2B14155550100 HTTP/1.1",
            "GET /api/opt-out%73/%2B44%207911%20123456 HTTP/1.1",
        ):
            access.info('%(h)s "%(r)s" %(s)s', {"h": "127.0.0.1", "r": line, "s": "200"})
    written = out.getvalue()
    assert written.count("127.0.0.1") == 6
    for digits in ("7700900123", "5550100", "555-0100", "4155550100", "7911", "123456"):
        assert digits not in written, written
    assert "/api/opt-outs/****" in written and "recipients?to=+1415555****" in written


def test_gunicorn_request_lines_mask_numbers_written_with_separators(settings: Settings) -> None:
    """A client may put a number anywhere in its request line, Referer or User-Agent, written
    as people write them (or as a form encodes them); versions, dates and addresses stay
    readable, and a quote the client wrote changes nothing."""
    fields = {
        "h": "10.20.30.40",
        "r": "GET /api/bulk-sms?to=%2B1%20(415)%20555-0100&q=%22&since=2026-12-01 HTTP/1.1",
        "s": "200",
        "b": "4096",
        "f": 'https://example.test/?n=415.555.0199&"&m=%2B44+7911+654321&host=10.20.30.40',
        "a": "Mozilla/5.0 Chrome/120.0.6099.109 Safari/537.36 (+44 7911 123456) 07700 900321",
    }
    headers = {"{x-caller}i": "+1 415 555 0123", "{raw_uri}e": "/x?to=%2B44%207911%20222333"}
    with written_by(settings, "gunicorn.access") as (access, out):
        access.info('%(h)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', SafeAtoms(fields))
        # (a format names a header as it likes; gunicorn keeps them lowercase)
        access.info("%({X-Caller}i)s %({RAW_URI}e)s", SafeAtoms(headers))
    written = out.getvalue()
    for digits in ("555-0100", "555.0199", "7911", "123456", "654321", "900321", "0123", "222"):
        assert digits not in written, written
    assert written.count("****") == 7, written
    kept = ("since=2026-12-01", "host=10.20.30.40", "Chrome/120.0.6099.109", " 4096 ", "(****)")
    for text in kept:
        assert text in written, written


def test_an_opt_out_path_of_endless_spaces_is_masked_at_once(settings: Settings) -> None:
    """The opt-out path's mask reads a run of spaces once, not once a position (a client's
    User-Agent could hold thousands)."""
    logs.configure(settings)
    access = logging.getLogger("gunicorn.access")
    record = access.makeRecord(
        access.name,
        logging.INFO,
        __file__,
        0,
        '"%(a)s"',
        ({"a": "/api/opt-outs/" + " " * 50_000},),
        None,
    )
    started = time.process_time()
    assert access.filter(record)
    assert time.process_time() - started < 0.5  # (the old pattern took some 20 s on this)
    assert record.getMessage().startswith('"/api/opt-outs/****')


def test_gunicorn_error_lines_mask_numbers_written_with_separators(settings: Settings) -> None:
    """gunicorn's error log quotes a request line it could not read: a number with spaces in
    its path splits that line where gunicorn looks for the HTTP version."""
    with written_by(settings, "gunicorn.error") as (error, out):
        error.error(
            "Invalid request from ip=%s: %s",
            "10.20.30.40",
            "Invalid HTTP Version: '20 7946 0731 HTTP/1.1'",
        )
        error.error("Invalid request: %s", "GET /x?to=%2B44%207911%20123456 HTTP/1.1 (pid: 4242)")
        # gunicorn's own lines are its own: its address and pid (no number, however shaped).
        error.info("Booting worker with pid: %s", 31337)
        error.info("Listening at: %s (%s)", "http://127.0.0.1:8000", 12345)
        error.info("Workers %s %s %s", 1234, 5678, 91011)
        error.warning("Invalid request from ip=127.0.0.1: Invalid URI '/x?y=%2525'")
    written = out.getvalue()
    for digits in ("7946", "0731", "7911", "123456"):
        assert digits not in written, written
    kept = (
        "ip=10.20.30.40",
        "(pid: 4242)",
        "pid: 31337",
        "HTTP/1.1",
        "http://127.0.0.1:8000 (12345)",
        "Workers 1234 5678 91011",
        "'/x?y=%2525'",
    )
    for text in kept:
        assert text in written, written


def test_gunicorn_request_lines_mask_numbers_however_oddly_written(settings: Settings) -> None:
    """Underscores, tabs and thin spaces between the digits, or the number encoded twice (from
    a second review: each reached the access log whole)."""
    with written_by(settings, "gunicorn.access") as (access, out):
        for query in (
            "to=%2B1_415_555_0108",
            "to=%2B1%09415%09555%090106",
            "to=%2B1%E2%80%89415%E2%80%89555%E2%80%890107",
            "to=%252B14155550105",
            "to=%2B%EF%BC%94%EF%BC%94 7911 1%EF%BC%92345%EF%BC%96",  # (fullwidth, encoded)
            "to=+٤٤ ٧٩١١ ١٢٣٤٥٦",  # (as decoded)
        ):
            access.info('"%(r)s"', {"r": f"GET /api/bulk-sms?{query} HTTP/1.1"})
        access.info('"%(r)s"', {"r": "GET /static/app_2024_11_30.css HTTP/1.1"})  # (a date)
        # A User-Agent whose only digits are a number's 7 (no 'HTTP/1.1' beside them)
        access.info('"%(a)s"', {"a": "app 555-0104"})
    written = out.getvalue()
    assert written.count("****") == 7 and '"app ****"' in written, written
    assert "app_2024_11_30.css" in written, written
    # (a contiguous one keeps its first 8)
    for digits in ("0108", "0106", "0107", "0105", "7911", "٧٩١١", "0104"):
        assert digits not in written, written


def test_gunicorn_request_lines_mask_numbers_written_against_letters(settings: Settings) -> None:
    """'tel14155550100' in a path, a query, a Referer or a User-Agent (helper-57's review: each
    reached the access log whole); a job's id and a UUID, however many digits they hold, kept."""
    job = "1234567890" + "ab" * 11  # (32 hex digits)
    uuids = ("6f1c2a1e-8b7d-4c55-9a0e-3f2b1d4c5e6f", "12345678-1234-4567-8901-abcdefabcdef")
    fields = {
        "r": f"GET /nope/tel14155550100/{job}/{uuids[0]}?to=x+14155550101y&c=14155550102abc"
        f"&u={uuids[1]}&i=x-{job}-y HTTP/1.1",
        "f": "http://r/tel14155550103*",
        "a": "ua14155550104 build20261204 a++14155550105b",
    }
    # (from helper-58's review: separators against letters; ids beside dashes)
    spaced = {"r": "GET /x/tel415.555.0106/tel(415)5550107/tel07911_123408 HTTP/1.1"}
    with written_by(settings, "gunicorn.access") as (access, out):
        access.info('"%(r)s" "%(f)s" "%(a)s"', SafeAtoms(fields))
        access.info('"%(r)s"', SafeAtoms(spaced))
    written = out.getvalue()
    for digits in ("0100", "0101", "0102", "0103", "0104", "0105", "0106", "0107"):
        assert f"555{digits}" not in written and f"555.{digits}" not in written, written
    assert "123408" not in written, written
    for kept in (job, *uuids, "tel1415555****", "x+1415555****y", "1415555****abc", "/tel****/"):
        assert kept in written, written
    assert "build2026****" in written, written  # (eight digits against letters: as a number)


def test_a_request_line_that_repeats_is_masked_once_and_a_long_one_is_not_kept(
    settings: Settings,
) -> None:
    """Plivo posts every report of a batch to one URL, whose job id costs the masking its slow
    way: a short text's answer is kept (`_masked_short`); a long one is masked each time and
    not kept, so what any client writes holds a bounded memory."""
    job = "0123456789abcdef0123456789abcdef"
    report = f"POST /api/webhooks/plivo/delivery-report?job={job}&batch=7 HTTP/1.1"
    numbered = f"GET /api/bulk-sms/{job}/recipients?to=%2B14155550100 HTTP/1.1"
    long_line = f"GET /api/bulk-sms/{job}/recipients?to=%2B14155550199&pad={'x' * 600} HTTP/1.1"
    logs._masked_short.cache_clear()
    with written_by(settings, "gunicorn.access") as (access, out):
        for line in (report, numbered, report, numbered, long_line, long_line):
            access.info('"%(r)s" %(s)s', SafeAtoms({"r": line, "s": "204"}))
    written = out.getvalue().splitlines()
    assert report in written[0] and written[0] == written[2], written
    assert "5550100" not in written[1] and written[1] == written[3], written
    assert "5550199" not in written[4] and written[4] == written[5], written
    kept = logs._masked_short.cache_info()
    assert (kept.hits, kept.currsize) == (2, 2)  # (the long line neither found nor kept)
