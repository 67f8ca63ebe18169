"""``cache-pipeline dlq list`` and ``dlq redrive`` against a real SQS server (and a real
worker parking poison): messages are listed with why they were parked and stay where
they are; a redrive moves all of them, or one reason's, or with --dry-run none."""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from cache_pipeline.sqs.queue import Poison, QueueDepth
from tests.support import factory
from tests.support.cli import last_line, run_cli
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import Workers, create_queue


@pytest.fixture
def queues(sqs_server: SqsServer) -> tuple[str, str]:
    """A queue and a dead-letter queue of the test's own."""
    client = sqs_server.client()
    return create_queue(client), create_queue(client)


@pytest.fixture
def env(sqs_server: SqsServer, queues: tuple[str, str]) -> dict[str, str]:
    queue_url, dlq_url = queues
    return {
        "QUEUE_URL": queue_url,
        "DEAD_LETTER_QUEUE_URL": dlq_url,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
    }


def depths(sqs_server: SqsServer, queues: tuple[str, str]) -> tuple[QueueDepth, QueueDepth]:
    queue_url, dlq_url = queues
    with closing(sqs_server.queue(queue_url, dead_letter_url=dlq_url)) as queue:
        return queue.depth(), queue.depth(dead_letter=True)


@pytest.fixture
def parked(sqs_server: SqsServer, queues: tuple[str, str]) -> list[Poison]:
    """Seven ``not_json`` and five ``invalid_field`` messages parked as the worker parks them;
    the ``invalid_field`` bodies carry their contract id, parked without its attribute."""
    queue_url, dlq_url = queues
    poison = [
        Poison(f"{{broken {i}", "not_json", f"line 1 column {i}", None, f"s{i}") for i in range(7)
    ]
    bodies = [json.dumps({"id": f"m-{i}", "type": 5}) for i in range(5)]
    poison += [Poison(b, "invalid_field", "type: not a string", None, "t") for b in bodies]
    with closing(sqs_server.queue(queue_url, dead_letter_url=dlq_url)) as queue:
        assert queue.park(poison) == [None] * len(poison)
    wait_until(lambda: depths(sqs_server, queues)[1].visible == 12, what="12 parked")
    return poison


def test_dlq_list_shows_what_the_worker_parked_and_leaves_it_there(
    workers: Workers, sqs_server: SqsServer, queue_url: str
) -> None:
    dlq_url = create_queue(sqs_server.client())
    workers.start(DEAD_LETTER_QUEUE_URL=dlq_url)
    unknown = factory.usage("cus-1", 500, "seats", 1) | {"type": "usage.exploded", "id": "m-42"}
    with closing(sqs_server.queue(queue_url, dead_letter_url=dlq_url)) as queue:
        queue.send(["{this is not json", json.dumps(unknown)])
        wait_until(lambda: queue.depth(dead_letter=True).visible == 2, timeout=30, what="parked")
        env = {
            "QUEUE_URL": queue_url,
            "DEAD_LETTER_QUEUE_URL": dlq_url,
            "SQS_ENDPOINT_URL": sqs_server.endpoint,
        }
        result = run_cli("dlq", "list", env=env)
        assert result.returncode == 0, result.stderr
        *lines, summary = result.stdout.strip().splitlines()
        by_reason = {line.split()[1]: line for line in lines}
        assert set(by_reason) == {"not_json", "unknown_type"}
        assert " id=m-42 " in by_reason["unknown_type"]
        assert "usage.exploded" in by_reason["unknown_type"]  # the detail
        assert " received=1 " in by_reason["not_json"]
        assert summary in (
            "2 message(s): not_json 1, unknown_type 1",
            "2 message(s): unknown_type 1, not_json 1",
        )
        assert queue.depth(dead_letter=True) == QueueDepth(2, 0, 0)  # still there, visible


def test_dlq_list_as_json_lines_by_reason(
    parked: list[Poison], env: dict[str, str], sqs_server: SqsServer, queues: tuple[str, str]
) -> None:
    result = run_cli("dlq", "list", "--json", "--reason", "invalid_field", env=env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["id"] for row in rows) == [f"m-{i}" for i in range(5)]  # from the body
    assert {row["reason"] for row in rows} == {"invalid_field"}
    assert {row["detail"] for row in rows} == {"type: not a string"}
    assert all(row["receiveCount"] == 1 for row in rows)
    assert all(0 <= row["ageSeconds"] < 60 for row in rows)
    assert len({row["sqsMessageId"] for row in rows}) == 5
    assert depths(sqs_server, queues)[1] == QueueDepth(12, 0, 0)


def test_dlq_list_stops_at_its_limit_and_says_so(parked: list[Poison], env: dict[str, str]) -> None:
    result = run_cli("dlq", "list", "--limit", "3", env=env)
    assert result.returncode == 0, result.stderr
    *lines, summary = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert summary.startswith("3 message(s): ")
    assert summary.endswith("; stopped at --limit 3, there may be more")
    every = run_cli("dlq", "list", env=env).stdout.strip().splitlines()
    assert len(every) == 13
    assert every[-1] in (
        "12 message(s): not_json 7, invalid_field 5",
        "12 message(s): invalid_field 5, not_json 7",
    )


def test_dlq_redrive_dry_run_moves_nothing_and_a_reason_moves_only_its_messages(
    parked: list[Poison], env: dict[str, str], sqs_server: SqsServer, queues: tuple[str, str]
) -> None:
    dry = run_cli("dlq", "redrive", "--reason", "not_json", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    *lines, summary = dry.stdout.strip().splitlines()
    assert len(lines) == 7
    assert all(line.split()[1] == "not_json" for line in lines)
    assert summary == "would move 7 message(s) (dry run: nothing was moved)"
    assert depths(sqs_server, queues) == (QueueDepth(0, 0, 0), QueueDepth(12, 0, 0))

    moved = run_cli("dlq", "redrive", "--reason", "not_json", env=env)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == "moved 7 message(s), 0 failed, 5 of other reasons left"
    assert depths(sqs_server, queues) == (QueueDepth(7, 0, 0), QueueDepth(5, 0, 0))

    alias = run_cli("redrive", "--max", "2", env=env)  # `redrive` is `dlq redrive`
    assert alias.returncode == 0, alias.stderr
    assert alias.stdout.strip() == "moved 2 message(s), 0 failed"
    assert depths(sqs_server, queues) == (QueueDepth(9, 0, 0), QueueDepth(3, 0, 0))


def test_the_alias_and_the_group_say_the_same(env: dict[str, str]) -> None:
    group = run_cli("dlq", "redrive", "--help", env=env)
    alias = run_cli("redrive", "--help", env=env)
    assert "--reason" in group.stdout
    assert "--dry-run" in alias.stdout
    assert "The same command as `dlq redrive`" in alias.stdout


def test_a_missing_dead_letter_queue_ends_each_command_in_one_line(
    sqs_server: SqsServer, queues: tuple[str, str]
) -> None:
    missing = f"{sqs_server.endpoint}/000000000000/no-such-dlq"
    env = {
        "QUEUE_URL": queues[0],
        "DEAD_LETTER_QUEUE_URL": missing,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
    }
    for args in (["dlq", "list"], ["dlq", "redrive"], ["redrive", "--dry-run"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 4, (args, result.stderr)
        line = last_line(result)
        assert line.startswith(f"cache-pipeline: SQS queue {missing}"), line
        assert ": missing_queue: ReceiveMessage: " in line
