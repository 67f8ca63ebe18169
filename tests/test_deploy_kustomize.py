"""The kustomize base (and the example overlay), built by kustomize itself.

``kubectl kustomize`` (kustomize v5 inside kubectl) builds them; every object
is validated against the Kubernetes schemas and compared with the Helm
chart's defaults, so that the two ways to deploy do not drift apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from cache_pipeline.config import SHUTDOWN_GRACE_SECS, load_settings
from tests.support.manifests import by_kind, load_objects, validate_object

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "kustomize" / "base"
OVERLAY = ROOT / "deploy" / "kustomize" / "overlays" / "example"
CHART = ROOT / "charts" / "cache-pipeline"
JOB_RECIPE = ROOT / "deploy" / "kustomize" / "job-from-deployment.jq"


def build(path: Path) -> dict[str, dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: install it (it carries kustomize) to build the base"
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return by_kind(load_objects([result.stdout]))


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return build(BASE)


@pytest.fixture(scope="module")
def chart_defaults() -> dict[str, dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(name="cache-pipeline", namespace="default")
    return by_kind(load_objects(t for p, t in manifests.items() if p.endswith(".yaml")))


def worker(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return container


def test_base_builds_valid_objects(base: dict[str, dict[str, Any]]) -> None:
    assert set(base) == {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for obj in base.values():
        validate_object(obj)


def test_overlay_builds_valid_objects() -> None:
    overlay = build(OVERLAY)
    for obj in overlay.values():
        validate_object(obj)
        assert obj["metadata"]["namespace"] == "cache-pipeline"
    annotations = overlay["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert overlay["ConfigMap"]["data"]["QUEUE_URL"].startswith("https://sqs.")
    config_ref = worker(overlay)["envFrom"][0]["configMapRef"]["name"]
    assert config_ref == overlay["ConfigMap"]["metadata"]["name"], "hashed name is wired through"


def test_selectors_match_pod_labels(base: dict[str, dict[str, Any]]) -> None:
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        base["Deployment"]["spec"]["selector"]["matchLabels"],
        base["Service"]["spec"]["selector"],
        base["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector
        assert selector.items() <= pod_labels.items()


def test_base_matches_the_chart_defaults(
    base: dict[str, dict[str, Any]], chart_defaults: dict[str, dict[str, Any]]
) -> None:
    ours, theirs = worker(base), worker(chart_defaults)
    for field in (
        "args",
        "ports",
        "env",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert ours.get(field) == theirs.get(field), field
    pod, chart_pod = (o["Deployment"]["spec"]["template"]["spec"] for o in (base, chart_defaults))
    for field in ("securityContext", "volumes", "terminationGracePeriodSeconds"):
        assert pod[field] == chart_pod[field], field
    assert base["ConfigMap"]["data"] == chart_defaults["ConfigMap"]["data"]
    budget, chart_budget = (o["PodDisruptionBudget"]["spec"] for o in (base, chart_defaults))
    assert budget | {"selector": None} == chart_budget | {"selector": None}
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    for field in ("replicas", "strategy"):
        assert base["Deployment"]["spec"][field] == chart_defaults["Deployment"]["spec"][field]
    assert base["Service"]["spec"]["ports"] == chart_defaults["Service"]["spec"]["ports"]


def test_base_config_is_accepted_by_the_service(
    base: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in base["ConfigMap"]["data"].items():
        monkeypatch.setenv(name, value)
    load_settings()
    grace = base["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= SHUTDOWN_GRACE_SECS


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["invalidate", "--customer", "cus-42"]],
    ids=["migrate", "invalidate"],
)
def test_job_recipe_runs_a_command_in_the_workers_pod_template(
    base: dict[str, dict[str, Any]], args: list[str]
) -> None:
    """docs/operations.md's kubectl recipe: a Job made from the Deployment by jq."""
    jq = shutil.which("jq")
    assert jq, "jq is not on PATH: install it (.ci/run does) to check the Job recipe"
    result = subprocess.run(
        [jq, "-f", str(JOB_RECIPE), "--argjson", "args", json.dumps(args)],
        input=json.dumps(base["Deployment"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    validate_object(job)
    assert job["metadata"]["generateName"] == f"cache-pipeline-{args[0]}-"
    pod, spec = base["Deployment"]["spec"]["template"]["spec"], job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    for field in ("serviceAccountName", "securityContext", "volumes"):
        assert spec[field] == pod[field], field
    (command,) = spec["containers"]
    assert command["args"] == args
    for field in ("image", "envFrom", "securityContext", "resources", "volumeMounts"):
        assert command[field] == worker(base)[field], field
    assert not {"ports", "livenessProbe", "readinessProbe", "startupProbe"} & set(command)
    selector = base["Deployment"]["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the job's pod is no worker"
