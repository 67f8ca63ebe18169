"""Validation of rendered Kubernetes objects for the deployment tests.

Built-in kinds are checked with kubernetes-validate's strict schemas (unknown
fields rejected) for the oldest Kubernetes the chart supports and the newest
the package ships. Custom resources (ServiceMonitor, ScaledObject,
TriggerAuthentication) have no schema there: they are checked against the
focused schemas below, which hold the fields the chart relies on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

# The chart's kubeVersion floor (Chart.yaml) and the newest schemas the package ships.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": _LABELS},
}
_TARGET = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "apiVersion": {"const": "apps/v1"},
        "kind": {"const": "Deployment"},
        "name": {"type": "string", "minLength": 1},
    },
    "additionalProperties": False,
}


def _custom_resource(spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of a custom resource: a name, labels, and this ``spec``."""
    return {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": spec},
    }


CUSTOM_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _custom_resource(
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": _LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        }
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _custom_resource(
        {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": _TARGET,
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "aws-sqs-queue"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                            # KEDA trigger metadata is a map of strings.
                            "metadata": {
                                "type": "object",
                                "required": ["queueURL", "queueLength", "awsRegion"],
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _custom_resource(
        {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z]\\w*$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                                        "labels": _LABELS,
                                        "annotations": _LABELS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        }
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _custom_resource(
        {
            "type": "object",
            "required": ["podIdentity"],
            "properties": {
                "podIdentity": {
                    "type": "object",
                    "required": ["provider"],
                    "additionalProperties": False,
                    "properties": {
                        "provider": {"const": "aws"},
                        "identityOwner": {"enum": ["keda", "workload"]},
                        "roleArn": {"type": "string"},
                    },
                    "not": {"required": ["identityOwner", "roleArn"]},
                }
            },
        }
    ),
}


def load_objects(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``texts``."""
    objects: list[dict[str, Any]] = []
    for text in texts:
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def validate_object(obj: dict[str, Any]) -> str:
    """Validate one object; return how it was checked. Raises AssertionError."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    where = f"{key[1]} {obj.get('metadata', {}).get('name')}"
    if key in CUSTOM_SCHEMAS:
        errors = list(jsonschema.Draft202012Validator(CUSTOM_SCHEMAS[key]).iter_errors(obj))
        assert not errors, f"{where}: " + "; ".join(f"{e.json_path}: {e.message}" for e in errors)
        return "custom-resource schema"
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{where} (Kubernetes {version}) at {exc.json_path}: {exc.message}"
            ) from None
    return "kubernetes " + ", ".join(K8S_VERSIONS)


def by_kind(objects: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects keyed by kind (the tests render at most one object of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        assert obj["kind"] not in found, f"two objects of kind {obj['kind']}"
        found[obj["kind"]] = obj
    return found
