"""``cache-pipeline doctor``: every setting and dependency of the worker, checked once.

One ``Check`` per line, ``ok``, ``FAIL`` or ``skip`` with the reason, in this order:
the settings (QUEUE_URL included), REDIS_TLS_CA_FILE, Redis (PING, the schema
marker, the ACL rights the scripts need), SQS (the queue and the dead-letter queue
exist, the rights to receive, delete and hand back) and the Edge API (one
authenticated request). A check whose dependency failed is skipped. The exit code
is that of the first failed check's class (``cache_pipeline.cli.failures``).

Nothing is written, deleted or hidden. What cannot be checked that way is said in
its line: the right to send to the dead-letter queue (only a real message proves
it), and the receive check counts one receive of at most one message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cache_pipeline.cli.failures import ExitCode, redis_name
from cache_pipeline.client.upstream import EdgeClient, EdgeOptions
from cache_pipeline.config import Settings, load_settings, load_worker_settings
from cache_pipeline.errors import (
    CachePipelineError,
    ConfigError,
    UpstreamNotFound,
    UpstreamRefused,
)
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.sqs.queue import QueueDepth
from cache_pipeline.sqs.wire import sqs_calls
from cache_pipeline.store.connection import ca_file_problem, connect
from cache_pipeline.store.schema import Marker, load_marker
from cache_pipeline.store.writer import RedisClient, translate_errors

State = Literal["ok", "FAIL", "skip"]
EDGE_PROBE_CUSTOMER = "cache-pipeline-doctor"  # any id: a 404 proves the key was accepted
EDGE_BUDGET_SECONDS = 5.0
NO_SHA = "0" * 40
# The commands of docs/security.md's ACL line, each as ACL DRYRUN asks it (``{key}``: a key
# of the environment). tests/test_security.py checks that the two lists are the same.
ACL_COMMANDS: dict[str, tuple[str, ...]] = {
    "ping": ("PING",),
    "info": ("INFO",),
    "get": ("GET", "{key}"),
    "set": ("SET", "{key}", "1"),
    "del": ("DEL", "{key}"),
    "exists": ("EXISTS", "{key}"),
    "expire": ("EXPIRE", "{key}", "1"),
    "persist": ("PERSIST", "{key}"),
    "mget": ("MGET", "{key}"),
    "type": ("TYPE", "{key}"),
    "sadd": ("SADD", "{key}", "1"),
    "smembers": ("SMEMBERS", "{key}"),
    "srem": ("SREM", "{key}", "1"),
    "hget": ("HGET", "{key}", "f"),
    "hset": ("HSET", "{key}", "f", "1"),
    "scan": ("SCAN", "0"),
    "unlink": ("UNLINK", "{key}"),
    "evalsha": ("EVALSHA", NO_SHA, "1", "{key}"),
    "eval": ("EVAL", "return 1", "1", "{key}"),
    "script|load": ("SCRIPT", "LOAD", "return 1"),
    "script|exists": ("SCRIPT", "EXISTS", NO_SHA),
}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the diagnosis."""

    name: str
    state: State
    detail: str
    exit_code: ExitCode = ExitCode.OK  # the class of a failure


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str, exit_code: ExitCode) -> Check:
    return Check(name, "FAIL", detail, exit_code)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


REDIS_CHECKS = ("redis", "redis schema marker", "redis acl")
SQS_CHECKS = ("sqs queue", "sqs dead-letter queue", "sqs receive", "sqs delete and hand back")
LATER_CHECKS = ("redis tls ca file", *REDIS_CHECKS, *SQS_CHECKS, "sqs send", "edge api")


def diagnose(*, acl_user: str | None = None) -> list[Check]:
    """Every check, in order (see the module's docstring)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        reason = "the settings are not valid"
        return [fail("settings", _one_line(exc), ExitCode.SETTINGS)] + [
            skip(name, reason) for name in LATER_CHECKS
        ]
    return [
        check_worker_settings(settings),
        *redis_checks(settings, acl_user),
        *sqs_checks(settings),
        check_edge(settings),
    ]


def render_check(check: Check) -> str:
    return f"{check.state:<4}  {check.name}: {check.detail}"


def summary(checks: list[Check]) -> tuple[str, ExitCode]:
    """The last line (the counts, the exit code and its class) and the exit code."""
    failed = [check for check in checks if check.state == "FAIL"]
    code = failed[0].exit_code if failed else ExitCode.OK
    counts = ", ".join(
        f"{sum(c.state == state for c in checks)} {state}" for state in ("ok", "FAIL", "skip")
    )
    verdict = f"exit {code.value} ({code.name.lower().replace('_', ' ')})" if failed else "exit 0"
    return f"doctor: {counts}; {verdict}", code


# -- settings ------------------------------------------------------------------------------------


def check_worker_settings(settings: Settings) -> Check:
    try:
        load_worker_settings()
    except ConfigError as exc:
        return fail("settings", _one_line(exc), ExitCode.SETTINGS)
    return ok(
        "settings",
        f"valid for the worker (ENVIRONMENT_PREFIX={settings.environment_prefix},"
        f" {redis_name(settings)} db {settings.redis_db}, QUEUE_URL set)",
    )


def check_ca_file(settings: Settings) -> Check:
    name, path = "redis tls ca file", settings.redis_tls_ca_file
    if not settings.redis_tls:
        return skip(name, "REDIS_TLS=0")
    if path is None:
        return skip(name, "unset: the system trust store verifies Redis's certificate")
    problem = ca_file_problem(settings)
    if problem is not None:
        return fail(name, problem, ExitCode.SETTINGS)
    return ok(name, f"{path} is readable")


def _one_line(exc: ConfigError) -> str:
    return "; ".join(str(exc).splitlines())


# -- Redis ---------------------------------------------------------------------------------------


def redis_checks(settings: Settings, acl_user: str | None) -> list[Check]:
    """The CA file, PING, the schema marker and the ACL rights."""
    ca_file = check_ca_file(settings)
    if ca_file.state == "FAIL":
        return [ca_file, *(skip(name, "REDIS_TLS_CA_FILE cannot be read") for name in REDIS_CHECKS)]
    try:
        client = answering(settings)
    except CachePipelineError as exc:
        failed = fail("redis", f"{redis_name(settings)}: {exc}", ExitCode.REDIS)
        return [ca_file, failed, *(skip(n, "Redis did not answer") for n in REDIS_CHECKS[1:])]
    layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
    try:
        return [
            ca_file,
            ok("redis", f"PONG from {redis_name(settings)}{_version(client)}"),
            check_marker(client, layout),
            check_acl(client, layout, acl_user or settings.redis_username or "default", settings),
        ]
    finally:
        client.close()


def answering(settings: Settings) -> RedisClient:
    """A client of the configured Redis that answered PING; raises ``StoreUnavailable`` or
    ``StoreError`` when it does not."""
    client = connect(settings)
    try:
        with translate_errors():
            client.ping()
    except CachePipelineError:
        client.close()
        raise
    return client


def _version(client: RedisClient) -> str:
    try:
        with translate_errors():
            info = client.info("server")
    except CachePipelineError:
        return ""  # INFO refused: the version is a nicety
    version = info.get("redis_version") if isinstance(info, dict) else None
    return f" (Redis {version})" if version else ""


def check_marker(client: RedisClient, layout: KeyLayout) -> Check:
    """The environment's schema marker, read (a missing one is not created)."""
    name = "redis schema marker"
    try:
        marker = load_marker(client, layout.schema_marker)
    except CachePipelineError as exc:
        return fail(name, str(exc), ExitCode.REDIS)
    if marker is None:
        return ok(name, f"{layout.schema_marker} absent: a new environment (the worker writes it)")
    if marker.version != SCHEMA_VERSION:
        return fail(
            name,
            f"version {marker.version}, this release writes {SCHEMA_VERSION}:"
            " run `cache-pipeline migrate` (docs/contract.md)",
            ExitCode.REDIS,
        )
    if marker.needs_resync:
        return fail(
            name,
            f"{describe_marker(marker)}: Redis lost this environment's data and no resync"
            " finished since; run `cache-pipeline resync SCOPES`",
            ExitCode.REDIS,
        )
    return ok(name, describe_marker(marker))


def describe_marker(marker: Marker) -> str:
    return (
        f"version {marker.version}, createdAt {iso_ms(marker.created_at)},"
        f" lossDetectedAt {iso_ms(marker.loss_detected_at)},"
        f" resyncedAt {iso_ms(marker.resynced_at)}"
    )


def iso_ms(ms: int | None) -> str:
    """Epoch milliseconds as ``2025-01-02T03:04:05Z``; ``-`` for none."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_acl(client: RedisClient, layout: KeyLayout, user: str, settings: Settings) -> Check:
    """ACL DRYRUN of every command the service needs, as ``user``, on the environment's keys."""
    name = "redis acl"
    commands = dict(ACL_COMMANDS)
    if settings.redis_db != 0:
        commands["select"] = ("SELECT", str(settings.redis_db))
    refusals: list[str] = []
    for command, args in commands.items():
        answer = _dry_run(client, user, [a.replace("{key}", layout.schema_marker) for a in args])
        if isinstance(answer, Check):
            return answer
        if answer != "OK":
            refusals.append(f"{command} ({answer})")
    if refusals:
        return fail(name, f"user {user!r} may not run: " + "; ".join(refusals), ExitCode.REDIS)
    return ok(name, f"user {user!r} may run the {len(commands)} commands the service needs")


def _dry_run(client: RedisClient, user: str, args: list[str]) -> str | Check:
    """Redis's answer to ``ACL DRYRUN user args...`` (``OK`` or why not), or the check that
    says why it cannot be asked."""
    name = "redis acl"
    try:
        with translate_errors():
            return str(client.acl_dryrun(user, *args))
    except CachePipelineError as exc:
        text = str(exc)
    if "no permissions" in text.lower() or "NOPERM" in text:
        return skip(
            name,
            "this user may not run ACL DRYRUN (the worker's user needs no ACL command): run"
            " `cache-pipeline doctor --acl-user USER` as an administrator to check USER",
        )
    if "unknown subcommand" in text.lower():
        return skip(name, "ACL DRYRUN needs Redis 7 or later")
    return fail(name, text, ExitCode.REDIS)


# -- SQS -----------------------------------------------------------------------------------------


def sqs_checks(settings: Settings) -> list[Check]:
    """The queue and the dead-letter queue exist; the worker's rights on the queue."""
    send = skip("sqs send", "not checked: only a message sent to the dead-letter queue proves it")
    if not settings.queue_url:
        return [*(skip(name, "QUEUE_URL is not set") for name in SQS_CHECKS), send]
    queue = SqsQueue(
        sqs_calls(settings), settings.queue_url, dead_letter_url=settings.dead_letter_queue_url
    )
    try:
        found = check_queue_exists(queue)
        checks = [found, check_dead_letter_exists(queue)]
        if found.state == "FAIL":
            return [*checks, *(skip(n, "the queue cannot be read") for n in SQS_CHECKS[2:]), send]
        return [*checks, *_rights(queue), send]
    finally:
        queue.close()


def check_queue_exists(queue: SqsQueue) -> Check:
    url = queue.queue_url
    return _sqs_check("sqs queue", url, lambda: f"{_depth(queue.depth())} ({url})")


def check_dead_letter_exists(queue: SqsQueue) -> Check:
    name = "sqs dead-letter queue"
    if not queue.has_dead_letter:
        return skip(name, "DEAD_LETTER_QUEUE_URL is not set: poison waits for the redrive policy")
    url = queue.dead_letter_url
    return _sqs_check(name, url, lambda: f"{_depth(queue.depth(dead_letter=True))} ({url})")


def _rights(queue: SqsQueue) -> list[Check]:
    def receive() -> str:
        count = queue.probe_receive()
        return f"allowed ({count} message(s) received and left visible; counted as a receive)"

    def settle() -> str:
        queue.probe_settle()
        return "allowed (asked with a receipt that names no message: nothing changed)"

    url = queue.queue_url
    return [
        _sqs_check("sqs receive", url, receive),
        _sqs_check("sqs delete and hand back", url, settle),
    ]


def _sqs_check(name: str, url: str | None, run: Callable[[], str]) -> Check:
    """``run``'s answer as the check's detail, or its failure naming the queue ``url``."""
    try:
        return ok(name, run())
    except CachePipelineError as exc:
        return fail(name, f"{url}: {exc}", ExitCode.SQS)


def _depth(depth: QueueDepth) -> str:
    return f"exists: {depth.described}"


# -- the Edge API --------------------------------------------------------------------------------


def check_edge(settings: Settings) -> Check:
    """One authenticated request for a customer that need not exist."""
    name = "edge api"
    if settings.server_api_key is None:
        return skip(name, "SERVER_API_KEY is not set (resync and the SDK's misses need it)")
    options = EdgeOptions(
        url=settings.edge_api_url,
        api_key=settings.server_api_key.get_secret_value(),
        budget_seconds=EDGE_BUDGET_SECONDS,
        retries=0,
    )
    edge = EdgeClient(options)
    try:
        edge.fetch(EDGE_PROBE_CUSTOMER)
    except UpstreamNotFound:
        return ok(name, f"{settings.edge_api_url} accepted SERVER_API_KEY (404: no such customer)")
    except UpstreamRefused as exc:
        return fail(name, f"SERVER_API_KEY was refused: {exc}", ExitCode.EDGE_API)
    except CachePipelineError as exc:
        return fail(name, f"{settings.edge_api_url}: {exc}", ExitCode.EDGE_API)
    finally:
        edge.close()
    return ok(name, f"{settings.edge_api_url} accepted SERVER_API_KEY")
