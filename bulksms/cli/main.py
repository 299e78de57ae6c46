"""The `bulksms` command: run the whole system, or the Plivo sandbox alone."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
from dotenv import find_dotenv, load_dotenv

from bulksms.config import ConfigError

T = TypeVar("T")


@click.group()
def main() -> None:
    """bulksms: send one SMS text to very large recipient lists through Plivo."""
    load_dotenv(find_dotenv(usecwd=True), override=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8000, show_default=True, help="Port of the web app.")
@click.option("--flower-port", default=5555, show_default=True, help="Port of Flower.")
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where Redis keeps its append-only file, and the generated API key.",
)
def up(host: str, port: int, flower_port: int, data_dir: Path) -> None:
    """Run everything here: Redis, the web app, a worker, Flower, and the sandbox if needed."""
    from bulksms.devstack.up import up as run

    try:
        sys.exit(run(host, port, flower_port, data_dir))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8099, show_default=True)
@click.option(
    "--faults", default="{}", help="Fault switches as JSON, e.g. '{\"error_rate\": 0.1}'."
)
@click.option("--seed", type=int, default=None, help="Seed for the simulated outcomes.")
def sandbox(host: str, port: int, faults: str, seed: int | None) -> None:
    """A local Plivo Message API that posts signed delivery reports back.

    Uses PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN (made up if unset) and signs reports with
    PLIVO_WEBHOOK_SECRET, else the auth token.
    """
    from bulksms.devstack.sandbox import Sandbox, faults_from_json, make_credentials, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s sandbox %(message)s")
    auth_id, token = os.environ.get("PLIVO_AUTH_ID"), os.environ.get("PLIVO_AUTH_TOKEN")
    if not (auth_id and token):
        auth_id, token = make_credentials()
    try:
        chosen = faults_from_json(faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    box = Sandbox(auth_id, token, os.environ.get("PLIVO_WEBHOOK_SECRET"), chosen, seed)
    server = serve(box, host, port)
    click.echo(
        f"Plivo SANDBOX on http://{host}:{server.server_address[1]} "
        f"(nothing is sent to a phone). PLIVO_AUTH_ID={auth_id}",
        err=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        box.stop()
        server.shutdown()


FINAL = ("delivered", "undelivered", "failed", "rejected")
DONE = {"completed", "failed", "cancelled"}


@main.command()
@click.argument("numbers_file", type=click.File("r"), metavar="FILE")
@click.option("-m", "--message", required=True, help="The text to send.")
@click.option("--sender", help="Sender: E.164 number or alphanumeric ID (default: the service's).")
@click.option("--region", help="Region for numbers in national format, e.g. US.")
@click.option("--wait", is_flag=True, help="Show progress until every message is final.")
@click.option("--idempotency-key", help="Send it again safely: the same key makes no new job.")
@click.option("--send-at", help="Send later: ISO 8601 with a zone, e.g. 2026-12-01T09:00+01:00.")
@click.option("--priority", type=click.Choice(["normal", "high"]), help="high goes first.")
@click.option("--max-segments", type=int, help="Refuse the job if it would bill more segments.")
@click.option("--callback-url", help="POSTed the job's final status (signed) when it ends.")
@click.option("--url", help="API base URL [env BULKSMS_URL, default http://127.0.0.1:8000].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def send(
    numbers_file: IO[str],
    message: str,
    sender: str | None,
    region: str | None,
    wait: bool,
    idempotency_key: str | None,
    send_at: str | None,
    priority: str | None,
    max_segments: int | None,
    callback_url: str | None,
    url: str | None,
    key: str | None,
) -> None:
    """Send MESSAGE to every number in FILE (a CSV or text file; - for stdin)."""
    from bulksms.cli.client import read_numbers

    numbers = read_numbers(numbers_file.read())
    if not numbers:
        _fail("no numbers in the input")
    body: dict[str, Any] = {"recipients": numbers, "message": message}
    if sender:
        body["sender"] = sender
    if region:
        body["default_region"] = region
    options = {
        "send_at": send_at,
        "priority": priority,
        "max_segments": max_segments,
        "callback_url": callback_url,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    client = _client(url, key)
    answer = _guard(lambda: client.submit(body, idempotency_key))
    r = answer["recipients"]
    click.echo(
        f"job {answer['job_id']}: {r['accepted']} accepted, {r['duplicates']} duplicates, "
        f"{r['invalid']} invalid; {answer['batches']} batches, "
        f"{answer['estimated_segments']} segments ({answer['encoding']})"
    )
    for entry in answer["invalid"][:10]:
        click.echo(f"  invalid: {entry['input']!r} ({entry['reason']})", err=True)
    if wait:
        doc = _follow(client, answer["job_id"], r["accepted"])
        if doc["state"] == "failed":
            _fail(f"job {doc['job_id']} failed: no batch could be submitted")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead.")
@click.option("--url", help="API base URL [env BULKSMS_URL, default http://127.0.0.1:8000].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def status(job_id: str, as_json: bool, url: str | None, key: str | None) -> None:
    """Show where job JOB_ID stands."""
    import json

    doc = _guard(lambda: _client(url, key).status(job_id))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    rows = [
        ("job", doc["job_id"]),
        ("state", doc["state"]),
        ("created", doc["created_at"]),
        ("updated", doc["updated_at"]),
    ]
    rows += [(f"recipients {k}", v) for k, v in doc["recipients"].items()]
    rows += [(f"batches {k}", v) for k, v in doc["batches"].items()]
    rows += [(k, v) for k, v in doc["counts"].items()]
    rows += [(k, doc[k]) for k in ("closed", "halted") if k in doc]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _control(action: str, help_text: str) -> None:
    @main.command(name=action, help=help_text)
    @click.argument("job_id")
    @click.option("--url", help="API base URL [env BULKSMS_URL].")
    @click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
    def command(job_id: str, url: str | None, key: str | None) -> None:
        doc = _guard(lambda: _client(url, key).act(job_id, action))
        click.echo(f"job {doc['job_id']}: {doc['state']}")


_control("cancel", "Cancel JOB_ID: batches not yet sent are never sent.")
_control("pause", "Pause JOB_ID: no batch starts until it is resumed.")
_control("resume", "Resume JOB_ID where it stopped.")
_control("retry", "Make a new job of JOB_ID's retryable failures.")


@main.command()
@click.argument("job_id")
@click.option("--url", help="API base URL [env BULKSMS_URL].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def delete(job_id: str, url: str | None, key: str | None) -> None:
    """Erase finished JOB_ID's numbers (its counts stay)."""
    doc = _guard(lambda: _client(url, key).delete(job_id))
    click.echo(f"job {job_id}: per-recipient data erased at {doc.get('erased_at')}")


@main.command()
@click.option("--state", help="Only jobs in this state.")
@click.option("--limit", default=20, show_default=True)
@click.option("--url", help="API base URL [env BULKSMS_URL].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def jobs(state: str | None, limit: int, url: str | None, key: str | None) -> None:
    """List jobs, newest first."""
    for doc in _guard(lambda: _client(url, key).jobs(state, limit))["jobs"]:
        final = sum(doc["counts"].get(k, 0) for k in FINAL)
        click.echo(
            f"{doc['job_id']}  {doc['created_at']}  {doc['state']:<10} "
            f"{final}/{doc['recipients']['accepted']} final"
        )


@main.command(name="opt-out")
@click.argument("number")
@click.option("--undo", is_flag=True, help="Opt the number back in.")
@click.option("--url", help="API base URL [env BULKSMS_URL].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def opt_out(number: str, undo: bool, url: str | None, key: str | None) -> None:
    """Opt NUMBER out of every future job (--undo: back in)."""
    doc = _guard(lambda: _client(url, key).opt_out(number, "DELETE" if undo else "PUT"))
    click.echo(f"{doc['number']}: {'opted out' if doc['opted_out'] else 'opted back in'}")


@main.command()
@click.argument("job_id")
@click.option("--status", "wanted", help="Only recipients in this status (e.g. failed).")
@click.option("--url", help="API base URL [env BULKSMS_URL].")
@click.option("--key", help="API key [env BULKSMS_API_KEY or API_KEY].")
def export(job_id: str, wanted: str | None, url: str | None, key: str | None) -> None:
    """Write JOB_ID's per-recipient report to stdout as CSV."""
    out = sys.stdout.buffer
    for chunk in _guard(lambda: _client(url, key).export(job_id, wanted)):
        out.write(chunk)


def _follow(client: Any, job_id: str, total: int) -> dict[str, Any]:
    """A live progress bar of final messages, with sent / delivered / failed beside it."""
    doc: dict[str, Any] = {"counts": {}}

    def show(_: object) -> str:
        c = doc["counts"]
        return (
            f"sent {c.get('sent', 0) + c.get('queued', 0)} · delivered "
            f"{c.get('delivered', 0)} · failed "
            f"{c.get('undelivered', 0) + c.get('failed', 0) + c.get('rejected', 0)}"
        )

    with click.progressbar(length=total, label="final", item_show_func=show, show_pos=True) as bar:
        done = 0
        while True:
            doc = _guard(lambda: client.status(job_id))
            final = sum(doc["counts"].get(k, 0) for k in FINAL)
            bar.update(final - done, current_item=doc)
            done = final
            if doc["state"] in DONE:
                break
            time.sleep(1)
    click.echo(
        f"job {job_id} {doc['state']}: "
        + ", ".join(f"{k} {v}" for k, v in doc["counts"].items() if v)
    )
    return doc


def _client(url: str | None, key: str | None) -> Any:
    from bulksms.cli.client import Client

    return _guard(lambda: Client.configured(url, key))


def _guard(call: Callable[[], T]) -> T:
    from bulksms.cli.client import ClientError

    try:
        return call()
    except ClientError as exc:
        _fail(str(exc))


def _fail(reason: str) -> NoReturn:
    click.echo(f"bulksms: {reason}", err=True)
    sys.exit(1)
