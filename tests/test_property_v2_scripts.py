"""Property: random operation sequences through the contract v2.1 scripts vs a model of the text.

The model is written from CONTRACT.md v2.1 (rules 1-4) and docs/store.md, not from the Lua:
per-key versions, UPDATE_IF_EXISTS (usage only with a map), an invalidation at T deleting
the values of version <= T with their #timestamp siblings whoever wrote them and
remembering the versions it deleted usage and credit keys at, and refusing writes whose
gate is not newer than T. Its values come from ``tests/support/model.py`` (the Edge mapping
restated), and states are compared decoded, private keys included. Properties: (a) Redis
equals the model applied in the same order; (b) applying any operation a second time
right away changes nothing (redelivery is harmless).
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

from cache_pipeline.contract.plan import ScriptCall, invalidate_call, snapshot_call, usage_call
from cache_pipeline.keys import CustomerKeys
from cache_pipeline.store.scripts import script_source
from tests.support.model import cached_entry, usage_value
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
    only_if_exists: bool = True


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
    st.builds(Credit, st.integers(0, 1), versions, st.booleans()),
    st.builds(Invalidate, st.integers(0, 1), versions),
)


@dataclass
class Model:
    """Every key's decoded value and version, each scope's T, index and deleted versions."""

    prefix: str
    values: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    invalidated: dict[str, int] = field(default_factory=dict)
    index: dict[str, set[str]] = field(default_factory=dict)
    deleted: dict[str, dict[str, int]] = field(default_factory=dict)

    def scope(self, number: int) -> str:
        return f"{self.prefix}:{SCOPES[number]}"

    def apply(self, op: Operation) -> None:
        scope = self.scope(op.scope)
        if isinstance(op, Invalidate):
            self._invalidate(scope, op.at)
        elif isinstance(op, Credit):
            if op.only_if_exists and scope not in self.values:
                return  # rule 2, UPDATE_IF_EXISTS
            if op.version > self.invalidated.get(scope, 0):  # rule 4
                self._put(scope, f"{scope}:credit_tokens", _credit(op.version), op.version)
        else:
            self._snapshot(scope, op)

    def _snapshot(self, scope: str, op: Snapshot) -> None:
        if op.only_if_exists and scope not in self.values:
            return
        if self.invalidated.get(scope, 0) >= op.version + op.gate_delta:
            return
        entry = op.entry()
        self._put(None, scope, {"seats": cached_entry(entry)}, op.version)
        self._put(None, f"{scope}:metadata", {"accessDeniedReason": None}, op.version)
        key = f"{scope}:f_seats"
        version = op.usage_version or op.version
        if self.deleted.get(scope, {}).get(key, 0) > version:
            return  # an invalidation deleted a newer version of it
        usage = usage_value(entry["currentUsage"], None, None, omit_zero=True)
        self._put(scope, key, usage, version)

    def _put(self, indexed_in: str | None, key: str, value: Any, version: int) -> None:
        if self.versions.get(key, 0) > version:
            return
        self.values[key], self.versions[key] = value, version
        if indexed_in is not None:
            self.index.setdefault(indexed_in, set()).add(key)

    def _invalidate(self, scope: str, at: int) -> None:
        index = self.index.setdefault(scope, set())
        usage = set(index)
        if scope in self.values:
            usage |= {f"{scope}:f_{name}" for name in self.values[scope]}
        for key in [scope, f"{scope}:metadata", *sorted(usage)]:
            version = self.versions.get(key)
            if version is None or version > at:
                continue
            del self.values[key], self.versions[key]
            index.discard(key)
            if key in usage:
                gone = self.deleted.setdefault(scope, {})
                gone[key] = max(gone.get(key, 0), version)
        self.invalidated[scope] = max(self.invalidated.get(scope, 0), at)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(self.values)
        state |= {f"{key}#timestamp": str(version) for key, version in self.versions.items()}
        state |= {f"{scope}#invalidated": str(at) for scope, at in self.invalidated.items()}
        state |= {f"{scope}#keys": keys for scope, keys in self.index.items() if keys}
        state |= {
            f"{scope}#deleted": {key: str(version) for key, version in gone.items()}
            for scope, gone in self.deleted.items()
            if gone
        }
        return state


def _credit(version: int) -> dict[str, Any]:
    return {"currentUsage": version, "usageLimit": 100, "usagePeriodStart": None}


def _call(scope: str, op: Operation) -> ScriptCall:
    if isinstance(op, Invalidate):
        return invalidate_call(CustomerKeys(scope), at=op.at, ttl=TTL)
    if isinstance(op, Credit):
        key = f"{scope}:credit_tokens"
        value = _credit(op.version)
        return usage_call(
            CustomerKeys(scope),
            key,
            value,
            version=op.version,
            ttl=TTL,
            only_if_exists=op.only_if_exists,
        )
    return snapshot_call(
        CustomerKeys(scope),
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
        if key.endswith("#keys"):
            state[key] = client.smembers(key)
        elif key.endswith("#deleted"):
            state[key] = client.hgetall(key)
        elif key.endswith(("#timestamp", "#invalidated")):
            state[key] = client.get(key)
        else:
            state[key] = json.loads(client.get(key) or "null")
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
