"""`bulksms up`'s secrets and folders: kept in the data folder, its owner's only, long enough."""

from __future__ import annotations

import secrets
import socket
import stat
from pathlib import Path

import redis

from bulksms.config import MIN_KEY_LENGTH, Settings
from bulksms.devstack.up import (
    SECRET_BYTES,
    _api_key,
    _flower_login,
    kept_secret,
    local_redis_url,
    private_dir,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_made_once_kept_and_readable_only_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "flower-password"
    secret, state = kept_secret(path)
    assert state == "made" and len(secret) >= 32
    assert mode(path) == 0o600
    assert path.read_text() == secret + "\n"
    assert kept_secret(path) == (secret, "kept")


def test_a_kept_secret_left_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "secret-key"
    path.write_text("x" * 40 + "\n")
    path.chmod(0o644)
    assert kept_secret(path) == ("x" * 40, "kept")
    assert mode(path) == 0o600


def test_the_generated_api_key_is_long_enough_for_the_web_app(tmp_path: Path) -> None:
    made = len(secrets.token_urlsafe(SECRET_BYTES))
    assert made >= MIN_KEY_LENGTH
    key, state = _api_key(tmp_path, {})
    assert state == "made"
    assert len(key) == made
    assert (tmp_path / "api-key").read_text().strip() == key


def test_a_short_api_key_from_an_older_run_is_replaced(tmp_path: Path) -> None:
    old = tmp_path / "api-key"
    old.write_text("short-old-key\n")
    old.chmod(0o644)
    key, state = _api_key(tmp_path, {})
    assert state == "replaced"
    assert key != "short-old-key" and len(key) >= MIN_KEY_LENGTH
    assert old.read_text().strip() == key
    assert mode(old) == 0o600
    assert _api_key(tmp_path, {}) == (key, "kept")


def test_a_configured_api_key_is_used_and_nothing_is_kept(tmp_path: Path) -> None:
    configured = "k" * 40
    assert _api_key(tmp_path, {"API_KEY": f" {configured} , {'j' * 40}"}) == (configured, None)
    assert not (tmp_path / "api-key").exists()


def test_flower_gets_a_kept_password_unless_its_login_is_configured(tmp_path: Path) -> None:
    assert _flower_login(tmp_path, {"FLOWER_BASIC_AUTH": "ops:a-long-password"}) is None
    assert not (tmp_path / "flower-password").exists()
    password = _flower_login(tmp_path, {"FLOWER_BASIC_AUTH": " "})  # set but empty: not set
    assert password and len(password) >= 32
    assert "," not in password and ":" not in password  # FLOWER_BASIC_AUTH's separators
    assert _flower_login(tmp_path, {}) == password


def test_the_data_folder_is_made_private_and_tightened_if_it_exists(tmp_path: Path) -> None:
    fresh = private_dir(tmp_path / "data" / "metrics")
    assert mode(fresh) == 0o700
    existing = tmp_path / "old"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    private_dir(existing)
    assert mode(existing) == 0o700


def test_the_redis_url_carries_the_password_in_each_form(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)  # too deep for a unix socket: TCP
    assert local_redis_url(6399, deep, "pw-1_x") == "redis://:pw-1_x@127.0.0.1:6399/0"
    assert local_redis_url(6399, deep) == "redis://127.0.0.1:6399/0"
    parsed = redis.ConnectionPool.from_url(local_redis_url(6399, deep, "pw-1_x"))
    assert parsed.connection_kwargs["password"] == "pw-1_x"


def test_the_unix_socket_url_keeps_its_password_for_every_client(tmp_path: Path) -> None:
    """redis-py's form, and the forms `Settings` makes of it for kombu and limits (that each of
    them logs in with it is shown against a real Redis by tests/integration/test_embedded.py)."""
    folder = private_dir(tmp_path / "redis")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(folder / "redis.sock"))
        url = local_redis_url(6399, folder, "pw-1_x")
    sock = folder.resolve() / "redis.sock"
    assert url == f"unix://:pw-1_x@{sock}?db=0"
    assert redis.ConnectionPool.from_url(url).connection_kwargs["password"] == "pw-1_x"
    settings = Settings.from_env({"REDIS_URL": url})
    assert settings.broker_url == f"redis+socket://:pw-1_x@{sock}?virtual_host=0"
    assert settings.limiter_storage_uri == f"redis+unix://:pw-1_x@{sock}?db=0"
