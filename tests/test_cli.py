"""The console script: bad settings stop startup with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        "check-config",
        env={
            "REDIS_PASSWORD": "hunter2-secret",
            "SERVER_API_KEY": "key-secret",
            "QUEUE_URL": "http://127.0.0.1:1/000000000000/q",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout
    assert "key-secret" not in result.stdout
    assert '"BATCH_SIZE": 1' in result.stdout


def test_check_config_checks_the_workers_settings_queue_url_included() -> None:
    result = run_cli("check-config", env={"QUEUE_URL": ""})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "cache-pipeline: QUEUE_URL is not set: the worker needs the URL of the queue to consume"
    ]


def test_a_ca_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    """redis-py said only "Error 2 connecting to 127.0.0.1:6379. No such file or directory"."""
    missing = tmp_path / "no-such-ca.pem"
    env = {"QUEUE_URL": "http://127.0.0.1:1/000000000000/q", "REDIS_TLS": "1"}
    for args in (["check-config"], ["inspect", "cus-1"], ["status"], ["worker"]):
        result = run_cli(*args, env={**env, "REDIS_TLS_CA_FILE": str(missing)})
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"cache-pipeline: REDIS_TLS_CA_FILE={str(missing)!r} cannot be read:"
            " No such file or directory"
        ]
    unused = {**env, "REDIS_TLS": "0", "REDIS_TLS_CA_FILE": str(missing)}
    assert run_cli("check-config", env=unused).returncode == 0  # without TLS it is not read


def test_a_cluster_with_a_database_is_refused_in_one_line() -> None:
    result = run_cli("check-config", env={"REDIS_CLUSTER": "1", "REDIS_DB": "2"})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("cache-pipeline: REDIS_DB=2 cannot be used with REDIS_CLUSTER=1")
