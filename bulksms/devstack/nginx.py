"""nginx from the machine's packages, run with the deployment's own configuration
(deploy/nginx/bulksms.conf.template) in front of a local gunicorn, as the current user, every
file it writes in one folder: for the tests (tests/integration/test_proxy.py) and the
benchmarks (`python -m bench.run hostile`)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bulksms.devstack.up import free_port, wait_for_http

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "bulksms.conf.template"
READY_SECONDS = 120  # nginx and the gunicorn behind it, on a busy two-core machine
_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def find_nginx() -> str | None:
    """BULKSMS_NGINX, else nginx on PATH, else Debian's /usr/sbin/nginx (not on a user's PATH)."""
    for candidate in (os.environ.get("BULKSMS_NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def render(template: str, values: dict[str, str]) -> str:
    """The official image's envsubst: `${NAME}` replaced for each name it is given. Every name
    the template uses must be given, so the template and its users cannot drift apart."""
    missing = sorted(set(_VARIABLE.findall(template)) - values.keys())
    if missing:
        raise AssertionError(f"{TEMPLATE.name} uses {missing}, which its caller does not set")
    return _VARIABLE.sub(lambda m: values[m.group(1)], template)


@dataclass
class Nginx:
    base_url: str
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def access_log(self) -> Path:
        return self.folder / "access.log"

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")[-3000:]


def main_config(folder: Path, server_file: Path) -> str:
    """What the official image's nginx.conf gives the template, in `folder`: the http{} it is
    included in, and temporary files where this user may write them (Debian's build puts them
    under /var/lib/nginx)."""
    user = ""
    if os.geteuid() == 0:  # as root nginx would hand its workers to `nobody`: keep this user
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    include {server_file};
}}
"""


@contextmanager
def running_nginx(nginx: str, upstream: str, folder: Path) -> Iterator[Nginx]:
    """nginx on a free port of 127.0.0.1 proxying to `upstream` (host:port); yields once
    /healthz answers 200 through it, which needs gunicorn behind it too, and stops it after."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_file = folder / "bulksms.conf"
    server_file.write_text(
        render(
            TEMPLATE.read_text(),
            {
                "NGINX_PORT": f"127.0.0.1:{port}",
                "BULKSMS_UPSTREAM": upstream,
                "NGINX_ACCESS_LOG": str(folder / "access.log"),
            },
        )
    )
    config = folder / "nginx.conf"
    config.write_text(main_config(folder, server_file))
    with open(folder / "nginx.log", "ab") as out:  # (its own process group: stopped whole)
        process = subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(config), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    result = Nginx(f"http://127.0.0.1:{port}", folder, process)
    try:
        try:
            wait_for_http(f"{result.base_url}/healthz", READY_SECONDS, process, "nginx")
        except RuntimeError as exc:
            output = (folder / "nginx.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}\n{output}\n{result.error_log()}") from None
        yield result
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # fast shutdown: workers close at once
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
