"""The settings are described in four places that must not drift from ``Settings``:
the README's table, ``.env.example``, the chart's ``values.yaml`` and its schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
import yaml

from cache_pipeline.config import Settings, load_worker_settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "cache-pipeline"
SECRETS = {"server_api_key", "redis_password", "sentry_dsn"}
# Where the chart's default is deliberately another than the service's: in a
# cluster Redis is a Service, not the pod's own loopback.
CHART_DEFAULTS = {"redis_host": "redis"}
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the default chain reads them


def readme_table() -> dict[str, tuple[str, str]]:
    """Variable -> (type, default) of the README's Configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[A-Z][A-Z0-9_]+", cells[0]):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def default(field: str) -> Any:
    value = Settings.model_fields[field].default
    return getattr(value, "value", value)


def as_text(value: Any) -> str:
    """A default as the README writes it: booleans as 0/1, none as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_readme_table_lists_every_setting_with_its_default() -> None:
    table = readme_table()
    assert set(table) == {field.upper() for field in Settings.model_fields}
    for field in Settings.model_fields:
        _kind, documented = table[field.upper()]
        if default(field) is None:
            assert documented == "" or documented.startswith("("), (field, documented)
        else:
            assert documented == as_text(default(field)), (field, documented)


def test_env_example_names_only_settings_and_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    example = env_example()
    unknown = set(example) - {field.upper() for field in Settings.model_fields} - AWS_CREDENTIALS
    assert not unknown, f".env.example sets what no setting reads: {sorted(unknown)}"
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    settings = load_worker_settings()
    assert settings.queue_url == example["QUEUE_URL"]


def test_chart_values_default_to_the_service_defaults() -> None:
    config = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    expected_keys = {camel(f) for f in Settings.model_fields} - {camel(f) for f in SECRETS}
    assert set(config) == expected_keys, set(config) ^ expected_keys
    for field in Settings.model_fields.keys() - SECRETS:
        value = config[camel(field)]
        wanted = CHART_DEFAULTS.get(field, default(field))
        if wanted is None:
            assert value == "", (field, value)  # empty strings are left out of the ConfigMap
        else:
            assert value == wanted, (field, value, wanted)


def test_chart_schema_has_every_value_and_the_service_bounds() -> None:
    config = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    assert set(schema["properties"]) == set(config)
    assert schema["additionalProperties"] is False
    for field, info in Settings.model_fields.items():
        prop = schema["properties"].get(camel(field))
        if prop is None:
            continue
        for bound in info.metadata:
            if isinstance(bound, annotated_types.Ge):
                assert prop.get("minimum") == bound.ge, field
            elif isinstance(bound, annotated_types.Gt):
                assert prop.get("exclusiveMinimum") == bound.gt, field
            elif isinstance(bound, annotated_types.Le):
                assert prop.get("maximum") == bound.le, field
        annotation = info.annotation
        members = getattr(annotation, "__members__", None)  # an enum
        if annotation is bool:
            assert prop["type"] == "boolean", field
        elif annotation is int:
            assert prop["type"] == "integer", field
        elif members:
            assert prop["enum"] == list(members), field
        elif get_origin(annotation) is Literal:
            assert prop["enum"] == list(get_args(annotation)), field
