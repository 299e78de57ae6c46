"""Rate-limit settings, read without Redis."""

from __future__ import annotations

import pytest

from bulksms.config import ConfigError, Settings


def test_a_malformed_rate_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="RATE_LIMIT_SUBMIT"):
        Settings.from_env({"RATE_LIMIT_SUBMIT": "lots"})
