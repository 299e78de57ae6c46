"""The `bulksms` command: run the whole system, or the Plivo sandbox alone, or talk to the API."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
from dotenv import find_dotenv, load_dotenv

from bulksms.api.schemas import SubmitRequest
from bulksms.config import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # .env before the options read the environment (the group's --url and --key do).
        load_dotenv(find_dotenv(usecwd=True), override=False)
        return super().make_context(info_name, args, parent, **extra)


@dataclass(frozen=True)
class _Api:
    """The group's --url and --key; a command's own --url/--key win over them."""

    url: str | None
    key: str | None


@click.group(cls=_Group)
@click.option(
    "--url",
    envvar="BULKSMS_URL",
    show_envvar=True,
    help="API base URL [default: http://127.0.0.1:8000].",
)
@click.option(
    "--key",
    envvar=["BULKSMS_API_KEY", "API_KEY"],
    show_envvar=True,
    help="API key [default: the key `bulksms up` keeps in data/api-key].",
)
@click.pass_context
def main(ctx: click.Context, url: str | None, key: str | None) -> None:
    """bulksms: send one SMS text to very large recipient lists through Plivo."""
    ctx.obj = _Api(url, key)


def _api_options(command: F) -> F:
    """A command's own --url and --key, as scripts have always passed them after its name."""
    command = click.option("--key", help="API key (overrides the group's --key).")(command)
    return click.option("--url", help="API base URL (overrides the group's --url).")(command)


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
@click.option(
    "--mps",
    type=click.FloatRange(min=0),
    default=None,
    help="The account's messages (segments) a second, queued like Plivo's; 0: no queue.",
)
def sandbox(host: str, port: int, faults: str, seed: int | None, mps: float | None) -> None:
    """A local Plivo Message API that posts signed delivery reports back.

    Uses PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN (made up if unset) and signs reports with
    PLIVO_WEBHOOK_SECRET, else the auth token (the Ma- headers with PLIVO_MAIN_AUTH_TOKEN, if
    set).
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
    if mps is not None:
        chosen.mps = mps
    box = Sandbox(
        auth_id,
        token,
        os.environ.get("PLIVO_WEBHOOK_SECRET"),
        chosen,
        seed,
        main_signing_key=os.environ.get("PLIVO_MAIN_AUTH_TOKEN"),
    )
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


# Extra flags of `send`, beside the one each field of the request gets (--default-region for
# default_region): the ones scripts already use.
ALIASES = {"message": ("-m",), "default_region": ("--region",)}
# Given empty, these have always meant "the service's default", as `--sender "$SENDER"` expects.
EMPTY_IS_UNSET = {"sender", "default_region"}
_TYPES: dict[str, type] = {"string": str, "integer": int}  # a JSON Schema type's option type


def _request_options(schema: dict[str, Any], skip: set[str]) -> Callable[[F], F]:
    """One option per field of a request body's JSON Schema (but `skip`): its name, type, enum,
    help and whether it is required all come from the schema, so a field added to the API is an
    option here. The values are checked by the API, in its own words."""

    def option(name: str) -> Callable[[F], F]:
        field = schema["properties"][name]
        kind = next((b for b in field.get("anyOf", [field]) if b.get("type") != "null"), field)
        flags = (f"--{name.replace('_', '-')}", *ALIASES.get(name, ()))
        return click.option(
            *flags,
            name,
            type=click.Choice(kind["enum"]) if "enum" in kind else _TYPES[kind["type"]],
            required=name in schema.get("required", ()),
            help=field.get("description"),
        )

    def decorate(command: F) -> F:
        for name in reversed([n for n in schema["properties"] if n not in skip]):
            command = option(name)(command)
        return command

    return decorate


@main.command()
@click.argument("numbers_file", type=click.File("r"), metavar="FILE")
@_request_options(SubmitRequest.model_json_schema(), skip={"recipients"})
@click.option("--wait", is_flag=True, help="Show progress until every message is final.")
@click.option("--idempotency-key", help="Send it again safely: the same key makes no new job.")
@_api_options
def send(
    numbers_file: IO[str],
    wait: bool,
    idempotency_key: str | None,
    url: str | None,
    key: str | None,
    **fields: Any,
) -> None:
    """Send MESSAGE to every number in FILE (a CSV or text file; - for stdin)."""
    from bulksms.cli.client import read_numbers

    numbers = read_numbers(numbers_file.read())
    if not numbers:
        _fail("no numbers in the input")
    body: dict[str, Any] = {"recipients": numbers}
    for name, value in fields.items():
        if value is not None and not (value == "" and name in EMPTY_IS_UNSET):
            body[name] = value
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
@_api_options
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
    @_api_options
    def command(job_id: str, url: str | None, key: str | None) -> None:
        doc = _guard(lambda: _client(url, key).act(job_id, action))
        click.echo(f"job {doc['job_id']}: {doc['state']}")


_control("cancel", "Cancel JOB_ID: batches not yet sent are never sent.")
_control("pause", "Pause JOB_ID: no batch starts until it is resumed.")
_control("resume", "Resume JOB_ID where it stopped.")
_control("retry", "Make a new job of JOB_ID's retryable failures.")


@main.command()
@click.argument("job_id")
@_api_options
def delete(job_id: str, url: str | None, key: str | None) -> None:
    """Erase finished JOB_ID's numbers (its counts stay)."""
    doc = _guard(lambda: _client(url, key).delete(job_id))
    click.echo(f"job {job_id}: per-recipient data erased at {doc.get('erased_at')}")


@main.command()
@click.option("--state", help="Only jobs in this state.")
@click.option("--limit", default=20, show_default=True)
@_api_options
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
@_api_options
def opt_out(number: str, undo: bool, url: str | None, key: str | None) -> None:
    """Opt NUMBER out of every future job (--undo: back in)."""
    doc = _guard(lambda: _client(url, key).opt_out(number, "DELETE" if undo else "PUT"))
    click.echo(f"{doc['number']}: {'opted out' if doc['opted_out'] else 'opted back in'}")


@main.command()
@click.argument("job_id")
@click.option("--status", "wanted", help="Only recipients in this status (e.g. failed).")
@_api_options
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
        line = (
            f"sent {c.get('sent', 0) + c.get('queued', 0)} · delivered "
            f"{c.get('delivered', 0)} · failed "
            f"{c.get('undelivered', 0) + c.get('failed', 0) + c.get('rejected', 0)}"
        )
        progress = doc.get("progress")
        if progress:  # while it is being handed to Plivo: at what pace, and until when
            line += (
                f" · {progress['rate_per_second']:g}/s, done by "
                f"{_local_time(progress['estimated_completion_at'])}"
            )
        return line

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


def _local_time(stamp: str) -> str:
    """An RFC 3339 time as this terminal's local clock time."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone().strftime("%H:%M:%S")


def _client(url: str | None, key: str | None) -> Any:
    from bulksms.cli.client import Client

    group = click.get_current_context().find_object(_Api) or _Api(None, None)
    return _guard(lambda: Client.configured(url or group.url, key or group.key))


def _guard(call: Callable[[], T]) -> T:
    from bulksms.cli.client import ClientError

    try:
        return call()
    except ClientError as exc:
        _fail(str(exc))


def _fail(reason: str) -> NoReturn:
    click.echo(f"bulksms: {reason}", err=True)
    sys.exit(1)
