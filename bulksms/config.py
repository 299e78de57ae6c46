"""Settings: read once from the environment, typed, checked at start-up.

Every setting is one field of `Settings`. `Settings.from_env` parses all of them, so a malformed
value stops start-up with a sentence naming the variable; `require` checks that the variables a
role needs (web app or worker) are present.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from dotenv import find_dotenv, load_dotenv

log = logging.getLogger(__name__)

T = TypeVar("T")

# (`\Z`, not `$`, which also matches before a final newline: "+14155550100\n" is no sender; and
# [0-9], not \d, which takes any script's digits)
AUTH_ID_RE = re.compile(r"^(MA|SA)[A-Z0-9]{18}\Z")
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}\Z")
ALPHANUMERIC_SENDER_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}\Z")
DEFAULT_PLIVO_API_URL = "https://api.plivo.com"


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _text(value: str) -> str:
    return value.strip()


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip().replace("_", ""))
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"must be between {low} and {high}" if high else f"must be ≥ {low}")
        return number

    return parse


def _float(low: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if number < low:
            raise ValueError(f"must be ≥ {low}")
        return number

    return parse


def _secret(value: str) -> str:
    value = value.strip()
    if value and len(value) < 16:
        raise ValueError("must be at least 16 characters (a long random string)")
    return value


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


MIN_KEY_LENGTH = 32  # a key is a long random string (`bulksms up` makes 32 characters)


def _keys(value: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    if not keys:
        raise ValueError("must hold at least one key")
    if any(len(key) < MIN_KEY_LENGTH for key in keys):
        raise ValueError(
            f"each key must be at least {MIN_KEY_LENGTH} characters: a long random string "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return keys


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value.strip().rstrip("/")


def _api_base(value: str) -> str:
    url = _http_url(value)
    if urlsplit(url).path not in {"", "/"}:
        raise ValueError("must be scheme://host[:port] without a path (we append /v1/Account)")
    return url


def _redis_url(value: str) -> str:
    if urlsplit(value.strip()).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value.strip()


def _unix_as(url: str | None, scheme: str, db_name: str) -> str | None:
    """A unix:// Redis URL (redis-py's form) in another client's form; other URLs as they are."""
    if url is None or urlsplit(url).scheme != "unix":
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query[db_name] = query.pop("db", "0")
    return f"{scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


def _broker_url(value: str) -> str:
    if "://" not in value:
        raise ValueError("must be a broker URL such as redis://host:6379/0")
    return value.strip()


def _auth_id(value: str) -> str:
    if not AUTH_ID_RE.match(value.strip()):
        raise ValueError("must be MA or SA followed by 18 capital letters or digits")
    return value.strip()


def _sender(value: str) -> str:
    value = value.strip()
    if not (E164_RE.match(value) or ALPHANUMERIC_SENDER_RE.match(value)):
        raise ValueError(
            "must be an E.164 number (+14155550100) or an alphanumeric sender ID of 1-11 "
            "characters with at least one letter"
        )
    return value


UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)


def _uuid(value: str) -> str:
    if not UUID_RE.match(value.strip()):
        raise ValueError("must be a UUID such as 1b2c3d4e-...")
    return value.strip()


def _region(value: str) -> str:
    value = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError("must be a two-letter ISO region code such as US or GB")
    return value


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _networks(value: str) -> Networks:
    """Addresses or networks, comma-separated ('*': any), as gunicorn's forwarded_allow_ips."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if "*" in items:
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError:
        raise ValueError("must be IP addresses or networks (CIDR), comma-separated, or *") from None


def _regions(value: str) -> frozenset[str]:
    return frozenset(_region(v) for v in value.split(",") if v.strip())


def _rate(value: str) -> str:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError("must be a rate such as 60/minute or 10/second;1000/hour") from None
    return value.strip()


def _per_second(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("must be a number of messages a second") from None
    if not 0 < number < 1e9:  # (also refuses nan and inf)
        raise ValueError("must be a number of messages a second above 0")
    return number


def sender_key(sender: str) -> str:
    """How a sender is named in PLIVO_SENDER_MPS and in the pacer: '+' and case do not count."""
    return sender.strip().lstrip("+").lower()


def _sender_caps(value: str) -> tuple[tuple[str, float], ...]:
    caps: dict[str, float] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        sender, sep, rate = item.partition("=")
        if not sep or not sender.strip():
            raise ValueError(
                "must list sender=messages a second, comma-separated, such as "
                "+14155550100=1,MYBRAND=10"
            )
        try:
            caps[sender_key(sender)] = _per_second(rate)
        except ValueError as exc:
            raise ValueError(f"has a cap for {sender.strip()!r} that {exc}") from None
    return tuple(caps.items())


def _signatures(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("auto", "v3"):
        raise ValueError("must be auto (V3 when present, else V2) or v3 (V3 only)")
    return mode


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def env(name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
    """Declare a setting: the variable it comes from, how to parse it, its default."""
    return field(default=default, metadata={"env": name, "parse": parse})


@dataclass(frozen=True)
class Settings:
    # The public contract (the README's Configuration table): other programs set these.
    plivo_auth_id: str | None = env("PLIVO_AUTH_ID", _auth_id)
    plivo_auth_token: str | None = env("PLIVO_AUTH_TOKEN", _text)
    plivo_sender_id: str | None = env("PLIVO_SENDER_ID", _sender)
    plivo_powerpack_uuid: str | None = env("PLIVO_POWERPACK_UUID", _uuid)
    api_keys: tuple[str, ...] = env("API_KEY", _keys, ())
    api_base_url: str | None = env("API_BASE_URL", _http_url)
    plivo_webhook_secret: str | None = env("PLIVO_WEBHOOK_SECRET", _text)
    redis_url: str | None = env("REDIS_URL", _redis_url)
    plivo_api_url: str = env("PLIVO_API_URL", _api_base, DEFAULT_PLIVO_API_URL)
    # Which signature families webhooks accept (README, "Delivery reports"): `auto` takes V3
    # when a V3 header is present, else V2; `v3` refuses V2.
    plivo_signatures: str = env("PLIVO_SIGNATURES", _signatures, "auto")
    plivo_main_auth_token: str | None = env("PLIVO_MAIN_AUTH_TOKEN", _text)
    celery_broker_url: str | None = env("CELERY_BROKER_URL", _broker_url)
    # Everything else has a default.
    default_region: str | None = env("DEFAULT_REGION", _region)
    allowed_countries: frozenset[str] = env("ALLOWED_COUNTRIES", _regions, frozenset())
    max_recipients: int = env("MAX_RECIPIENTS", _int(1), 1_000_000)
    batch_size: int = env("BATCH_SIZE", _int(1, 1000), 1000)
    plivo_timeout: float = env("PLIVO_TIMEOUT", _float(0.5), 15.0)
    send_max_attempts: int = env("SEND_MAX_ATTEMPTS", _int(1, 100), 8)
    send_backoff_base: float = env("SEND_BACKOFF_BASE", _float(0.0), 2.0)
    send_backoff_max: float = env("SEND_BACKOFF_MAX", _float(0.0), 300.0)
    job_retention_seconds: int = env("JOB_RETENTION_SECONDS", _int(60), 30 * 24 * 3600)
    celery_visibility_timeout: int = env("CELERY_VISIBILITY_TIMEOUT", _int(10), 600)
    plivo_rate_limit: str = env("PLIVO_RATE_LIMIT", _rate, "300/5 seconds")
    plivo_list_per_minute: int = env("PLIVO_LIST_PER_MINUTE", _int(1, 10_000), 20)
    # The pace Plivo really sends at (README, "Pace"): segments a second for the account, and
    # for senders with caps of their own; at most `plivo_queue_seconds` of it waits at Plivo.
    plivo_mps: float = env("PLIVO_MPS", _per_second, 5.0)
    plivo_sender_mps: tuple[tuple[str, float], ...] = env("PLIVO_SENDER_MPS", _sender_caps, ())
    plivo_queue_seconds: float = env("PLIVO_QUEUE_SECONDS", _float(1.0), 10.0)
    pace_wake_interval: float = env("PACE_WAKE_INTERVAL", _float(0.05), 0.25)
    sweep_interval: float = env("SWEEP_INTERVAL", _float(0.2), 15.0)
    dispatch_stale_seconds: float = env("DISPATCH_STALE_SECONDS", _float(1.0), 30.0)
    unknown_outcome_grace: float = env("UNKNOWN_OUTCOME_GRACE", _float(1.0), 90.0)
    report_wait_seconds: int = env("REPORT_WAIT_SECONDS", _int(1), 48 * 3600)
    reconcile_after_seconds: float = env("RECONCILE_AFTER_SECONDS", _float(1.0), 600.0)
    callback_secret: str | None = env("CALLBACK_SECRET", _text)
    # Completion callbacks to loopback, private and link-local addresses too (tests, an
    # internal receiver); off, only to globally routable ones.
    callback_allow_private: bool = env("CALLBACK_ALLOW_PRIVATE", _bool, False)
    urgent_max_recipients: int = env("URGENT_MAX_RECIPIENTS", _int(0), 1000)
    # How much urgent work may wait in bulksms, in seconds of the account's pace: beyond it a
    # new urgent submit is refused (503, Retry-After) rather than queued to arrive late. 0: none.
    urgent_backlog_seconds: float = env("URGENT_BACKLOG_SECONDS", _float(0.0), 600.0)
    max_segments_per_job: int = env("MAX_SEGMENTS_PER_JOB", _int(0), 0)  # 0: no limit
    # What one segment costs (the account's currency): previews then estimate a job's cost.
    price_per_segment: float | None = env("PRICE_PER_SEGMENT", _float(0.0))
    # The CPU priority (`nice`) a worker runs at, at least: where it shares a host and a CPU
    # group with the web app (which runs at 0), a worker with a backlog takes the CPU the API
    # does not need, and the API's answers do not wait behind it. 0: as started. (Containers
    # and systemd units are CPU groups of their own: their weights rank them, not this.)
    worker_nice: int = env("WORKER_NICE", _int(0, 19), 10)
    worker_metrics_port: int = env("WORKER_METRICS_PORT", _int(0, 65535), 9808)
    # Where the worker's metrics listen: every interface in a container (Prometheus scrapes it
    # over the compose network); `bulksms up` binds them to its own host.
    worker_metrics_host: str = env("WORKER_METRICS_HOST", _text, "0.0.0.0")  # noqa: S104
    idempotency_ttl: int = env("IDEMPOTENCY_TTL", _int(86_400), 25 * 3600)
    rate_limit_submit: str = env("RATE_LIMIT_SUBMIT", _rate, "60/minute")
    rate_limit_read: str = env("RATE_LIMIT_READ", _rate, "1200/minute")
    rate_limit_bad_signatures: str = env("RATE_LIMIT_BAD_SIGNATURES", _rate, "30/minute")
    # Sign-in attempts on the campaign page, per client address.
    rate_limit_sign_in: str = env("RATE_LIMIT_SIGN_IN", _rate, "10/minute")
    # Requests with a wrong or missing API key, per client address: past it, 429.
    rate_limit_bad_keys: str = env("RATE_LIMIT_BAD_KEYS", _rate, "30/minute")
    # The campaign page: SECRET_KEY keys its sessions (`bulksms up` makes one and keeps it);
    # a session ends this long after its last use.
    secret_key: str | None = env("SECRET_KEY", _secret)
    ui_session_seconds: int = env("UI_SESSION_SECONDS", _int(60), 8 * 3600)
    proxy_count: int = env("PROXY_COUNT", _int(0, 5), 0)
    # Who may be the proxy: X-Forwarded-* count only from these addresses (gunicorn's own
    # forwarded_allow_ips reads the same variable: `bulksms.api.gunicorn_conf`).
    forwarded_allow_ips: Networks = env(
        "FORWARDED_ALLOW_IPS", _networks, (ipaddress.ip_network("127.0.0.1/32"),)
    )
    log_level: str = env("LOG_LEVEL", _log_level, "INFO")
    log_dir: str | None = env("LOG_DIR", _text)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse every variable; an empty value counts as unset."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name, "")
            if not raw.strip():
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name} {exc} (got {_shown(name, raw)}).") from None
        settings = cls(**values)
        if environ.get("PLIVO_ACCEPT_V2_SIGNATURES", "").strip():
            log.warning(
                "PLIVO_ACCEPT_V2_SIGNATURES is no longer read: V2 is accepted unless "
                "PLIVO_SIGNATURES=v3 (README, Delivery reports)."
            )
        if settings.plivo_sender_id and settings.plivo_powerpack_uuid:
            raise ConfigError(
                "Set PLIVO_SENDER_ID or PLIVO_POWERPACK_UUID, not both: Plivo sends from one or "
                "the other."
            )
        return settings

    def require(self, *names: str) -> None:
        """Stop start-up with one sentence per missing variable that this role needs."""
        by_env = {f.metadata["env"]: f.name for f in fields(self)}
        missing = [n for n in names if not getattr(self, by_env[n])]
        if missing:
            listed = ", ".join(missing)
            raise ConfigError(
                f"Set {listed} in the environment or in .env before starting (see .env.example)."
            )

    @property
    def broker_is_store(self) -> bool:
        """The broker is the job store's Redis: a job's tasks can be written with the job."""
        return not self.celery_broker_url or self.celery_broker_url == self.redis_url

    @property
    def broker_url(self) -> str | None:
        if self.celery_broker_url:
            return self.celery_broker_url
        # Each client names Redis's unix socket its own way: kombu as redis+socket://.
        return _unix_as(self.redis_url, "redis+socket", "virtual_host")

    @property
    def limiter_storage_uri(self) -> str | None:
        return _unix_as(self.redis_url, "redis+unix", "db")  # the limits library's name for it

    @property
    def in_flight_seconds(self) -> float:
        """Longer than any Plivo call can last: a batch `sending` for longer has no live call."""
        return 2 * self.plivo_timeout + 2

    def sender_cap(self, sender: str) -> float | None:
        """A sender's own cap (PLIVO_SENDER_MPS), in messages a second; None if it has none."""
        if not self.plivo_sender_mps:  # (most services: no sender has a cap of its own)
            return None
        return dict(self.plivo_sender_mps).get(sender_key(sender))

    def pace_for(self, sender: str) -> float:
        """Segments a second a send from `sender` gets at most: the lower of the account's MPS
        and the sender's own cap."""
        cap = self.sender_cap(sender)
        return min(self.plivo_mps, cap) if cap else self.plivo_mps

    @property
    def webhook_key(self) -> str | None:
        """The key Plivo signs delivery reports with."""
        return self.plivo_webhook_secret or self.plivo_auth_token

    @property
    def accept_v2(self) -> bool:
        return self.plivo_signatures != "v3"

    @property
    def delivery_report_url(self) -> str:
        return f"{self.api_base_url}/api/webhooks/plivo/delivery-report"


SECRET_VARIABLES = {
    "API_KEY",
    "PLIVO_AUTH_TOKEN",
    "PLIVO_MAIN_AUTH_TOKEN",
    "PLIVO_WEBHOOK_SECRET",
    "CALLBACK_SECRET",
}


def _shown(name: str, raw: str) -> str:
    """A value quoted back in an error, unless it is a secret (or a URL with a password)."""
    if name in SECRET_VARIABLES:
        return "a value that is not shown"
    parts = urlsplit(raw)
    if parts.password:
        return repr(raw.replace(parts.password, "****"))
    return repr(raw)


def load_settings() -> Settings:
    """Settings from the environment, with a `.env` in the working directory loaded first."""
    load_dotenv(find_dotenv(usecwd=True), override=False)
    return Settings.from_env()
