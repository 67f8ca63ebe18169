"""The console script: bad settings stop startup with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BAD_SETTINGS = [
    ("BATCH_SIZE", "0", "an integer 1..10"),
    ("BATCH_SIZE", "11", "an integer 1..10"),
    ("CACHE_UPDATE_POLICY", "SOMETIMES", "UPDATE_IF_EXISTS or UPSERT"),
    ("KEYS_TTL_IN_SECS", "0", "or -1 for no expiry"),
    ("KEYS_TTL_IN_SECS", "-2", "or -1 for no expiry"),
    ("REDIS_PORT", "abc", "an integer 1..65535"),
]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cache_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_SETTINGS)
def test_bad_setting_prints_one_line_and_exits_2(name: str, value: str, allowed: str) -> None:
    result = run_cli("check-config", env={name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert repr(value) in lines[0]
    assert allowed in lines[0]


def test_check_config_masks_secrets() -> None:
    result = run_cli(
        "check-config", env={"REDIS_PASSWORD": "hunter2-secret", "SERVER_API_KEY": "key-secret"}
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout
    assert "key-secret" not in result.stdout
    assert '"BATCH_SIZE": 1' in result.stdout
