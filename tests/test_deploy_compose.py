"""compose.yaml, .env.example and the LocalStack init hook, checked without Docker.

compose.yaml is validated against the Compose Specification's JSON schema (the
copy check-jsonschema ships), every file it refers to must exist, the
settings file must be accepted by the service's settings model, the
healthcheck commands run for real against a loopback /readyz, and the init
hook creates the queue and its dead-letter queue on a real SQS server (moto).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from dotenv import dotenv_values

from cache_pipeline.cli.main import cli
from cache_pipeline.config import SHUTDOWN_GRACE_SECS, Settings, load_worker_settings
from cache_pipeline.dev.cli import dev
from tests.support.servers import AWS_TEST_ENV, SqsServer
from tests.support.status_server import status_server

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
INIT_HOOK = ROOT / "deploy" / "localstack" / "init_sqs.py"
AWS_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_spec_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_spec_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_schema_check_catches_a_broken_service(compose: dict[str, Any]) -> None:
    schema = compose_spec_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "sometimes"
    broken["services"]["worker"]["restartt"] = "always"
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_referenced_file_exists(compose: dict[str, Any]) -> None:
    referenced: list[str] = []
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            referenced += [build["context"], str(Path(build["context"]) / build["dockerfile"])]
        for env_file in service.get("env_file", []):
            referenced.append(env_file["path"] if isinstance(env_file, dict) else env_file)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                referenced.append(source)
    assert referenced
    missing = [path for path in referenced if not (ROOT / path).exists()]
    assert missing == []


def test_stack_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "localstack", "edge-stub", "worker", "demo-feed"}
    worker, stub, feed = services["worker"], services["edge-stub"], services["demo-feed"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert worker["command"] == ["worker"]
    assert "worker" in cli.commands
    assert worker["read_only"] is True
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["localstack"]["condition"] == "service_healthy"
    for other in (stub, feed):
        assert other["image"] == worker["image"], "every app service runs the same image"
    assert "exec python -m cache_pipeline.dev edge-stub --file /tmp/" in stub["command"][0]
    assert "edge-stub" in dev.commands
    assert feed["entrypoint"] == ["python", "-m", "cache_pipeline.dev"]
    assert feed["command"][0] == "publish"
    assert "publish" in dev.commands
    localstack = services["localstack"]
    assert localstack["environment"]["SERVICES"] == "sqs"
    hooks = [v for v in localstack["volumes"] if "/etc/localstack/init/ready.d/" in v]
    assert hooks == [f"./{INIT_HOOK.relative_to(ROOT)}:/etc/localstack/init/ready.d/init_sqs.py:ro"]
    for name in ("redis", "localstack", "edge-stub", "worker"):
        assert services[name]["healthcheck"]["test"], name


def test_the_worker_gets_the_grace_its_bounded_shutdown_needs(compose: dict[str, Any]) -> None:
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace.removesuffix("s")) >= SHUTDOWN_GRACE_SECS


def test_env_example_points_at_the_compose_services(compose: dict[str, Any]) -> None:
    values = {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}
    unknown = {k for k in values if k.lower() not in Settings.model_fields} - AWS_VARIABLES
    assert unknown == set(), "every variable is a setting of the service"
    settings = load_worker_settings(
        **{k.lower(): v for k, v in values.items() if k.lower() in Settings.model_fields},
    )
    services = set(compose["services"])
    assert settings.redis_host in services
    for url in (settings.sqs_endpoint_url, settings.queue_url, settings.dead_letter_queue_url):
        assert url is not None
        assert urlparse(url).hostname == "localstack"
    assert urlparse(settings.edge_api_url).hostname == "edge-stub"
    queue, dlq = compose_queue_names(compose)
    assert f"{settings.queue_url}".endswith("/" + queue)
    assert f"{settings.dead_letter_queue_url}".endswith("/" + dlq)
    assert str(settings.port) in " ".join(compose["services"]["worker"]["ports"])


def compose_queue_names(compose: dict[str, Any]) -> tuple[str, str]:
    environment = compose["services"]["localstack"]["environment"]
    return environment["QUEUE_NAME"], environment["DLQ_NAME"]


@pytest.mark.parametrize(
    ("service", "port", "path"),
    [("worker", 4000, "/readyz"), ("edge-stub", 8787, "/_stub/requests")],
)
def test_healthchecks_follow_the_endpoint(
    compose: dict[str, Any], service: str, port: int, path: str
) -> None:
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"127.0.0.1:{port}{path}" in test[3]
    with status_server() as server:
        code = test[3].replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.server_address[1]}")
        run = [sys.executable, "-c", code]
        assert subprocess.run(run, timeout=30, check=False).returncode == 0
        server.status = 503
        failed = subprocess.run(run, capture_output=True, timeout=30, check=False)
        assert failed.returncode != 0
        assert server.paths == [path, path]


def queue_attributes(sqs_server: SqsServer, name: str) -> dict[str, str]:
    client = sqs_server.client()
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        reply = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        return {str(name): value for name, value in reply["Attributes"].items()}
    finally:
        client.close()


def test_init_hook_creates_queue_and_dead_letter_queue(
    sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **AWS_TEST_ENV,
        "AWS_ENDPOINT_URL": sqs_server.endpoint,
        "QUEUE_NAME": f"init-{suffix}",
        "DLQ_NAME": f"init-{suffix}-dlq",
        "MAX_RECEIVE_COUNT": "4",
        "VISIBILITY_TIMEOUT": "45",
    }
    # As a plain script ...
    result = subprocess.run(
        [sys.executable, str(INIT_HOOK)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # ... and again the way LocalStack runs ready hooks (exec, not __main__), in an
    # interpreter without localstack-client as LocalStack's own: idempotent.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "localstack_client.session", None)
    code = compile(INIT_HOOK.read_text(), str(INIT_HOOK), "exec")
    exec(code, {"__file__": str(INIT_HOOK), "__name__": "ready.d"})  # noqa: S102
    queue = queue_attributes(sqs_server, f"init-{suffix}")
    dlq = queue_attributes(sqs_server, f"init-{suffix}-dlq")
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 4
    assert queue["VisibilityTimeout"] == "45"
