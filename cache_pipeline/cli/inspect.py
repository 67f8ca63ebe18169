"""``cache-pipeline inspect``: what the cache holds for one scope, and how Stigg's readers take it.

Read-only: GET, TTL, TYPE, SMEMBERS, HGETALL and a SCAN of the scope's own usage and
credit keys; no Edge call, no write. Every key of the scope comes out with its Redis
type, version (its ``#timestamp``), TTL and decoded value: the map, the metadata, the
usage and credit keys (those the map names, those the service's index lists, those
found by SCAN), and the service's private keys. Then a verdict per reader
(docs/stigg-compat.md §4):

* ``stigg-node-3.95.0``: the map must decode to a JSON object; a resource scope needs
  its own and the global ``#timestamp``, the resource one not older; a metered
  feature needs its usage key; an entry whose ``validUntil`` has passed is refetched.
* ``stigg-4.x`` (cache-redis-store 1.29.0, stricter): also the scope's own
  ``#timestamp`` for a global scope, and every usage key's ``#timestamp``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cache_pipeline.client.cached_scope import parse_timestamp
from cache_pipeline.contract.stigg_map import is_metered
from cache_pipeline.keys import TIMESTAMP_SUFFIX, CustomerKeys, KeyLayout, timestamp_key
from cache_pipeline.store.writer import RedisClient, translate_errors

READERS = ("stigg-node-3.95.0", "stigg-4.x")
SCAN_COUNT = 500


@dataclass
class KeyView:
    """One key as Redis holds it."""

    key: str
    role: str  # map, metadata, usage, credit, private
    type: str  # Redis type, or "none"
    version: str | None  # the raw #timestamp value (absent: None)
    ttl: int | None  # seconds; -1 no expiry; None when the key is absent
    value: Any = None  # decoded JSON (or the raw text when it is not JSON)


@dataclass
class Verdict:
    """How one reader takes the scope, and each feature of its map."""

    scope: str  # "hit" or "miss: <why>"
    features: dict[str, str] = field(default_factory=dict)


@dataclass
class Inspection:
    customer: str
    resource: str | None
    scope_key: str
    keys: list[KeyView]
    readers: dict[str, Verdict]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_scope(
    client: RedisClient, layout: KeyLayout, customer: str, resource: str | None
) -> Inspection:
    """Every key of the scope and each reader's verdict; reads only."""
    keys = layout.customer(customer, resource)
    global_keys = layout.customer(customer) if resource is not None else None
    with translate_errors():
        views = _views(client, keys, global_keys)
    by_key = {view.key: view for view in views}
    readers = {
        READERS[0]: _verdict(by_key, keys, global_keys, strict=False),
        READERS[1]: _verdict(by_key, keys, global_keys, strict=True),
    }
    return Inspection(customer, resource, keys.entitlements, views, readers)


def _views(
    client: RedisClient, keys: CustomerKeys, global_keys: CustomerKeys | None
) -> list[KeyView]:
    named = [(keys.entitlements, "map"), (keys.metadata, "metadata")]
    if global_keys is not None:
        named.append((global_keys.entitlements, "global map"))
    views = [_view(client, key, role) for key, role in named]
    views += [_view(client, key, role) for key, role in _value_keys(client, keys, views[0])]
    views += [_view(client, key, "private") for key in _private_keys(keys)]
    return [view for view in views if view.type != "none" or view.role in ("map", "metadata")]


def _value_keys(
    client: RedisClient, keys: CustomerKeys, scope_map: KeyView
) -> list[tuple[str, str]]:
    """Usage and credit keys: named by the map, listed by the index, or found by SCAN."""
    found: dict[str, str] = {}
    if isinstance(scope_map.value, dict):
        for name in scope_map.value:
            found[keys.feature_usage(str(name))] = "usage"
    if client.type(keys.index) == "set":
        for key in client.smembers(keys.index):
            found.setdefault(str(key), _role_of(str(key), keys))
    for pattern in (keys.feature_usage("*"), keys.credit("*")):
        for key in client.scan_iter(match=_glob(pattern), count=SCAN_COUNT):
            if not str(key).endswith(TIMESTAMP_SUFFIX):
                found.setdefault(str(key), _role_of(str(key), keys))
    return sorted(found.items())


def _glob(pattern: str) -> str:
    """A SCAN pattern: the scope's own characters escaped, the trailing ``*`` kept."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern[:-1]) + "*"


def _role_of(key: str, keys: CustomerKeys) -> str:
    return "credit" if key.startswith(keys.credit("")) else "usage"


def _private_keys(keys: CustomerKeys) -> list[str]:
    return [keys.index, keys.invalidated, keys.deleted, keys.lock]


def _view(client: RedisClient, key: str, role: str) -> KeyView:
    kind = str(client.type(key))
    if kind == "none":
        return KeyView(key, role, "none", None, None)
    version = client.get(timestamp_key(key)) if role != "private" else None
    return KeyView(key, role, kind, _text(version), int(client.ttl(key)), _value(client, key, kind))


def _value(client: RedisClient, key: str, kind: str) -> Any:
    if kind == "set":
        return sorted(str(member) for member in client.smembers(key))
    if kind == "hash":
        return {str(k): str(v) for k, v in client.hgetall(key).items()}
    if kind != "string":
        return f"<a {kind}: the service and Stigg's SDK write strings here>"
    raw = _text(client.get(key))
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return raw


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _verdict(
    by_key: dict[str, KeyView],
    keys: CustomerKeys,
    global_keys: CustomerKeys | None,
    *,
    strict: bool,
) -> Verdict:
    scope_map = by_key[keys.entitlements]
    problem = _scope_problem(scope_map, by_key, global_keys, strict=strict)
    if problem is not None:
        return Verdict(f"miss: {problem}")
    entries = scope_map.value if isinstance(scope_map.value, dict) else {}
    if not entries:
        return Verdict("hit: an empty map (CustomerNotFound)")
    features = {
        str(name): _feature(entry, by_key.get(keys.feature_usage(str(name))), strict=strict)
        for name, entry in entries.items()
    }
    return Verdict("hit", features)


def _scope_problem(
    scope_map: KeyView,
    by_key: dict[str, KeyView],
    global_keys: CustomerKeys | None,
    *,
    strict: bool,
) -> str | None:
    if scope_map.type == "none":
        return "no map"
    if not isinstance(scope_map.value, dict | list):
        return "the map is not a JSON object"
    own = parse_timestamp(scope_map.version)
    if global_keys is None:
        return "no #timestamp (4.x needs it)" if strict and own is None else None
    global_map = by_key.get(global_keys.entitlements)
    theirs = parse_timestamp(global_map.version) if global_map is not None else None
    if own is None or theirs is None:
        return "the resource or the global #timestamp is absent"
    if own < theirs:
        return f"the resource map ({own}) is older than the global one ({theirs})"
    return None


def _feature(entry: Any, usage: KeyView | None, *, strict: bool) -> str:
    calculated = entry.get("calculatedEntitlement") if isinstance(entry, dict) else None
    if not isinstance(calculated, dict):
        return "miss: no calculatedEntitlement"
    valid_until = calculated.get("validUntil")
    if isinstance(valid_until, int | float) and valid_until <= time.time() * 1000:
        return "miss: validUntil has passed (refetched on every read)"
    if not is_metered(calculated.get("feature")):
        return "hit"
    if usage is None or usage.type == "none":
        return "miss: metered, no usage key"
    if strict and parse_timestamp(usage.version) is None:
        return "miss: metered, its usage key has no #timestamp (4.x needs it)"
    return "hit"


def render(inspection: Inspection) -> str:
    """The inspection as text: one line per key, then each reader's verdict."""
    lines = [f"scope {inspection.scope_key}"]
    for view in inspection.keys:
        value = json.dumps(view.value, sort_keys=True) if view.value is not None else "-"
        lines.append(
            f"  {view.role:<10} {view.key}  type={view.type} version={view.version or '-'}"
            f" ttl={'-' if view.ttl is None else view.ttl}  {_clip(value)}"
        )
    for reader, verdict in inspection.readers.items():
        lines.append(f"{reader}: {verdict.scope}")
        lines += [f"  {name}: {outcome}" for name, outcome in sorted(verdict.features.items())]
    return "\n".join(lines)


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
