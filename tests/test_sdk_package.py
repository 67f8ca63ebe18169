"""``pip install cache-pipeline`` alone is the reader SDK: built as a wheel (one top-level
package, ``cache_pipeline``), installed into a fresh virtualenv without the worker's extra, it
reads entitlements from a real redis-server and loads nothing of the worker."""

from __future__ import annotations

import json
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest
import redis

from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import metered
from tests.support.servers import RedisServer
from tests.support.v2_writes import write_scope

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
WORKER_ONLY = {
    "celery",
    "kombu",
    "boto3",
    "botocore",
    "fastapi",
    "starlette",
    "uvicorn",
    "loguru",
    "sentry-sdk",
    "prometheus-client",
    "prometheus-fastapi-instrumentator",
    "click",
    "psutil",
}
READ = """
import json, sys
from cache_pipeline.client import EntitlementsCache

cache = EntitlementsCache(redis_host="127.0.0.1", redis_port=int(sys.argv[1]),
                          environment_prefix=sys.argv[2], edge_api_url="http://127.0.0.1:9")
seats = cache.get_metered_entitlement("cus-sdk", "seats", requested_usage=7)
source = cache.get_entitlements("cus-sdk").source
cache.close()
heavy = sorted(name for name in ("celery", "kombu", "boto3", "fastapi", "loguru", "sentry_sdk")
               if name in sys.modules)
print(json.dumps({"access": seats.has_access, "usage": seats.current_usage,
                  "source": source, "worker_modules": heavy}))
"""


def run(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (
        f"{' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def test_the_bare_package_reads_entitlements_without_the_worker_dependencies(
    tmp_path: Path,
    redis_server: RedisServer,
    prefixed_redis: redis.Redis,
    prefix: str,
) -> None:
    # The fresh venv's own pip builds the wheel: the suite's venv (made by uv) has no pip.
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    wheels = tmp_path / "wheels"
    run(python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("cache_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"cache_pipeline"}
    run(python, "-m", "pip", "install", "--quiet", str(wheel))
    installed = {
        item["name"].lower()
        for item in json.loads(run(python, "-m", "pip", "list", "--format", "json"))
    }
    assert {"redis", "httpx", "pydantic", "cache-pipeline"} <= installed
    assert not installed & WORKER_ONLY, sorted(installed & WORKER_ONLY)

    write_scope(prefixed_redis, KeyLayout(prefix), "cus-sdk", [metered("seats", 10, 3)])
    answer = json.loads(run(python, "-c", READ, str(redis_server.port), prefix, cwd=tmp_path))
    assert answer == {"access": True, "usage": 3, "source": "cache", "worker_modules": []}
