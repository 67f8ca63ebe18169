"""The operator's kit: alert rules (checked and unit-tested by promtool), the Grafana dashboard,
and every metric they use exported by a running worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline.ops.health import PAUSES
from cache_pipeline.ops.metrics import APPLY_LAG_BASES
from tests.support import factory
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import Workers, create_queue, send

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "cache-pipeline.rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "cache-pipeline.rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cache-pipeline.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\b((?:persistent_cache|http)_[a-z_]+)\b")
SELECTED_METRIC = re.compile(r"\b((?:persistent_cache|http)_[a-z_]+)\b(\{[^}]*\})?")
AGGREGATION = re.compile(
    r"\b(sum|max|min|avg|count|group|topk|bottomk|stddev|stdvar)\s*(?:by\s*\(([^)]*)\)\s*)?\("
)
RELEASE = {"namespace", "job"}  # what every alert and dashboard query is scoped by
# What an on-call engineer looks for on the dashboard: a panel must query each of these.
DASHBOARD_NEEDS = {
    "throughput by type": "persistent_cache_messages_processed_total",
    "skipped by reason": "persistent_cache_messages_skipped_total",
    "failed by reason": "persistent_cache_messages_failed_total",
    "write latency": "persistent_cache_write_duration_seconds_bucket",
    "apply lag": "persistent_cache_apply_lag_seconds_bucket",
    "consumers": "persistent_cache_consumers",
    "redis up": "persistent_cache_redis_up",
    "memory": "persistent_cache_memory_usage_bytes",
    "hit ratio": "persistent_cache_hit_ratio",
    "readiness by reason": "persistent_cache_ready",
    "queue depth": "persistent_cache_queue_messages",
}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not on PATH: `apt-get install prometheus` (.ci/run does)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def used_metrics() -> set[str]:
    expressions = [rule["expr"] for rule in rules()] + dashboard_queries()
    return {name for expr in expressions for name in METRIC.findall(expr)}


def test_rules_file_is_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_test_that_fires_it() -> None:
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules()}
    assert alerts == fired, alerts ^ fired


def test_every_alert_is_scoped_per_release() -> None:
    """Aggregations keep namespace and job: a healthy release never hides a broken one."""
    for rule in rules():
        found = AGGREGATION.findall(rule["expr"])
        assert found, f"{rule['alert']} aggregates nothing"
        for operator, by in found:
            labels = {label.strip() for label in by.split(",")}
            assert labels >= RELEASE, f"{rule['alert']}: {operator} by ({by})"


def test_paused_alert_covers_every_pause_reason() -> None:
    (paused,) = [rule for rule in rules() if rule["alert"] == "CachePipelinePaused"]
    reasons = re.search(r'persistent_cache_ready\{reason=~"([^"]+)"\}', paused["expr"])
    assert reasons is not None
    assert set(reasons.group(1).split("|")) == {reason.value for reason in PAUSES}
    assert paused["labels"]["severity"] == "critical", "a pause pages someone"


def test_every_alert_is_described_in_operations_md() -> None:
    text = OPERATIONS.read_text()
    for rule in rules():
        assert f"`{rule['alert']}`" in text, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")


def test_dashboard_covers_what_on_call_looks_at() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "cache-pipeline"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job"]
    assert variables["datasource"] == variables["datasource"] | {
        "type": "datasource",
        "query": "prometheus",
    }
    for expr in dashboard_queries():  # one release at a time, as the alerts see it
        for name, selector in SELECTED_METRIC.findall(expr):
            for label in RELEASE:
                assert f'{label}=~"${label}"' in selector, (name, expr)
    queried = {name for expr in dashboard_queries() for name in METRIC.findall(expr)}
    missing = {topic for topic, name in DASHBOARD_NEEDS.items() if name not in queried}
    assert not missing, missing
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]


@pytest.mark.slow
def test_every_metric_of_the_dashboard_and_the_rules_is_exported_by_a_worker(
    workers: Workers, sqs_server: SqsServer, queue_url: str
) -> None:
    """A worker that applied, skipped and parked messages and served requests exports them all."""
    sqs = sqs_server.client()
    worker = workers.start(DEAD_LETTER_QUEUE_URL=create_queue(sqs))
    newer, older = (
        factory.usage("cus-1", 2000, "feature-1", 5),
        factory.usage("cus-1", 1000, "feature-1", 1),
    )
    send(sqs_server, queue_url, [factory.entitlements("cus-1", 500), newer])
    wait_until(
        lambda: worker.counter("persistent_cache_messages_processed_total", type=newer["type"])
    )
    send(sqs_server, queue_url, [older, "not json"])
    wait_until(lambda: worker.counter("persistent_cache_messages_parked_total", destination="dlq"))
    wait_until(lambda: sum_of(worker, "persistent_cache_messages_skipped_total") > 0)
    exported = {name for name, _labels in worker.metrics()}
    assert used_metrics() - exported == set()
    for basis in APPLY_LAG_BASES:
        assert worker.counter("persistent_cache_apply_lag_seconds_count", basis=basis) >= 3
    lag = worker.counter("persistent_cache_apply_lag_seconds_sum", basis="sqs_sent")
    assert 0 <= lag < 60, "seconds from SQS's SentTimestamp to the write, a few at most here"


def sum_of(worker: Any, name: str) -> float:
    text = worker.http.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )
