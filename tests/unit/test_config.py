from __future__ import annotations

import pytest

from bulksms import create_app
from bulksms.config import ConfigError, Settings

GOOD = {
    "API_KEY": "k1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, k2-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "API_BASE_URL": "https://sms.example.com/",
    "REDIS_URL": "redis://127.0.0.1:6399/0",
    "PLIVO_AUTH_ID": "MAXXXXXXXXXXXXXXXXXX",
    "PLIVO_AUTH_TOKEN": "token",
}


def test_contract_variables_are_read_and_typed() -> None:
    s = Settings.from_env({**GOOD, "PLIVO_SIGNATURES": "V3", "MAX_RECIPIENTS": "5_000"})
    assert s.api_keys == ("k1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "k2-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
    assert s.api_base_url == "https://sms.example.com"
    assert s.plivo_signatures == "v3"
    assert s.max_recipients == 5000
    assert s.broker_url == "redis://127.0.0.1:6399/0"
    assert s.webhook_key == "token"
    assert s.plivo_api_url == "https://api.plivo.com"


def test_a_unix_socket_url_is_given_to_each_client_in_its_own_form() -> None:
    s = Settings.from_env({**GOOD, "REDIS_URL": "unix:///run/redis/redis.sock?db=2"})
    assert s.broker_url == "redis+socket:///run/redis/redis.sock?virtual_host=2"  # kombu
    assert s.limiter_storage_uri == "redis+unix:///run/redis/redis.sock?db=2"  # limits
    bare = Settings.from_env({**GOOD, "REDIS_URL": "unix:///run/redis.sock"})
    assert bare.limiter_storage_uri == "redis+unix:///run/redis.sock?db=0"
    tcp = Settings.from_env(GOOD)
    assert tcp.broker_url == tcp.limiter_storage_uri == GOOD["REDIS_URL"]


def test_every_other_setting_has_a_default() -> None:
    s = Settings.from_env(GOOD)
    assert s.batch_size == 1000
    assert s.plivo_signatures == "auto" and s.accept_v2
    assert s.celery_broker_url is None


def test_the_pace_is_plivo_s_default_and_a_sender_is_paced_by_the_lower_cap() -> None:
    s = Settings.from_env(GOOD)
    assert (s.plivo_mps, s.plivo_queue_seconds, s.sender_cap("+14155550100")) == (5.0, 10.0, None)
    s = Settings.from_env(
        {**GOOD, "PLIVO_MPS": "30", "PLIVO_SENDER_MPS": "+14155550100=1, MyBrand=50"}
    )
    assert s.pace_for("14155550100") == 1.0  # '+' does not count
    assert s.pace_for("MYBRAND") == 30.0  # the account's MPS is lower; case does not count
    assert s.pace_for("+14155550111") == 30.0


def test_webhook_secret_wins_over_the_auth_token() -> None:
    assert Settings.from_env({**GOOD, "PLIVO_WEBHOOK_SECRET": "other"}).webhook_key == "other"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_BASE_URL", "sms.example.com"),
        ("REDIS_URL", "http://localhost"),
        ("PLIVO_AUTH_ID", "XX123"),
        ("PLIVO_SENDER_ID", "not a sender!"),
        ("PLIVO_API_URL", "https://api.plivo.com/v1/Account"),
        ("PLIVO_SIGNATURES", "v2-only"),
        ("BATCH_SIZE", "1001"),
        ("MAX_RECIPIENTS", "lots"),
        ("PLIVO_MPS", "0"),
        ("PLIVO_MPS", "nan"),
        ("PLIVO_SENDER_MPS", "+14155550100"),
        ("PLIVO_SENDER_MPS", "MYBRAND=-1"),
        ("PLIVO_QUEUE_SECONDS", "0.5"),
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**GOOD, name: value})


def test_short_api_keys_are_refused_without_echoing_them() -> None:
    for value in ("changeme", "k1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, abc", "x" * 31):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**GOOD, "API_KEY": value})
        assert "at least 32 characters" in str(caught.value)
        assert "changeme" not in str(caught.value) and "abc" not in str(caught.value)
    assert Settings.from_env({**GOOD, "API_KEY": "x" * 32}).api_keys == ("x" * 32,)


def test_forwarded_allow_ips_reads_addresses_and_networks() -> None:
    found = Settings.from_env({**GOOD, "FORWARDED_ALLOW_IPS": "10.0.0.0/24, 127.0.0.1"})
    assert [str(n) for n in found.forwarded_allow_ips] == ["10.0.0.0/24", "127.0.0.1/32"]
    assert len(Settings.from_env({**GOOD, "FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips) == 2
    with pytest.raises(ConfigError):
        Settings.from_env({**GOOD, "FORWARDED_ALLOW_IPS": "nginx"})


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**GOOD, "API_KEY": " , "})
    assert "API_KEY" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**GOOD, "REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(caught.value)


def test_the_app_refuses_to_start_without_what_it_needs() -> None:
    with pytest.raises(ConfigError, match="API_KEY, API_BASE_URL"):
        create_app(Settings.from_env({"REDIS_URL": GOOD["REDIS_URL"]}))


def test_the_v2_opt_in_that_was_replaced_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Settings.from_env({**GOOD, "PLIVO_ACCEPT_V2_SIGNATURES": "false"})
    assert s.accept_v2  # V2 is how Plivo documents SMS callbacks: accepted unless v3 is chosen
    assert "PLIVO_ACCEPT_V2_SIGNATURES is no longer read" in caplog.text
    assert not Settings.from_env({**GOOD, "PLIVO_SIGNATURES": "v3"}).accept_v2
