"""Property: random operation sequences through the contract v2 scripts vs a model of the text.

The model is written from CONTRACT.md v2 (rules 1-4), not from the Lua: per-key versions,
UPDATE_IF_EXISTS, usage only with a map, invalidation deleting values and their #timestamp
siblings whoever wrote them, and refusing writes whose gate is older than the scope's latest
invalidation. Properties: (a) Redis equals the model applied in the same order; (b) applying
any operation a second time right away changes nothing (redelivery is harmless).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_pipeline.plan import ScriptCall, encode
from cache_pipeline.scope_writes import invalidate_call, snapshot_call, usage_call
from cache_pipeline.scripts import script_source
from cache_pipeline.stigg_map import map_entitlements, usage_value
from tests.support.servers import RedisServer

SCOPES = ["c_acme:eu", "c_acme:eu:r_site@1"]
TTL = -1
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Snapshot:
    scope: int
    version: int
    gate_delta: int  # gate = version + delta (a reader write-back starts after its data)
    usage_version: int | None
    only_if_exists: bool

    def entry(self) -> dict[str, Any]:
        return {
            "feature": {"refId": "seats", "featureType": "NUMBER", "meterType": "Fluctuating"},
            "usageLimit": self.version,  # every value shows which operation wrote it
            "currentUsage": self.version,
            "usageUpdatedAt": self.usage_version,
        }


@dataclass(frozen=True)
class Credit:
    scope: int
    version: int


@dataclass(frozen=True)
class Invalidate:
    scope: int
    at: int


Operation = Snapshot | Credit | Invalidate
versions = st.integers(min_value=1, max_value=40)
operations = st.one_of(
    st.builds(
        Snapshot,
        st.integers(0, 1),
        versions,
        st.sampled_from([0, 0, 15]),
        st.one_of(st.none(), versions),
        st.booleans(),
    ),
    st.builds(Credit, st.integers(0, 1), versions),
    st.builds(Invalidate, st.integers(0, 1), versions),
)


@dataclass
class Model:
    """Every key's value and version, each scope's invalidation time and index."""

    prefix: str
    values: dict[str, str] = field(default_factory=dict)
    invalidated: dict[str, int] = field(default_factory=dict)
    index: dict[str, set[str]] = field(default_factory=dict)

    def scope(self, number: int) -> str:
        return f"{self.prefix}:{SCOPES[number]}"

    def apply(self, op: Operation) -> None:
        scope = self.scope(op.scope)
        if isinstance(op, Invalidate):
            self._invalidate(scope, op.at)
        elif isinstance(op, Credit):
            if scope in self.values and self.invalidated.get(scope, 0) <= op.version:
                self._put(scope, f"{scope}:credit_tokens", encode(_credit(op.version)), op.version)
        else:
            self._snapshot(scope, op)

    def _snapshot(self, scope: str, op: Snapshot) -> None:
        if op.only_if_exists and scope not in self.values:
            return
        if self.invalidated.get(scope, 0) > op.version + op.gate_delta:
            return
        self._put(None, scope, encode(map_entitlements([op.entry()])), op.version)
        self._put(None, f"{scope}:metadata", encode({"accessDeniedReason": None}), op.version)
        usage = encode(usage_value(op.entry()))
        self._put(scope, f"{scope}:f_seats", usage, op.usage_version or op.version)

    def _put(self, indexed_in: str | None, key: str, value: str, version: int) -> None:
        stored = self.values.get(key + "#timestamp")
        if stored is not None and int(stored) > version:
            return
        self.values[key], self.values[key + "#timestamp"] = value, str(version)
        if indexed_in is not None:
            self.index.setdefault(indexed_in, set()).add(key)

    def _invalidate(self, scope: str, at: int) -> None:
        targets = {scope, f"{scope}:metadata", *self.index.pop(scope, set())}
        if scope in self.values:
            targets |= {f"{scope}:f_{name}" for name in json.loads(self.values[scope])}
        for key in targets:
            self.values.pop(key, None)
            self.values.pop(key + "#timestamp", None)
        self.invalidated[scope] = max(self.invalidated.get(scope, 0), at)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(self.values)
        state |= {f"{scope}#invalidated": str(at) for scope, at in self.invalidated.items()}
        state |= {f"{scope}#keys": keys for scope, keys in self.index.items() if keys}
        return state


def _credit(version: int) -> dict[str, Any]:
    return {"currentUsage": version, "usageLimit": 100, "usagePeriodStart": None}


def _call(scope: str, op: Operation) -> ScriptCall:
    if isinstance(op, Invalidate):
        return invalidate_call(scope, at=op.at, ttl=TTL)
    if isinstance(op, Credit):
        key = f"{scope}:credit_tokens"
        return usage_call(scope, key, _credit(op.version), version=op.version, ttl=TTL)
    return snapshot_call(
        scope,
        [op.entry()],
        version=op.version,
        gate=op.version + op.gate_delta,
        ttl=TTL,
        only_if_exists=op.only_if_exists,
    )


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis_server.client()
    yield connection
    connection.close()


def _state(client: redis.Redis, prefix: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        state[key] = client.smembers(key) if key.endswith("#keys") else client.get(key)
    return state


def _run(client: redis.Redis, prefix: str, op: Operation) -> None:
    call = _call(f"{prefix}:{SCOPES[op.scope]}", op)
    client.register_script(script_source(call.script))(keys=call.keys, args=call.args)


@PROPERTY
@given(ops=st.lists(operations, max_size=12), data=st.data())
def test_v2_scripts_equal_the_model_and_redelivery_changes_nothing(
    client: redis.Redis, ops: list[Operation], data: st.DataObject
) -> None:
    prefix = f"prop-v2-{data.draw(st.uuids()).hex[:12]}"
    model = Model(prefix)
    try:
        for op in ops:
            _run(client, prefix, op)
            model.apply(op)
            after_once = _state(client, prefix)
            _run(client, prefix, op)  # redelivered at once
            assert _state(client, prefix) == after_once, op
        assert _state(client, prefix) == model.state()
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.unlink(key)
