"""SQS conditions against the real worker: a missing queue, missing or rejected credentials,
access denied, throttling. The worker keeps running, /readyz says why it does not consume,
and once the condition is gone it resumes by itself and Redis equals the contract model.

Credentials come from a shared credentials file the test writes (the default chain reads
it), so they can appear or change while the worker runs. Rejected credentials and access
denied need a server that checks them: a moto server of the test's own with IAM
authentication on. Throttling comes from ``SqsFaultProxy`` in front of the suite's server.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis

from cache_pipeline.sqs.client import SqsQueue
from tests.support.flow import FAST, Flow
from tests.support.servers import (
    AWS_TEST_CLIENT_ARGS,
    AWS_TEST_ENV,
    RedisServer,
    SqsServer,
    StaticCredentials,
    queue_at,
)
from tests.support.sqs_proxy import THROTTLED, SqsFaultProxy
from tests.support.worker import WorkerProcess, Workers, create_queue, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

NO_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}


@pytest.fixture
def workers() -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for manager in made:
        manager.stop_all()


def start(made: list[Workers], env: dict[str, str]) -> WorkerProcess:
    manager = Workers({**env, **FAST})
    made.append(manager)
    return manager.start()


def credentials_file(tmp_path: Path, key: str | None, secret: str | None = None) -> dict[str, str]:
    """Settings that make the default chain read ``tmp_path/credentials`` and nothing else."""
    path = tmp_path / "credentials"
    secret = secret or AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"]
    if key is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    return {
        **NO_KEYS,
        "AWS_SHARED_CREDENTIALS_FILE": str(path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_a_queue_created_after_the_worker_started(
    workers: list[Workers],
    sqs_server: SqsServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    client = sqs_server.client()
    name = f"later-{uuid.uuid4().hex[:12]}"
    url = client.create_queue(QueueName=name)["QueueUrl"]
    client.delete_queue(QueueUrl=url)  # the worker starts on the URL of a queue that is gone
    worker = start(workers, worker_env(url, sqs_server, redis_server, prefix))
    flow = Flow(sqs_server, url, redis_client, prefix, worker)
    body = flow.down_for("queue_receives_failing")
    assert "missing_queue" in body["message"]
    assert client.create_queue(QueueName=name)["QueueUrl"] == url
    flow.seed()
    flow.stream(60, seed_value=21)
    flow.check()
    flow.up()


def test_credentials_that_appear_after_the_worker_started(
    workers: list[Workers],
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    env = worker_env(queue_url, sqs_server, redis_server, prefix)
    worker = start(workers, {**env, **credentials_file(tmp_path, None)})
    flow = Flow(sqs_server, queue_url, redis_client, prefix, worker)
    flow.stream(40, seed_value=22)  # waits on the queue meanwhile
    assert "credentials" in flow.down_for("queue_receives_failing")["message"]
    credentials_file(tmp_path, "testing")
    flow.check()
    flow.up()


class IamSqs:
    """A moto server of the test's own that checks every request against IAM."""

    def __init__(self) -> None:
        self.server = SqsServer().start()
        iam = boto3.client(  # type: ignore[call-overload]
            "iam", endpoint_url=self.server.endpoint, **AWS_TEST_CLIENT_ARGS
        )
        self.keys = {name: self._user(iam, name, actions) for name, actions in USERS.items()}
        iam.close()
        self.queue = self.server.client().create_queue(QueueName="guarded")["QueueUrl"]
        httpx.post(f"{self.server.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()

    @staticmethod
    def _user(iam: Any, name: str, actions: list[str]) -> dict[str, str]:
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        allow(iam, name, actions)
        return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}

    def client(self, service: str) -> Any:
        """A client of ``service`` with the admin user's keys."""
        keys = self.keys["admin"]
        session = boto3.session.Session(
            aws_access_key_id=keys["key"],
            aws_secret_access_key=keys["secret"],
            region_name="us-east-1",
        )
        return session.client(service, endpoint_url=self.server.endpoint)  # type: ignore[call-overload]


USERS = {
    "admin": ["sqs:*", "iam:*"],
    "worker": ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibilityBatch"],  # no delete yet
}


def allow(iam: Any, user: str, actions: list[str]) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="access", PolicyDocument=json.dumps(policy))


def test_rejected_credentials_then_a_denied_delete_heal_without_a_restart(
    workers: list[Workers],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    guarded = IamSqs()
    try:
        env = worker_env(guarded.queue, guarded.server, redis_server, prefix)
        worker = start(workers, {**env, **credentials_file(tmp_path, "AKIAUNKNOWN000000000")})
        flow = Flow(guarded.server, guarded.queue, redis_client, prefix, worker)
        flow.sqs = _Admin(guarded)  # type: ignore[assignment]
        assert "credentials" in flow.down_for("queue_receives_failing")["message"]
        keys = guarded.keys["worker"]
        credentials_file(tmp_path, keys["key"], keys["secret"])  # the secret is rotated
        flow.stream(40, seed_value=23)
        body = flow.down_for("queue_deletes_failing")  # it may receive and write, not delete
        assert "access_denied" in body["message"]
        iam = guarded.client("iam")
        allow(iam, "worker", [*USERS["worker"], "sqs:DeleteMessageBatch"])
        iam.close()
        flow.check()
        flow.up()
    finally:
        guarded.server.stop()


class _Admin:
    """What ``Flow`` needs of an ``SqsServer``, with the admin user's keys."""

    def __init__(self, guarded: IamSqs) -> None:
        self.guarded = guarded

    def queue(self, queue_url: str) -> SqsQueue:
        keys = self.guarded.keys["admin"]
        credentials = StaticCredentials(keys["key"], keys["secret"])
        return queue_at(self.guarded.server.endpoint, queue_url, credentials=credentials)


def test_throttled_receives_and_deletes(
    workers: list[Workers],
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    proxy = SqsFaultProxy(sqs_server.endpoint).start()
    try:
        env = worker_env(queue_url, sqs_server, redis_server, prefix)
        worker = start(workers, {**env, "SQS_ENDPOINT_URL": proxy.endpoint})
        flow = Flow(sqs_server, queue_url, redis_client, prefix, worker)
        flow.seed()
        proxy.faults["ReceiveMessage"] = THROTTLED
        assert "throttled" in flow.down_for("queue_receives_failing")["message"]
        flow.stream(40, seed_value=24)
        del proxy.faults["ReceiveMessage"]
        flow.check()
        flow.up()
        proxy.faults["DeleteMessageBatch"] = THROTTLED
        flow.stream(40, seed_value=25)
        assert "throttled" in flow.down_for("queue_deletes_failing")["message"]
        del proxy.faults["DeleteMessageBatch"]
        flow.check()
        flow.up()
        assert proxy.refused["ReceiveMessage"] > 0
        assert proxy.refused["DeleteMessageBatch"] > 0
    finally:
        proxy.stop()


def test_a_queue_created_elsewhere_is_found_by_its_url(sqs_server: SqsServer) -> None:
    """The fixtures above name queues by URL; a sanity check of the helper they share."""
    url = create_queue(sqs_server.client())
    assert url.startswith(sqs_server.endpoint)


def test_an_sqs_endpoint_that_stops_answering(
    workers: list[Workers], redis_server: RedisServer, redis_client: redis.Redis, prefix: str
) -> None:
    """SIGSTOP on the SQS server: every call hangs until its read timeout. /readyz says so,
    /livez does not (waiting is not a stall), and consumption resumes once it answers."""
    own = SqsServer().start()
    try:
        queue_url = create_queue(own.client())
        worker = start(workers, worker_env(queue_url, own, redis_server, prefix))
        flow = Flow(own, queue_url, redis_client, prefix, worker)
        flow.seed()
        flow.check()
        assert own.process is not None
        os.kill(own.process.pid, signal.SIGSTOP)
        try:
            body = flow.down_for("queue_receives_failing", timeout=60)
            assert "unreachable" in body["message"]
            assert flow.livez().status_code == 200
        finally:
            os.kill(own.process.pid, signal.SIGCONT)
        flow.stream(40, seed_value=26)
        flow.check()
        flow.up()
    finally:
        own.stop()
