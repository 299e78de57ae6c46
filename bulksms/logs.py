"""Structured logs: JSON lines (python-json-logger) on stdout, optionally rotating files too.

Every line of a request carries its `request_id`; every line of a batch task carries `job_id`,
`batch` and `task_id` (bound in a context variable, so library loggers get them too). Before a
line is written, every configured secret is replaced by `****` and phone numbers are masked
(`+1415555****`): numbers are personal data.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.json import JsonFormatter

from bulksms import ids
from bulksms.config import Settings

_context: ContextVar[dict[str, object]] = ContextVar("bulksms_log_context", default={})  # noqa: B039 (never mutated)

# A phone number: '+' and digits, or a bare run of 10-15 digits, standing alone.
_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\+\d{4,11}|\d{6,11})(\d{4})(?![0-9A-Za-z])")
# An opt-out's number in a request line's path, in whatever form it was given ('+44 7700…',
# '(415) 555-…'): to the query, the HTTP version or the end (the line is read decoded).
_OPT_OUT_PATH = re.compile(r"(/api/opt-outs/)[^?\"]*?(?=\sHTTP/|[?\"]|$)", re.IGNORECASE)
# A number written with separators ('+1 (415) 555-0100', '415.555.0100', '+44+7911+123456' as
# a form encodes it, '07911 123456'), as a client may put one in its request line, Referer or
# User-Agent, letters against it or not ('tel(415)5550100'): masked whole in those. (A version
# like 'Chrome/120.0.6099.109' does not match: its '.0' is too short a group, and no match
# starts after a dot.)
_SEPARATOR = "[\\s.+_\\-\u2010-\u2015]+"  # (\s: any space: a tab, a thin one)
_SPACED_NUMBER = re.compile(
    r"(?<![0-9.])\+?(?:\(\d{1,5}\)|\d{1,5})"
    rf"(?:(?:{_SEPARATOR}|(?<=\))|(?=\())(?:\(\d{{2,8}}\)|\d{{2,8}})){{1,5}}"
    r"(?![0-9]|\.\d)"
)
# A number of 7 to 15 digits written against letters ('tel14155550100', 'ua+14155550100',
# '14155550100abc'), as a client may write one anywhere: masked as one standing alone is.
_GLUED = re.compile(
    r"(?<!\d)(?:(?<=[A-Za-z])|(?<=[A-Za-z]\+)|(?=\d{7,15}[A-Za-z]))(\d{3,11})\d{4}(?!\d)"
)
# A job's or a request's id (32 hex digits, a letter among them) or a UUID, standing alone: kept
# whole in what a client wrote, whatever digits it holds (split out before numbers are looked
# for). 32 decimal digits are no id: numbers, maybe.
_IDS = re.compile(
    r"((?<![0-9A-Za-z])(?:(?=[0-9]{0,31}[a-f])[0-9a-f]{32}"
    r"|(?=[0-9-]{0,35}[a-f])[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})(?![0-9A-Za-z]))",
    re.IGNORECASE,
)
_FEWEST_DIGITS = 7  # in a number any of these patterns masks
# What has that shape but is no number: one starting with a date, an IPv4 address.
_NOT_A_NUMBER = re.compile(
    r"\d{4}[-./_]\d{2}[-./_]\d{2}|\d{2}[-./_]\d{2}[-./_]\d{4}|\d{1,3}(?:\.\d{1,3}){3}$"
)
# gunicorn's atoms a client writes, as a format names them: the request line, its path and
# query, the Basic user, the Referer and User-Agent, and any request header.
_CLIENT_ATOM = re.compile(
    r"%\(([rUqufa]|\{[^}]*\}i|\{(?:raw_uri|query_string|path_info|http_[^}]*)\}e)\)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # (a decoded %0A, say: written as \x0a)
_HANDLER_NAME = "bulksms"
# gunicorn's loggers write through handlers of their own, which our handlers' filters never see.
GUNICORN_LOGGERS = ("gunicorn.access", "gunicorn.error")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a caller's X-Request-ID we take as it is


def request_id(given: str) -> str:
    """A request's id: the caller's X-Request-ID when it is a plain one, else a new one."""
    return given if _REQUEST_ID.fullmatch(given) else ids.hex_id()


def mask_numbers(text: str) -> str:
    return _NUMBER.sub(r"\1****", text)


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add fields to every log line written inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: object) -> object:
    """Add fields until `unbind(token)` (for hooks that cannot wrap a block)."""
    return _context.set({**_context.get(), **fields})


def unbind(token: object) -> None:
    _context.reset(token)  # type: ignore[arg-type]


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _Redact(logging.Filter):
    """Secrets out, numbers masked: in the message, its arguments and any traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "****")
        return mask_numbers(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.clean(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _RedactRequests(_Redact):
    """For request lines (gunicorn's access log): in what the client wrote, numbers masked as
    decoded and written with separators; and the opt-out endpoints' number segment whatever its
    form."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and isinstance(record.msg, str):  # (gunicorn's atoms)
            atoms = record.args  # (gunicorn's own, made for this line)
            for name in _client_atoms(record.msg):
                key = name.lower() if name.startswith("{") else name  # (as SafeAtoms reads it)
                value = atoms.get(key)
                if not isinstance(value, str):
                    continue
                masked = _masked(value)
                if masked is not None:  # (escaped as gunicorn escapes)
                    atoms[key] = _CONTROL.sub(_escape, masked.replace('"', '\\"'))
        elif record.getMessage().startswith(_QUOTING_A_REQUEST):  # (gunicorn's error log)
            masked = _masked(record.getMessage())
            if masked is not None:
                record.msg, record.args = masked, None
        return super().filter(record)

    def clean(self, text: str) -> str:
        """Read percent-decoded (a number or a key may be encoded); written so only where
        something was masked."""
        decoded = unquote(text)
        cleaned = super().clean(_OPT_OUT_PATH.sub(r"\1****", decoded))
        return text if cleaned == decoded else cleaned


# gunicorn's error lines that quote what a client sent (a request line it could not read, or the
# URI of a request that failed); its others (its address and pid, say) are its own.
_QUOTING_A_REQUEST = ("Invalid request", "Error handling request")


def _masked(text: str) -> str | None:
    """What a client wrote with its numbers masked, however written (with separators, or
    percent-encoded once or twice: decoded then); None when it holds none."""
    return _masked_short(text) if len(text) <= _REMEMBERED else _masking(text)


# A request line repeats: Plivo posts every report of a batch to the same URL, whose job id
# costs the masking its slow way (14 us warm, more in a busy web process). Keeping short texts'
# answers (1,024 of up to 512 characters a process: 4.5 MB at worst, measured) took reports
# from 0.74 to 0.80 of a bare endpoint's rate (bench/RESULTS.md, 2026-12-05).
_REMEMBERED = 512


@functools.lru_cache(maxsize=1024)
def _masked_short(text: str) -> str | None:
    return _masking(text)


def _masking(text: str) -> str | None:
    if text.isascii() and sum(map(text.count, "0123456789%")) < _FEWEST_DIGITS:
        return None  # (each digit decoded is one written, a '%' sequence or beyond ASCII)
    decoded = unquote(unquote(text))
    pieces = _IDS.split(decoded)  # (the ids at odd places)
    masked = "".join(p if i % 2 else _unnumbered(p) for i, p in enumerate(pieces))
    return masked if masked != decoded else None


def _unnumbered(text: str) -> str:
    """`text` with its numbers masked: written with separators, against letters, or alone."""
    return mask_numbers(_GLUED.sub(r"\1****", _SPACED_NUMBER.sub(_spaced, text)))


def _escape(found: re.Match[str]) -> str:
    return f"\\x{ord(found[0]):02x}"


@functools.lru_cache(maxsize=8)
def _client_atoms(form: str) -> tuple[str, ...]:
    """The atoms a client writes that an access log format names (read once a format)."""
    return tuple(dict.fromkeys(_CLIENT_ATOM.findall(form)))


def _spaced(found: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in found[0])
    if not 7 <= digits <= 15 or _NOT_A_NUMBER.match(found[0]):
        return found[0]
    return "****"


def secrets_of(settings: Settings) -> list[str]:
    found = [
        *settings.api_keys,
        settings.plivo_auth_token or "",
        settings.plivo_webhook_secret or "",
        settings.plivo_main_auth_token or "",
        settings.callback_secret or "",
        settings.secret_key or "",
    ]
    for url in (settings.redis_url, settings.celery_broker_url):
        password = urlsplit(url).password if url else None
        if password:
            found.append(password)
    return found


def configure(settings: Settings, stream: TextIO | None = None) -> None:
    """Route the root logger through our filters to stdout (and files if LOG_DIR is set)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    if settings.log_dir:
        folder = Path(settings.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        errors = RotatingFileHandler(folder / "error.log", maxBytes=10_000_000, backupCount=5)
        errors.setLevel(logging.ERROR)
        handlers += [
            RotatingFileHandler(folder / "combined.log", maxBytes=10_000_000, backupCount=5),
            errors,
        ]
    redact = _Redact(secrets_of(settings))
    for handler in handlers:
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(formatter)
        handler.addFilter(_Context())
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in GUNICORN_LOGGERS:  # filters on the logger: whatever handlers gunicorn gave it
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _Redact)]:
            logger.removeFilter(old)
        logger.addFilter(_RedactRequests(secrets_of(settings)))
