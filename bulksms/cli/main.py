"""The `bulksms` command: run the whole system, or the Plivo sandbox alone, or talk to the API."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from dotenv import find_dotenv, load_dotenv

from bulksms.api.schemas import SubmitForm, SubmitRequest
from bulksms.config import ConfigError

if TYPE_CHECKING:
    from bulksms.cli.client import Multipart

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


# An upload of a file this big shows a progress bar (on a terminal).
PROGRESS_BYTES = 1 << 20
# Standard input is kept in memory up to this size while it is read for the upload, then on disk.
SPOOL_BYTES = 8 << 20


def _submit_options(command: F) -> F:
    """FILE and the request's fields, as `send` and `preview` read them: the JSON body's fields,
    and the contact file's own (--phone-column)."""
    command = click.option(
        "--csv",
        "as_csv",
        is_flag=True,
        help="Upload FILE as a contact file (a CSV with a header row) even when the message has "
        "no {{placeholders}} and no column is named like a phone column.",
    )(command)
    command = _request_options(
        SubmitForm.model_json_schema(), skip=set(SubmitRequest.model_fields)
    )(command)
    command = _request_options(SubmitRequest.model_json_schema(), skip={"recipients"})(command)
    return click.argument("numbers_file", type=click.File("rb"), metavar="FILE")(command)


@main.command()
@_submit_options
@click.option("--wait", is_flag=True, help="Show progress until every message is final.")
@click.option("--idempotency-key", help="Send it again safely: the same key makes no new job.")
@_api_options
def send(
    numbers_file: IO[bytes],
    as_csv: bool,
    wait: bool,
    idempotency_key: str | None,
    url: str | None,
    key: str | None,
    **fields: Any,
) -> None:
    """Send MESSAGE to every number in FILE (a CSV or text file; - for stdin).

    A message with {{placeholders}}, or a CSV whose header names a phone column (phone,
    phone_number, mobile, to, number), uploads FILE as it is: a contact file whose columns fill
    the placeholders, row by row.
    """
    body = _request_body(numbers_file, fields, as_csv)
    client = _client(url, key)
    answer = _uploading(body, lambda: client.submit(body, idempotency_key))
    r = answer["recipients"]
    click.echo(
        f"job {answer['job_id']}: {r['accepted']} accepted, {r['duplicates']} duplicates, "
        f"{r['invalid']} invalid; {answer['batches']} batches, "
        f"{answer['estimated_segments']} segments ({answer['encoding']})"
    )
    for entry in answer["invalid"][:10]:
        click.echo(f"  invalid: {_invalid(entry, uploaded=not isinstance(body, dict))}", err=True)
    if wait:
        doc = _follow(client, answer["job_id"], r["accepted"])
        if doc["state"] == "failed":
            _fail(f"job {doc['job_id']} failed: no batch could be submitted")


@main.command()
@_submit_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead.")
@_api_options
def preview(
    numbers_file: IO[bytes],
    as_csv: bool,
    as_json: bool,
    url: str | None,
    key: str | None,
    **fields: Any,
) -> None:
    """What `send` would do with FILE and MESSAGE, sending nothing: the counts, the invalid rows,
    the segments (and cost), and the first messages as they would be sent."""
    import json

    body = _request_body(numbers_file, fields, as_csv)
    client = _client(url, key)
    doc = _uploading(body, lambda: client.preview(body))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    _show_preview(doc, uploaded=not isinstance(body, dict))


def _request_body(
    file: IO[bytes], fields: dict[str, Any], as_csv: bool
) -> dict[str, Any] | Multipart:
    """The JSON body of FILE's numbers, or FILE as a contact file to upload as it is: when the
    message has placeholders (its rows fill them), --csv or --phone-column is given, or its
    header names a column the API takes the numbers from."""
    from bulksms.cli.client import Multipart, names_phone_column, read_numbers
    from bulksms.template import TemplateError, parse

    try:
        personal = parse(fields["message"]).personal
    except TemplateError as exc:
        raise click.BadParameter(str(exc), param_hint="'-m' / '--message'") from None
    given = {
        name: value
        for name, value in fields.items()
        if value is not None and not (value == "" and name in EMPTY_IS_UNSET)
    }
    name = getattr(file, "name", None)  # a path, or "<stdin>"
    filename = Path(name).name if isinstance(name, str) and name[:1] != "<" else "contacts.csv"
    file = _seekable(file)
    start = file.tell()
    header = file.readline(65536)
    file.seek(start)
    if personal or as_csv or "phone_column" in given or names_phone_column(header):
        return Multipart({k: str(v) for k, v in given.items()}, file, filename)
    numbers = read_numbers(file.read().decode("utf-8-sig", errors="replace"))
    if not numbers:
        _fail("no numbers in the input")
    return {"recipients": numbers, **given}


def _seekable(file: IO[bytes]) -> IO[bytes]:
    """FILE, to be read twice (its first line to choose the body, then the body): a pipe or a
    terminal is copied to a temporary file first (in memory while small)."""
    if file.seekable():
        return file
    # (Closed with the command, as click closes FILE: it is read again as the body is sent.)
    copy = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    click.get_current_context().call_on_close(copy.close)
    shutil.copyfileobj(file, copy, 1 << 20)
    copy.seek(0)
    return copy


def _uploading(body: dict[str, Any] | Multipart, call: Callable[[], T]) -> T:
    """`call`, with a progress bar on standard error while a big file is uploaded (on a
    terminal only: a script's standard error keeps only what went wrong)."""
    if isinstance(body, dict) or body.size < PROGRESS_BYTES or not sys.stderr.isatty():
        return _guard(call)
    label = f"uploading {body.size / 1e6:.1f} MB"
    with click.progressbar(length=body.size, label=label, file=sys.stderr) as bar:
        body.on_read = bar.update
        return _guard(call)


def _invalid(entry: dict[str, Any], uploaded: bool) -> str:
    """An invalid recipient of an answer: an uploaded file's by its row (as a spreadsheet
    numbers it), with the field it lacks."""
    where = f"row {entry['row']}: " if uploaded and "row" in entry else ""
    lacking = f": {entry['field']}" if entry.get("field") else ""
    return f"{where}{entry['input']!r} ({entry['reason']}{lacking})"


def _show_preview(doc: dict[str, Any], uploaded: bool) -> None:
    r = doc["recipients"]
    click.echo("recipients: " + ", ".join(f"{value} {name}" for name, value in r.items()))
    for entry in doc["invalid"]:
        click.echo(f"  invalid: {_invalid(entry, uploaded)}")
    if r["invalid"] > len(doc["invalid"]):
        click.echo(f"  ... and {r['invalid'] - len(doc['invalid'])} more invalid")
    encodings = doc.get("encodings") or {}
    mix = ", ".join(f"{count} {name}" for name, count in encodings.items())
    click.echo(f"encoding: {doc['encoding']}" + (f" ({mix})" if len(encodings) > 1 else ""))
    per = doc["segments_per_message"]
    per = f"{per['min']} to {per['max']}" if isinstance(per, dict) else per
    click.echo(f"segments: {doc['estimated_segments']} in all, {per} per message")
    for segments, count in doc["segments_histogram"].items():
        click.echo(f"  {count} message{_s(count)} of {segments} segment{_s(int(segments))}")
    if "estimated_cost" in doc:
        click.echo(f"estimated cost: {doc['estimated_cost']:g}")
    click.echo(f"first {len(doc['messages'])} message{_s(len(doc['messages']))}, as sent:")
    for message in doc["messages"]:
        count = message["segments"]
        click.echo(f"  to {message['to']} ({count} segment{_s(count)}, {message['encoding']}):")
        for line in message["text"].splitlines() or [""]:
            click.echo(f"    {line}")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


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
