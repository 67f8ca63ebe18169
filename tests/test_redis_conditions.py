"""Ordinary Redis conditions against the real worker: it waits, says why, resumes, loses nothing.

Each test starts a redis-server of its own and the real worker, applies a
stream, puts Redis in one condition while more messages arrive, and checks
that /readyz is DOWN with a machine-readable reason meanwhile (and /livez UP:
a restart would not help), that the worker resumes by itself once Redis
recovers, and that Redis then equals the contract model with the queue empty.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from cache_pipeline.store.scripts import script_source
from tests.support.flow import FAST, Flow
from tests.support.servers import RedisServer, SqsServer, free_port, wait_until
from tests.support.worker import Workers, queue_depth, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MakeFlow = Callable[..., Flow]


@pytest.fixture
def make_flow(sqs_server: SqsServer, queue_url: str, prefix: str) -> Iterator[Callable[..., Flow]]:
    """``make_flow(redis_server, **env)``: a worker on that Redis, seeded and consuming."""
    started: list[tuple[Workers, redis.Redis]] = []

    def make(server: RedisServer, admin: redis.Redis | None = None, **env: str) -> Flow:
        workers = Workers(worker_env(queue_url, sqs_server, server, prefix, **FAST, **env))
        admin = admin or server.client()
        started.append((workers, admin))
        flow = Flow(sqs_server, queue_url, admin, prefix, workers.start())
        flow.seed()
        return flow

    yield make
    for workers, admin in started:
        workers.stop_all()
        admin.close()


def test_out_of_memory_pauses_writes_until_memory_is_back(
    make_flow: MakeFlow, own_redis: RedisServer
) -> None:
    flow = make_flow(own_redis)
    admin = flow.admin
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # below what Redis already uses: every write is refused
    flow.stream(80, seed_value=1)
    body = flow.down_for("redis_writes_failing")
    assert "OutOfMemoryError" in body["message"]
    assert body["redis"] == "CONNECTED"  # it answers PING: readiness must not trust that alone
    admin.config_set("maxmemory", "0")
    flow.up()
    flow.check()


def test_a_read_only_replica_pauses_writes_until_it_is_a_primary_again(
    make_flow: MakeFlow, own_redis: RedisServer
) -> None:
    flow = make_flow(own_redis)
    flow.admin.replicaof("127.0.0.1", free_port())  # a primary that does not exist
    flow.stream(80, seed_value=2)
    assert "ReadOnlyError" in flow.down_for("redis_writes_failing")["message"]
    flow.admin.replicaof("NO", "ONE")
    flow.up()
    flow.check()


def test_a_replica_without_its_primary_pauses_until_it_is_one_again(
    make_flow: MakeFlow, own_redis: RedisServer
) -> None:
    flow = make_flow(own_redis)
    flow.admin.config_set("replica-serve-stale-data", "no")
    flow.admin.replicaof("127.0.0.1", free_port())
    flow.stream(80, seed_value=3)
    flow.down_for("redis_unreachable")  # MASTERDOWN answers PING too
    flow.admin.replicaof("NO", "ONE")
    flow.admin.config_set("replica-serve-stale-data", "yes")
    flow.up()
    flow.check()


def test_another_clients_busy_script_while_the_queue_is_idle(
    make_flow: MakeFlow, own_redis: RedisServer
) -> None:
    flow = make_flow(own_redis)
    flow.admin.config_set("busy-reply-threshold", "100")
    busy = own_redis.client()
    script = threading.Thread(
        target=lambda: _swallow(lambda: busy.eval("while true do end", 0)), daemon=True
    )
    script.start()
    try:
        flow.down_for("redis_unreachable")  # BUSY answers PING and the schema check alike
        time.sleep(6)  # the fault itself: beyond a schema check (every 5 s) of the idle worker
        flow.assert_alive()
    finally:
        killer = own_redis.client()
        wait_until(lambda: _script_killed(killer, script), what="the busy script killed")
        killer.close()
        busy.close()
    flow.up()
    flow.stream(60, seed_value=4)
    flow.check()


def test_a_redis_still_loading_its_data_after_a_restart(
    make_flow: MakeFlow, sqs_server: SqsServer
) -> None:
    server = RedisServer(extra_args=["--dbfilename", "dump.rdb"]).start()
    try:
        flow = make_flow(server, admin=server.client())
        filler = server.client()
        pipe = filler.pipeline(transaction=False)
        for i in range(30_000):  # other data, so that loading takes a while
            pipe.set(f"other:{i}", "x" * 20)
        pipe.execute()
        filler.save()
        filler.close()
        server.stop()
        # 100 microseconds per key, answering clients (LOADING) every KiB: seconds of LOADING
        server.extra_args += [
            "--key-load-delay",
            "100",
            "--loading-process-events-interval-bytes",
            "1024",
        ]
        server.start(wait=False)
        wait_until(lambda: _raw_ping(server.port).startswith(b"-LOADING"), what="loading")
        flow.stream(80, seed_value=5)
        flow.down_for("redis_unreachable")
        wait_until(server.ping, timeout=60, what="redis loaded")
        assert "BusyLoadingError" in flow.worker.output()  # the writes met LOADING
        flow.admin = server.client()
        flow.up()
        flow.check()
    finally:
        server.stop()


def test_the_script_cache_flushed_again_and_again(
    make_flow: MakeFlow, own_redis: RedisServer
) -> None:
    """Every flush makes the worker's next EVALSHA a NOSCRIPT: it loads the script again.

    Redis's own counters show it happened (NOSCRIPT errors, failed EVALSHA calls, the
    worker's SCRIPT LOADs: no other client sends those), and one flush more shows the
    scripts gone and back once the worker wrote again.
    """
    flow = make_flow(own_redis)
    admin = flow.admin
    admin.config_resetstat()
    stop = threading.Event()
    flusher = own_redis.client()

    def flush() -> None:
        while not stop.wait(0.02):
            _swallow(flusher.script_flush)

    thread = threading.Thread(target=flush, daemon=True)
    thread.start()
    try:
        flow.stream(150, seed_value=6)
        wait_until(  # the fault itself: scripts reloaded a few times, or the stream done
            lambda: _script_counts(admin)["loads"] >= 3 or queue_depth(flow.sqs, flow.queue) == 0,
            timeout=60,
            what="the worker reloading its scripts",
        )
    finally:
        stop.set()
        thread.join(10)
        flusher.close()
    flow.check()
    during = _script_counts(admin)
    print(f"while flushed every 20 ms: {during}")
    assert during["noscript"] >= 1
    assert during["failed_evalsha"] >= 1
    assert during["loads"] >= 1

    admin.script_flush()
    assert admin.script_exists(*WRITE_SCRIPTS.values()) == [False, False]
    admin.config_resetstat()
    flow.stream(40, seed_value=9)  # usage and scope writes: both scripts
    flow.check()
    after = _script_counts(admin)
    print(f"after one flush more: {after}")
    assert after["noscript"] >= 1
    assert after["loads"] >= 1
    assert admin.script_exists(*WRITE_SCRIPTS.values()) == [True, True]
    flow.up()


def test_a_password_rotation_waits_for_the_accepted_password(
    make_flow: MakeFlow, sqs_server: SqsServer
) -> None:
    server = RedisServer(extra_args=["--requirepass", "first-secret"]).start()
    admin = server.client(password="first-secret")
    try:
        flow = make_flow(server, admin=admin, REDIS_PASSWORD="first-secret")
        admin.config_set("requirepass", "second-secret")  # the worker's password is refused now
        admin.client_kill_filter(_type="normal", skipme=True)
        flow.stream(80, seed_value=7)
        assert flow.down_for("redis_unreachable")["redis"] == "DISCONNECTED"
        time.sleep(3)  # the fault itself: every reconnect is refused
        flow.assert_alive()
        admin.config_set("requirepass", "first-secret")  # the worker's secret is valid again
        flow.up()
        flow.check()
    finally:
        server.stop()


def test_a_schema_marker_of_the_wrong_type_pauses_until_it_is_readable(
    make_flow: MakeFlow, own_redis: RedisServer, prefix: str
) -> None:
    flow = make_flow(own_redis)
    marker = f"{prefix}:__schema__"
    original = flow.admin.get(marker)
    assert original is not None
    flow.admin.delete(marker)
    flow.admin.lpush(marker, "not a marker")
    flow.stream(80, seed_value=8)
    body = flow.down_for("schema_refused", timeout=30)
    assert "WRONGTYPE" in body["message"]
    flow.admin.delete(marker)
    flow.admin.set(marker, original)
    flow.up(timeout=30)
    flow.check()
    assert "redis_data" not in flow.readyz().get("details", {})  # not mistaken for a data loss


def _raw_ping(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64)
    except OSError:
        return b""


WRITE_SCRIPTS = {  # what EVALSHA names them by: the SHA-1 of the text Redis gets
    name: hashlib.sha1(script_source(name).encode(), usedforsecurity=False).hexdigest()
    for name in ("v2_write_usage", "v2_write_scope")
}


def _script_counts(admin: redis.Redis) -> dict[str, int]:
    """Since CONFIG RESETSTAT: NOSCRIPT errors, failed EVALSHA calls and SCRIPT LOADs."""
    commands = admin.info("commandstats")
    errors = admin.info("errorstats")
    return {
        "noscript": int(errors.get("errorstat_NOSCRIPT", {}).get("count", 0)),
        "failed_evalsha": int(commands.get("cmdstat_evalsha", {}).get("failed_calls", 0)),
        "evalsha": int(commands.get("cmdstat_evalsha", {}).get("calls", 0)),
        "loads": int(commands.get("cmdstat_script|load", {}).get("calls", 0)),
    }


def _script_killed(killer: redis.Redis, script: threading.Thread) -> bool:
    """SCRIPT KILL until the thread that ran the script has its answer, and Redis answers."""
    try:
        killer.script_kill()
    except redis.ResponseError as exc:
        if not str(exc).startswith("NOTBUSY"):  # BUSY or other: try again
            raise
    script.join(0.1)
    return not script.is_alive() and bool(killer.ping())


def _swallow(call: Callable[[], object]) -> bool:
    try:
        call()
    except redis.RedisError:
        return False
    return True
