"""The `bulksms` command: run the whole system, or the Plivo sandbox alone."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import click
from dotenv import find_dotenv, load_dotenv

from bulksms.config import ConfigError


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
    from bulksms.embedded import up as run

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
    from bulksms.sandbox import Sandbox, faults_from_json, make_credentials, serve

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


if __name__ == "__main__":
    main()
