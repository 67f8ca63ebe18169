"""The command lines as the operator runs them: a subprocess, its exit code, its lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.servers import AWS_TEST_ENV

DEV_COMMANDS = {"publish", "edge-stub", "stub-scopes", "stack"}


def run_cli(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m cache_pipeline ARGS`` (``cache_pipeline.dev`` for a development tool),
    with the suite's AWS test keys and ``env`` on top of this process's environment (a
    value ``UNSET`` removes the variable)."""
    module = "cache_pipeline.dev" if args[0] in DEV_COMMANDS else "cache_pipeline"
    environment = {**os.environ, **AWS_TEST_ENV, "PYTHONWARNINGS": "ignore", **env}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={name: value for name, value in environment.items() if value is not UNSET},
    )


UNSET = "\0unset"  # a value of ``env`` that removes the variable


def without_aws_keys(tmp_path: Path) -> dict[str, str]:
    """An environment in which botocore's default chain finds no credentials at all."""
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    return {
        "AWS_ACCESS_KEY_ID": UNSET,
        "AWS_SECRET_ACCESS_KEY": UNSET,
        "AWS_SESSION_TOKEN": UNSET,
        "AWS_PROFILE": UNSET,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": UNSET,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": UNSET,
        "AWS_WEB_IDENTITY_TOKEN_FILE": UNSET,
    }


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserts there is exactly one)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
