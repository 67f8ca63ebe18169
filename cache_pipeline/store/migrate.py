"""``cache-pipeline migrate``: move an environment from key schema 1 (contract 1.x) to 2.

Schema 1 keyed the entitlements map ``FEATURE:<id>``, percent-encoded ids and kept
``#timestamp`` tombstones; no Stigg reader can read it and a version 2 worker refuses
to write next to it (``SchemaVersionMismatch``). The values cannot be converted in
place (they lack the Edge API fields Stigg's SDK maps), so the migration removes every
key of the environment in bounded SCAN + UNLINK batches and writes the version 2
marker. The cache then refills from the stream, from readers' misses, or at once with
``cache-pipeline resync``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache_pipeline.errors import SchemaVersionMismatch
from cache_pipeline.keys import SCHEMA_VERSION
from cache_pipeline.store.schema import Marker, load_marker, now_ms
from cache_pipeline.store.writer import Store, translate_errors


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``migrate`` found and did."""

    found: str | None  # the schema version found; None without a marker
    deleted: int

    def as_dict(self) -> dict[str, object]:
        return {"from": self.found, "to": SCHEMA_VERSION, "deleted": self.deleted}


def migrate(store: Store) -> Migration:
    """Drop a schema 1 keyspace and mark the environment version 2; nothing when it is 2."""
    marker = store.layout.schema_marker
    try:
        stored = load_marker(store.client, marker)
        found = None if stored is None else stored.version
    except SchemaVersionMismatch:  # an unreadable marker is an incompatible schema too
        found = "unreadable"
    if found == SCHEMA_VERSION:
        return Migration(found, 0)
    deleted = store.purge_environment()
    with translate_errors():
        store.client.set(marker, Marker(SCHEMA_VERSION, now_ms()).to_json())
    return Migration(found, deleted)
