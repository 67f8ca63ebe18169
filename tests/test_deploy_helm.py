"""The Helm chart, rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK).

Every rendered object is validated against the Kubernetes schemas, the
settings it produces are accepted by the service's own settings model, and
values.schema.json rejects bad values both in jsonschema and in Helm.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from cache_pipeline import __version__
from cache_pipeline.cli.main import cli
from cache_pipeline.config import (
    SHUTDOWN_BUDGET_SECS,
    SHUTDOWN_GRACE_SECS,
    Settings,
    load_settings,
    load_worker_settings,
)
from tests.support.manifests import K8S_VERSIONS, by_kind, load_objects, validate_object

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "cache-pipeline"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RULES = "cache-pipeline.rules.yaml"
PLAIN_RULES = ROOT / "deploy" / "prometheus" / RULES
SECRET_KEYS = {"SERVER_API_KEY", "REDIS_PASSWORD", "SENTRY_DSN"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def all_on() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(ALL_ON.read_text())
    return values


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values, name="cp", namespace="cache")


def objects(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    manifests = render(chart, values)
    return by_kind(load_objects(text for path, text in manifests.items() if path.endswith(".yaml")))


def container(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    result: dict[str, Any] = spec["containers"][0]
    return result


def service_env(rendered: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The environment the worker container gets from the ConfigMap, Secret and env."""
    env = dict(rendered["ConfigMap"]["data"])
    if "Secret" in rendered:
        env |= {k: base64.b64decode(v).decode() for k, v in rendered["Secret"]["data"].items()}
    env |= {item["name"]: item["value"] for item in container(rendered).get("env", [])}
    return env


def test_default_values_render_valid_objects(chart: helm.Chart) -> None:
    rendered = objects(chart)
    assert set(rendered) == {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for obj in rendered.values():
        validate_object(obj)


def test_all_on_values_render_valid_objects(chart: helm.Chart) -> None:
    rendered = objects(chart, all_on())
    assert set(rendered) == {
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ScaledObject",
        "TriggerAuthentication",
        "PrometheusRule",
    }
    checked = {kind: validate_object(obj) for kind, obj in rendered.items()}
    assert checked["ScaledObject"] == "custom-resource schema"
    assert checked["Deployment"].startswith("kubernetes")


def test_cpu_autoscaler_renders_valid_hpa(chart: helm.Chart) -> None:
    values = all_on() | {"keda": {"enabled": False}, "autoscaling": {"enabled": True}}
    rendered = objects(chart, values)
    hpa = rendered["HorizontalPodAutoscaler"]
    validate_object(hpa)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered["Deployment"]["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in rendered["Deployment"]["spec"], "the HPA owns the replica count"


def test_deployment_probes_resources_and_hardening(chart: helm.Chart) -> None:
    rendered = objects(chart)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    worker = container(rendered)
    assert worker["args"] == ["worker"]
    assert worker["ports"] == [{"name": "http", "containerPort": 4000, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert worker["resources"] == {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    security = worker["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the image's numeric user"
    assert worker["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]
    assert pod["terminationGracePeriodSeconds"] >= SHUTDOWN_GRACE_SECS
    assert worker["image"] == f"cache-pipeline:{chart.metadata['appVersion']}"
    service_port = rendered["Service"]["spec"]["ports"][0]
    assert service_port == {"name": "http", "port": 4000, "targetPort": "http", "protocol": "TCP"}


def grace_of(rendered: dict[str, Any]) -> int:
    return int(rendered["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def test_grace_period_covers_the_bounded_shutdown_whatever_the_visibility_timeout(
    chart: helm.Chart,
) -> None:
    """The worker stops within SHUTDOWN_BUDGET_SECS: the grace no longer follows the VT."""
    assert SHUTDOWN_BUDGET_SECS < SHUTDOWN_GRACE_SECS <= 30
    assert grace_of(objects(chart, {"config": {"visibilityTimeout": 120}})) == 30
    assert grace_of(objects(chart, {"terminationGracePeriodSeconds": None})) == 30
    least = {"terminationGracePeriodSeconds": SHUTDOWN_GRACE_SECS}
    assert grace_of(objects(chart, least)) == SHUTDOWN_GRACE_SECS


def test_budget_lets_drains_evict_unready_pods_and_keeps_one_consuming(chart: helm.Chart) -> None:
    """During an outage every pod is unready: the budget must not block node drains then."""
    rendered = objects(chart)
    budget = rendered["PodDisruptionBudget"]["spec"]
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budget["maxUnavailable"] == 1
    assert "minAvailable" not in budget
    replicas = rendered["Deployment"]["spec"]["replicas"]
    assert replicas == 2, "docs/operations.md: keep at least 2"
    assert 1 <= budget["maxUnavailable"] < replicas, "a drain moves one pod, the other consumes"
    validate_object(rendered["PodDisruptionBudget"])
    policy = {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "IfHealthyBudget"}}
    assert objects(chart, policy)["PodDisruptionBudget"]["spec"]["unhealthyPodEvictionPolicy"] == (
        "IfHealthyBudget"
    )


def test_every_replica_floor_is_two(chart: helm.Chart) -> None:
    """replicaCount and the autoscalers' floors agree with operations.md (at least 2)."""
    values = chart.values
    floors = {
        "replicaCount": values["replicaCount"],
        "autoscaling.minReplicas": values["autoscaling"]["minReplicas"],
        "keda.minReplicaCount": values["keda"]["minReplicaCount"],
    }
    assert set(floors.values()) == {2}, floors
    assert "Keep at\n   least 2 for availability" in (ROOT / "docs" / "operations.md").read_text()


def test_rollout_can_finish_while_every_pod_is_unready(chart: helm.Chart) -> None:
    """No new pod turns ready during an outage: a rollout that waits for one never ends."""
    strategy = objects(chart)["Deployment"]["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1},
    }
    careful = {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    rendered = objects(chart, careful)
    assert rendered["Deployment"]["spec"]["strategy"]["rollingUpdate"] == careful["rollingUpdate"]
    validate_object(rendered["Deployment"])


@pytest.mark.parametrize(
    "budget",
    [
        pytest.param({"maxUnavailable": 0}, id="maxUnavailable-0"),
        pytest.param({"maxUnavailable": "0%"}, id="maxUnavailable-0%"),
        pytest.param({"maxUnavailable": None, "minAvailable": 2}, id="minAvailable-2-of-2"),
    ],
)
def test_budget_that_blocks_every_drain_is_refused(
    chart: helm.Chart, budget: dict[str, Any]
) -> None:
    with pytest.raises(helm.HelmRenderError, match="drain"):
        render(chart, {"podDisruptionBudget": budget})


def test_budget_follows_the_autoscalers_floor(chart: helm.Chart) -> None:
    min_available = {"maxUnavailable": None, "minAvailable": 2}
    keda = all_on() | {"podDisruptionBudget": min_available}
    with pytest.raises(helm.HelmRenderError, match="not below the 2 pod"):
        render(chart, keda)
    keda["keda"] = keda["keda"] | {"minReplicaCount": 3}
    assert objects(chart, keda)["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    # Scaled to zero (a migration): the budget guards no pod and blocks nothing.
    stopped = {
        "replicaCount": 0,
        "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1},
    }
    assert objects(chart, stopped)["Deployment"]["spec"]["replicas"] == 0


def test_kubernetes_floor_is_the_oldest_schema_checked() -> None:
    """Chart.yaml's floor (1.27: unhealthyPodEvictionPolicy on by default) is what is validated."""
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert floor == f">={K8S_VERSIONS[0]}-0", (
        "tests/support/manifests.py checks the floor's schemas"
    )


def test_grace_period_shorter_than_the_shutdown_needs_is_refused(chart: helm.Chart) -> None:
    short = {"terminationGracePeriodSeconds": SHUTDOWN_GRACE_SECS - 1}
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(chart, short)


def test_cpu_autoscaler_and_keda_are_exclusive(chart: helm.Chart) -> None:
    values = all_on() | {"autoscaling": {"enabled": True}}
    with pytest.raises(helm.HelmRenderError, match="exclusive"):
        render(chart, values)


def test_default_config_is_accepted_by_the_service(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = service_env(objects(chart))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.port == 4000
    assert settings.keys_ttl_in_secs == 604800
    assert settings.api_host == "0.0.0.0"


def test_all_on_config_and_secrets_are_accepted_by_the_service(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = all_on()
    rendered = objects(chart, values)
    env = service_env(rendered)
    assert set(rendered["Secret"]["data"]) >= SECRET_KEYS
    assert not SECRET_KEYS & set(rendered["ConfigMap"]["data"]), "secrets stay out of the ConfigMap"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_worker_settings()
    config = values["config"]
    assert settings.keys_ttl_in_secs == config["keysTtlInSecs"] == 2592000
    assert settings.redis_timeout_secs == config["redisTimeoutSecs"]
    assert settings.redis_tls is True
    assert settings.batch_size == 10
    assert settings.queue_url == config["queueUrl"]
    assert settings.server_api_key is not None
    assert settings.server_api_key.get_secret_value() == values["secrets"]["serverApiKey"]
    env_from = container(rendered)["envFrom"]
    assert {"secretRef": {"name": rendered["Secret"]["metadata"]["name"]}} in env_from


def snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def test_values_config_covers_every_setting(chart: helm.Chart) -> None:
    """config.* sets every setting; secrets.* the three secrets; nothing is hard-coded."""
    as_fields = {snake(key) for key in chart.values["config"]}
    secrets = {"server_api_key", "redis_password", "sentry_dsn"}
    assert as_fields <= set(Settings.model_fields), as_fields - set(Settings.model_fields)
    missing = set(Settings.model_fields) - as_fields - secrets
    assert not missing, f"settings without a chart value: {sorted(missing)}"
    assert {snake(key) for key in chart.values["secrets"]} - {"existing_secret"} == secrets
    assert "env" not in container(objects(chart)), "every setting comes from the ConfigMap"


def test_api_host_and_docs_are_settings_like_the_others(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert objects(chart)["ConfigMap"]["data"]["API_HOST"] == "0.0.0.0"
    rendered = objects(chart, {"config": {"apiHost": "::", "apiDocs": True}})
    data = rendered["ConfigMap"]["data"]
    assert (data["API_HOST"], data["API_DOCS"]) == ("::", "1")
    for name, value in service_env(rendered).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.api_host, settings.api_docs) == ("::", True)


def test_config_change_rolls_the_pods(chart: helm.Chart) -> None:
    def checksums(values: dict[str, Any] | None) -> dict[str, str]:
        template = objects(chart, values)["Deployment"]["spec"]["template"]
        annotations: dict[str, str] = template["metadata"]["annotations"]
        return annotations

    base = checksums(None)
    assert checksums(None) == base, "rendering is deterministic"
    assert (
        checksums({"config": {"logLevel": "debug"}})["checksum/config"] != base["checksum/config"]
    )
    with_secret = checksums({"secrets": {"serverApiKey": "one"}})
    other_secret = checksums({"secrets": {"serverApiKey": "two"}})
    assert with_secret["checksum/secret"] != other_secret["checksum/secret"]


def test_service_account_carries_the_iam_role(chart: helm.Chart) -> None:
    rendered = objects(chart, all_on())
    annotations = rendered["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == all_on()["serviceAccount"]["roleArn"]
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == rendered["ServiceAccount"]["metadata"]["name"]


REDIS_CA_DIR = "/etc/cache-pipeline/redis-ca"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param({"configMap": {"name": "redis-ca"}}, id="configmap"),
        pytest.param(
            {"secret": {"secretName": "redis-ca", "items": [{"key": "tls.ca", "path": "ca.crt"}]}},
            id="secret",
        ),
    ],
)
def test_private_redis_ca_is_mounted_where_the_setting_points(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, source: dict[str, Any]
) -> None:
    values = {
        "config": {"redisTls": True, "redisTlsCaFile": f"{REDIS_CA_DIR}/ca.crt"},
        "extraVolumes": [{"name": "redis-ca", **source}],
        "extraVolumeMounts": [{"name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": True}],
        "extraEnvFrom": [{"secretRef": {"name": "aws-proxy", "optional": True}}],
    }
    rendered = objects(chart, values)
    validate_object(rendered["Deployment"])
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    worker = container(rendered)
    assert pod["volumes"][0]["name"] == "tmp", "the chart's own volume stays"
    assert {"name": "redis-ca", **source} in pod["volumes"]
    (mount,) = [m for m in worker["volumeMounts"] if m["name"] == "redis-ca"]
    assert mount == {"name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": True}
    assert worker["envFrom"][-1] == {"secretRef": {"name": "aws-proxy", "optional": True}}
    for name, value in service_env(rendered).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.redis_tls is True
    assert settings.redis_tls_ca_file is not None
    assert PurePosixPath(settings.redis_tls_ca_file).parent == PurePosixPath(mount["mountPath"])
    chart.validate_schema(values)


def test_existing_secret_is_referenced_not_created(chart: helm.Chart) -> None:
    values = {"secrets": {"existingSecret": "team-secrets", "serverApiKey": "ignored"}}
    rendered = objects(chart, values)
    assert "Secret" not in rendered
    assert {"secretRef": {"name": "team-secrets"}} in container(rendered)["envFrom"]


def test_keda_scales_on_the_queue_with_pod_identity(chart: helm.Chart) -> None:
    values = all_on()
    rendered = objects(chart, values)
    scaled = rendered["ScaledObject"]["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["queueURL"] == values["config"]["queueUrl"]
    auth = rendered["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "workload"}
    assert "replicas" not in rendered["Deployment"]["spec"], "KEDA owns the replica count"


KEDA = {"enabled": True}
QUEUE = {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/cache-pipeline"}
ROLE = "arn:aws:iam::123456789012:role/cache-pipeline"


@pytest.mark.parametrize(
    ("values", "pod_identity"),
    [
        ({"serviceAccount": {"roleArn": ROLE}}, {"identityOwner": "workload"}),
        (
            {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE}}},
            {"identityOwner": "workload"},
        ),
        ({"keda": KEDA | {"identityOwner": "keda"}}, {"identityOwner": "keda"}),
        ({"keda": KEDA | {"roleArn": ROLE + "-keda"}}, {"roleArn": ROLE + "-keda"}),
    ],
    ids=["workload-roleArn", "workload-annotation", "keda-own-role", "keda-roleArn"],
)
def test_keda_reads_the_depth_as_a_role_it_can_find(
    chart: helm.Chart, values: dict[str, Any], pod_identity: dict[str, str]
) -> None:
    rendered = objects(chart, {"keda": KEDA, "config": QUEUE} | values)
    auth = rendered["TriggerAuthentication"]
    validate_object(auth)
    assert auth["spec"]["podIdentity"] == {"provider": "aws"} | pod_identity


def test_keda_as_the_workload_without_its_irsa_role_is_refused(chart: helm.Chart) -> None:
    """KEDA reads the role from the IRSA annotation: without one it could read nothing."""
    with pytest.raises(helm.HelmRenderError, match=re.escape("eks.amazonaws.com/role-arn")):
        render(chart, {"keda": KEDA, "config": QUEUE})


def test_service_monitor_scrapes_metrics_on_the_named_port(chart: helm.Chart) -> None:
    rendered = objects(chart, all_on())
    (endpoint,) = rendered["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    selector = rendered["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= rendered["Service"]["metadata"]["labels"].items()


def test_prometheus_rule_carries_the_plain_rules_file(chart: helm.Chart) -> None:
    assert "PrometheusRule" not in objects(chart), "off by default"
    rendered = objects(chart, all_on())["PrometheusRule"]
    assert rendered["spec"] == yaml.safe_load(PLAIN_RULES.read_text())
    assert rendered["metadata"]["labels"]["release"] == "prometheus"


def test_chart_rules_file_is_a_copy_of_the_plain_one() -> None:
    """One source (deploy/prometheus), copied into the chart: no link out of the chart."""
    copy = CHART / "files" / RULES
    assert not copy.is_symlink(), "a link out of the chart breaks a copied or packaged chart"
    fix = f"cp {PLAIN_RULES.relative_to(ROOT)} {copy.parent.relative_to(ROOT)}/"
    assert copy.read_bytes() == PLAIN_RULES.read_bytes(), f"the chart's copy differs: {fix}"


@pytest.mark.parametrize("how", ["copied", "packaged"])
def test_chart_outside_the_repository_renders_its_rules(tmp_path: Path, how: str) -> None:
    """The chart copied elsewhere (links kept as links) or packaged still carries the rules."""
    if how == "copied":
        shutil.copytree(CHART, tmp_path / "chart", symlinks=True)
        loaded = helm.Chart.load(tmp_path / "chart")
    else:
        archive = helm.package(CHART, destination=tmp_path)
        loaded = helm.Chart.load_archive(Path(archive).read_bytes())
    with loaded:
        rendered = objects(loaded, {"prometheusRule": {"enabled": True}})["PrometheusRule"]
    assert rendered["spec"] == yaml.safe_load(PLAIN_RULES.read_text())


JOBS = {
    "resync": {"enabled": True, "scopesConfigMap": "cache-scopes"},
    "invalidate": {"enabled": True, "customer": "acme:eu", "resource": "site-1"},
    "migrate": {"enabled": True},
}


def release(
    chart: helm.Chart, values: dict[str, Any], revision: int = 1
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The release's objects but its Jobs (by kind), and its Jobs by command."""
    manifests = chart.render(values, name="cp", namespace="cache", revision=revision)
    texts = {path: text for path, text in manifests.items() if path.endswith(".yaml")}
    jobs_path = "cache-pipeline/templates/jobs.yaml"
    jobs = {
        job["spec"]["template"]["spec"]["containers"][0]["name"]: job
        for job in load_objects([texts.pop(jobs_path, "")])
    }
    return by_kind(load_objects(texts.values())), jobs


def test_no_job_unless_asked(chart: helm.Chart) -> None:
    assert release(chart, all_on())[1] == {}
    notes = render(chart, {"jobs": {"invalidate": {"enabled": True, "customer": "cus-1"}}})
    assert "app.kubernetes.io/component=invalidate" in notes["cache-pipeline/templates/NOTES.txt"]


def test_jobs_run_each_command_as_the_worker_would(
    chart: helm.Chart, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same image, settings, Secret, service account, volumes and hardening; own labels."""
    values = all_on() | {"keda": {"enabled": False}, "replicaCount": 0, "jobs": JOBS}
    rendered, jobs = release(chart, values)
    assert set(jobs) == set(JOBS)
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    worker = container(rendered)
    selectors = [
        rendered["Deployment"]["spec"]["selector"]["matchLabels"],
        rendered["Service"]["spec"]["selector"],
        rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    scopes = tmp_path / "scopes.jsonl"
    scopes.write_text('{"customerId": "cus-1"}\n')
    for name, job in jobs.items():
        assert validate_object(job).startswith("kubernetes")
        assert len(job["metadata"]["name"]) <= 63
        assert job["spec"]["backoffLimit"] == 0
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        for field in ("serviceAccountName", "securityContext", "imagePullSecrets"):
            assert spec[field] == pod[field], (name, field)
        assert spec["automountServiceAccountToken"] is False
        assert pod["volumes"] == spec["volumes"][: len(pod["volumes"])], "the worker's volumes"
        (command,) = spec["containers"]
        for field in ("image", "envFrom", "env", "securityContext", "resources"):
            assert command[field] == worker[field], (name, field)
        assert worker["volumeMounts"] == command["volumeMounts"][: len(worker["volumeMounts"])]
        labels = job["spec"]["template"]["metadata"]["labels"]
        for selector in selectors:
            assert not selector.items() <= labels.items(), f"{name}'s pod would count as a worker"
        # The arguments are the command line's own (click parses them as the image would).
        args = [
            str(scopes) if arg.startswith("/etc/cache-pipeline/scopes/") else arg
            for arg in command["args"]
        ]
        with cli.commands[args[0]].make_context(args[0], args[1:]) as parsed:
            assert parsed.params is not None
    assert jobs["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert jobs["invalidate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "invalidate", "--customer", "acme:eu", "--resource", "site-1",
    ]  # fmt: skip
    resync = jobs["resync"]["spec"]["template"]["spec"]
    assert resync["containers"][0]["args"] == [
        "resync", "/etc/cache-pipeline/scopes/scopes.jsonl", "--concurrency", "8",
    ]  # fmt: skip
    assert {"name": "scopes", "configMap": {"name": "cache-scopes"}} in resync["volumes"]
    for name, value in service_env(rendered).items():
        monkeypatch.setenv(name, value)
    assert load_settings().redis_tls_ca_file == "/etc/cache-pipeline/redis-ca/ca.crt"


def test_job_names_follow_the_revision_or_the_run(chart: helm.Chart) -> None:
    values: dict[str, Any] = {"replicaCount": 0, "jobs": {"migrate": {"enabled": True}}}
    assert release(chart, values, revision=7)[1]["migrate"]["metadata"]["name"] == (
        "cp-cache-pipeline-migrate-7"
    )
    values["jobs"]["runId"] = 1767225600
    assert release(chart, values, revision=7)[1]["migrate"]["metadata"]["name"] == (
        "cp-cache-pipeline-migrate-1767225600"
    )
    values["jobs"]["runId"] = "Not_A_Name"
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)
    invalidate = {"enabled": True, "customer": "c"}
    long = {"fullnameOverride": "x" * 63, "jobs": {"invalidate": invalidate, "runId": "9" * 12}}
    (job,) = release(chart, long)[1].values()
    assert len(job["metadata"]["name"]) <= 63
    validate_object(job)


@pytest.mark.parametrize(
    "running",
    [
        pytest.param({}, id="replicas-2"),
        pytest.param({"replicaCount": 0, "autoscaling": {"enabled": True}}, id="hpa"),
        pytest.param(
            {"replicaCount": 0, "keda": {"enabled": True, "minReplicaCount": 0},
             "config": {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q"},
             "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/cp"}},
            id="keda",
        ),
    ],
)  # fmt: skip
def test_migrate_job_needs_the_workers_stopped(chart: helm.Chart, running: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmRenderError, match="workers stopped"):
        render(chart, running | {"jobs": {"migrate": {"enabled": True}}})


@pytest.mark.parametrize(
    ("job", "missing"),
    [("resync", "scopesConfigMap"), ("invalidate", "customer")],
)
def test_jobs_refuse_a_missing_argument(chart: helm.Chart, job: str, missing: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(f"jobs.{job}.{missing}")):
        render(chart, {"jobs": {job: {"enabled": True}}})


def test_notes_render(chart: helm.Chart) -> None:
    notes = render(chart)["cache-pipeline/templates/NOTES.txt"]
    assert "/readyz" in notes
    assert "a single pod" not in notes
    single = render(chart, {"replicaCount": 1})["cache-pipeline/templates/NOTES.txt"]
    assert "Run at\nleast 2 in production" in single
    assert "config.queueUrl is empty" in notes
    assert (
        "config.queueUrl is empty"
        not in render(chart, all_on())["cache-pipeline/templates/NOTES.txt"]
    )


def test_chart_lints_clean() -> None:
    for values in (None, all_on()):
        report = helm.lint(CHART, values)
        assert report["errors"] == [], report


BAD_VALUES = [
    pytest.param({"config": {"batchSize": 11}}, id="batchSize-11"),
    pytest.param({"config": {"cacheUpdatePolicy": "SOMETIMES"}}, id="policy-SOMETIMES"),
    pytest.param({"config": {"keysTtlInSecs": 0}}, id="ttl-0"),
    pytest.param({"config": {"keysTtlInSecs": -2}}, id="ttl-minus-2"),
    pytest.param({"config": {"port": 0}}, id="port-0"),
    pytest.param({"config": {"logLevel": "verbose"}}, id="logLevel-verbose"),
    pytest.param({"config": {"redisDb": 16}}, id="redisDb-16"),
    pytest.param({"config": {"poisonFloodRatio": 1.5}}, id="poisonFloodRatio-1.5"),
    pytest.param({"config": {"queueURL": "typo"}}, id="unknown-config-key"),
    pytest.param({"config": {"apiHost": ""}}, id="apiHost-empty"),
    pytest.param({"config": {"apiDocs": "yes"}}, id="apiDocs-not-a-boolean"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, id="pullPolicy"),
    pytest.param({"serviceAccount": {"roleArn": "not-an-arn"}}, id="roleArn"),
    pytest.param({"keda": {"identityOwner": "operator"}}, id="keda-identityOwner"),
    pytest.param({"extraVolumeMounts": [{"name": "ca"}]}, id="mount-without-path"),
    pytest.param({"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}, id="volume-named-tmp"),
    pytest.param({"extraVolumes": [{"configMap": {"name": "ca"}}]}, id="volume-without-name"),
    pytest.param({"extraEnvFrom": [{}]}, id="empty-envFrom"),
    pytest.param({"rollingUpdate": {"maxUnavailable": -1}}, id="maxUnavailable-negative"),
    pytest.param({"rollingUpdate": {"maxSurge": "one"}}, id="maxSurge-not-a-number"),
    pytest.param(
        {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}}, id="eviction-policy"
    ),
    pytest.param({"jobs": {"migrate": {"enabled": True, "now": True}}}, id="unknown-job-key"),
    pytest.param({"jobs": {"resync": {"concurrency": 65}}}, id="resync-concurrency-65"),
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_values_schema_rejects_bad_values(chart: helm.Chart, bad: dict[str, Any]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    merged = chart.merge_values(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merged, schema)
    with pytest.raises(helm.HelmValuesError):
        render(chart, bad)


def test_values_schema_accepts_shipped_values(chart: helm.Chart) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for values in (None, all_on()):
        jsonschema.validate(chart.merge_values(values), schema)
        chart.validate_schema(values)


def test_chart_and_kustomize_follow_the_package_version(chart: helm.Chart) -> None:
    assert chart.metadata["appVersion"] == __version__
    kustomization = yaml.safe_load(
        (CHART.parents[1] / "deploy" / "kustomize" / "base" / "kustomization.yaml").read_text()
    )
    assert kustomization["images"] == [{"name": "cache-pipeline", "newTag": __version__}]
