"""Secrets, access and exposure, checked against the real worker, redis-server and image recipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cache_pipeline.cli.doctor import ACL_COMMANDS
from cache_pipeline.cli.resync import run_resync
from cache_pipeline.client import EntitlementsCache
from cache_pipeline.config import CacheUpdatePolicy, load_settings
from cache_pipeline.contract.scopes import ScopeRef
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.cli import run_cli
from tests.support.dockerfile import parse
from tests.support.edge import STUB_API_KEY, EdgeStub, feature
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, free_port, wait_until
from tests.support.snapshot import read_state
from tests.support.worker import (
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    send,
    wait_for_state,
    worker_env,
)

ROOT = Path(__file__).resolve().parents[1]
ACL_USER = "cache-pipeline"


# --- secrets ------------------------------------------------------------------------------------


@pytest.fixture
def secrets() -> dict[str, str]:
    """Unique values, so finding one anywhere can only mean it leaked."""
    tag = uuid.uuid4().hex
    return {
        "SERVER_API_KEY": f"api-key-{tag}",
        "REDIS_PASSWORD": f"redis-pw-{tag}",
        "SENTRY_DSN": f"http://sentrykey{tag}@127.0.0.1:{free_port()}/1",
        "AWS_SECRET_ACCESS_KEY": f"aws-secret-{tag}",
    }


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets whose value (or the key part of the DSN) appears in ``text``."""
    needles = dict(secrets)
    needles["SENTRY_DSN key"] = secrets["SENTRY_DSN"].split("//")[1].split("@")[0]
    return [name for name, value in needles.items() if value in text]


def test_secrets_never_reach_logs_metrics_or_probes(
    secrets: dict[str, str], sqs_server: SqsServer, prefix: str
) -> None:
    password = secrets["REDIS_PASSWORD"]
    server = RedisServer(extra_args=["--requirepass", password]).start()
    admin = server.client(password=password)
    queue = create_queue(sqs_server.client())
    env = {
        **worker_env(queue, sqs_server, server, prefix),
        **secrets,
        "LOG_LEVEL": "debug",
        "DISABLE_SENTRY": "0",
        "REDIS_TIMEOUT_SECS": "1",
    }
    workers = Workers(env)
    try:
        worker = workers.start()
        good = [factory.entitlements("cus-1", 10, features={"seats": 1})]
        send(sqs_server, queue, [*good, "{not json", factory.usage("cus-1", -1, "f", 1)])
        wait_for_state(admin, prefix, expected_state(prefix, good, CacheUpdatePolicy.UPSERT))
        server.kill()  # the error paths: connection failures, retries, paused readiness
        wait_until(lambda: worker.readyz()["status"] == "DOWN", timeout=30, what="paused")
        send(sqs_server, queue, [factory.usage("cus-1", 20, "seats", 2)])
        wait_until(lambda: "unavailable" in worker.output(), timeout=30, what="write failed")
        probes = worker.http.get("/readyz").text + worker.http.get("/livez").text
        server.start()
        wait_until(lambda: worker.readyz()["status"] == "UP", timeout=30, what="resumed")
        probes += worker.http.get("/readyz").text + worker.http.get("/metrics").text
        workers.stop_all()
        output = worker.log.read_text(errors="replace")
    finally:
        workers.stop_all()
        admin.close()
        server.stop()

    assert "unavailable" in output  # the outage was logged...
    assert leaks(output, secrets) == []  # ...without a secret in any line
    assert leaks(probes, secrets) == []
    config = subprocess.run(
        [sys.executable, "-m", "cache_pipeline", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **AWS_TEST_ENV, **secrets, "QUEUE_URL": queue},
    )
    assert config.returncode == 0, config.stderr
    assert leaks(config.stdout + config.stderr, secrets) == []


# --- the HTTP surface ---------------------------------------------------------------------------

COMMON_PATHS = [
    "/",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/docs/oauth2-redirect",
    "/admin",
    "/debug",
    "/debug/pprof",
    "/env",
    "/config",
    "/settings",
    "/health",
    "/healthz",
    "/status",
    "/server-status",
    "/.env",
    "/.git/config",
    "/livez/x",
    "/readyz/details",
    "/metrics/x",
    "/etc/passwd",
    "/..%2f..%2fetc%2fpasswd",
    "/api",
    "/v1/customers",
    "/_stub/requests",
    "/flower",
    "/actuator/env",
    "/console",
    "/shutdown",
    "/robots.txt",
]


@pytest.fixture
def worker_surface(
    sqs_server: SqsServer, redis_server: RedisServer, prefix: str
) -> Iterator[Workers]:
    workers = Workers(
        worker_env(create_queue(sqs_server.client()), sqs_server, redis_server, prefix)
    )
    yield workers
    workers.stop_all()


def test_only_the_probes_and_metrics_are_served(worker_surface: Workers) -> None:
    worker = worker_surface.start()
    http = worker.http
    for path in ("/livez", "/readyz", "/metrics"):
        assert http.get(path).status_code == 200, path
    exposed = {
        path: status
        for path in COMMON_PATHS
        if (status := http.get(path, follow_redirects=False).status_code) != 404
    }
    assert exposed == {}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/livez", "/readyz", "/metrics"):
            assert http.request(method, path).status_code == 405, (method, path)


# --- the Redis ACL user -------------------------------------------------------------------------


def documented_acl_line() -> str:
    text = (ROOT / "docs" / "security.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith(f"user {ACL_USER} on ")]
    assert len(lines) == 1, "docs/security.md must give exactly one ACL line"
    return lines[0]


def acl_arguments(prefix: str, password: str) -> list[str]:
    """The documented line for this prefix and password, as redis-server arguments."""
    line = documented_acl_line()
    line = line.replace(">CHANGE-ME", f">{password}").replace("~production:*", f"~{prefix}:*")
    assert f"~{prefix}:*" in line
    return ["--user", *line.split()[1:]]


@pytest.fixture
def acl_redis(prefix: str) -> Iterator[tuple[RedisServer, redis.Redis, str]]:
    """redis-server whose only users are the documented one and an administrator."""
    password, admin_password = uuid.uuid4().hex, uuid.uuid4().hex
    args = [
        *acl_arguments(prefix, password),
        *("--user", "admin", "on", f">{admin_password}", "~*", "&*", "+@all"),
        *("--user", "default", "off"),
    ]
    server = RedisServer(extra_args=args)
    server.start()
    admin = server.client(username="admin", password=admin_password)
    yield server, admin, password
    admin.close()
    server.stop()


def acl_refusals(admin: redis.Redis) -> list[str]:
    return [str(entry) for entry in admin.acl_log()]


def test_the_documented_acl_user_is_enough_and_no_more(
    acl_redis: tuple[RedisServer, redis.Redis, str], sqs_server: SqsServer, prefix: str
) -> None:
    server, admin, password = acl_redis
    credentials = {"REDIS_USERNAME": ACL_USER, "REDIS_PASSWORD": password}
    queue = create_queue(sqs_server.client())
    workers = Workers({**worker_env(queue, sqs_server, server, prefix), **credentials})
    stub = EdgeStub().start()
    try:
        worker = workers.start()
        bodies = [
            factory.entitlements("cus-1", 10, features={"seats": 1}, credits={"tokens": 5}),
            factory.entitlements("cus-2", 10, features={"seats": 2}),
            factory.usage("cus-1", 20, "seats", 3),
            factory.credits("cus-1", 30, "tokens", 7),
            factory.invalidation(40, "cus-2"),
            factory.invalidation(50, everything=True),
            factory.entitlements("cus-3", 60, features={"seats": 3}),
        ]
        send(sqs_server, queue, bodies)
        model = expected_state(prefix, bodies, CacheUpdatePolicy.UPSERT)
        wait_for_state(admin, prefix, model)
        wait_until(lambda: queue_depth(sqs_server, queue) == 0, what="queue drained")
        metrics = worker.http.get("/metrics").text
        assert re.search(r"^persistent_cache_memory_usage_bytes [1-9]", metrics, re.M), metrics

        stub.put("cus-9", {"entitlements": [feature("sso")]})
        settings = load_settings(
            redis_port=server.port,
            environment_prefix=prefix,
            edge_api_url=stub.url,
            server_api_key=STUB_API_KEY,
            redis_username=ACL_USER,
            redis_password=password,
        )
        with EntitlementsCache(settings) as cache:
            assert cache.get_entitlements("cus-3").source == "cache"
            assert cache.get_entitlement("cus-9", "sso").has_access  # miss, then write-back
        resynced = run_resync(settings, [ScopeRef("cus-9")])
        assert resynced.complete
        assert resynced.written + resynced.stale == 1
        assert KeyLayout(prefix).customer("cus-9").entitlements in read_state(
            admin, KeyLayout(prefix)
        )
    finally:
        stub.stop()
        workers.stop_all()
    assert acl_refusals(admin) == []  # nothing the service did was refused

    limited = server.client(username=ACL_USER, password=password)
    try:
        refused: list[Callable[[], object]] = [
            limited.flushall,
            lambda: limited.keys("*"),
            lambda: limited.config_get("*"),
            limited.acl_list,
        ]
        for command in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                command()
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.set("other-environment:c_x", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.get("other-environment:c_x")
    finally:
        limited.close()


def test_doctor_dry_runs_exactly_the_documented_commands() -> None:
    documented = {token[1:] for token in documented_acl_line().split() if token.startswith("+")}
    assert set(ACL_COMMANDS) == documented


def doctor_acl_line(env: dict[str, str], *args: str) -> tuple[str, int]:
    result = run_cli("doctor", *args, env=env)
    (line,) = [line for line in result.stdout.splitlines() if " redis acl: " in line]
    return line, result.returncode


def test_doctor_checks_the_documented_users_rights_as_an_administrator(
    acl_redis: tuple[RedisServer, redis.Redis, str], sqs_server: SqsServer, prefix: str
) -> None:
    """As the worker's user ACL DRYRUN is refused (it needs no ACL command): skipped, and
    refused once in ACL LOG. An administrator checks that user, and sees a right taken away."""
    server, admin, password = acl_redis
    env = {**worker_env(create_queue(sqs_server.client()), sqs_server, server, prefix)}
    as_worker = {**env, "REDIS_USERNAME": ACL_USER, "REDIS_PASSWORD": password}
    line, code = doctor_acl_line(as_worker)
    assert line.startswith("skip  redis acl: this user may not run ACL DRYRUN")
    assert code == 0
    assert [entry["object"] for entry in admin.acl_log()] == ["acl|dryrun"]

    admin_password = str(admin.connection_pool.connection_kwargs["password"])
    as_admin = {**env, "REDIS_USERNAME": "admin", "REDIS_PASSWORD": admin_password}
    line, code = doctor_acl_line(as_admin, "--acl-user", ACL_USER)
    assert line == f"ok    redis acl: user {ACL_USER!r} may run the 21 commands the service needs"
    assert code == 0
    admin.acl_setuser(ACL_USER, commands=["-scan"])
    line, code = doctor_acl_line(as_admin, "--acl-user", ACL_USER)
    assert line == (
        f"FAIL  redis acl: user {ACL_USER!r} may not run:"
        " scan (This user has no permissions to run the 'scan' command)"
    )
    assert code == 3


# --- the container ------------------------------------------------------------------------------


def test_the_container_runs_as_non_root() -> None:
    _, stages = parse(ROOT / "Dockerfile")
    users = stages[-1].args("USER")
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "a numeric uid lets Kubernetes enforce runAsNonRoot"
    assert int(user) != 0
    assert not group or int(group) != 0
