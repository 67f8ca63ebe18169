"""The read's KEYS and ARGV (plain and Redis Cluster layouts), with fixed expected values."""

from __future__ import annotations

from cache_pipeline.client.reading import ReadRequest, Scope, with_global_timestamp
from cache_pipeline.keys import KeyLayout

PLAIN, CLUSTER = KeyLayout("P"), KeyLayout("P", cluster=True)


def test_a_global_read_takes_the_map_and_metadata() -> None:
    scope = Scope.build(PLAIN, "acme:eu", None)
    assert scope.read_call(ReadRequest("all"), cluster=False) == (
        ("P:c_acme:eu", "P:c_acme:eu:metadata"),
        ("0", "all", ""),
    )
    assert scope.global_timestamp_key(cluster=False) is None


def test_a_resource_read_takes_the_global_map_along_where_it_shares_the_node() -> None:
    scope = Scope.build(PLAIN, "c", "user@example.com")
    assert scope.read_call(ReadRequest("credit", "ai"), cluster=False) == (
        ("P:c_c:r_user@example.com", "P:c_c:r_user@example.com:metadata", "P:c_c"),
        ("1", "credit", "ai"),
    )
    assert scope.global_timestamp_key(cluster=False) is None


def test_a_cluster_resource_read_gets_the_global_timestamp_apart() -> None:
    scope = Scope.build(CLUSTER, "c", "r")
    assert scope.read_call(ReadRequest("feature", "f"), cluster=True) == (
        ("P:{c_c:r_r}", "P:{c_c:r_r}:metadata"),
        ("0", "feature", "f"),
    )
    assert scope.global_timestamp_key(cluster=True) == "P:{c_c}#timestamp"
    assert scope.keys.lock == "P:{c_c:r_r}#lock"


def test_with_global_timestamp_puts_it_in_the_fourth_place() -> None:
    assert with_global_timestamp(["{}", "5", None, None, "f", "{}"], "4") == [
        "{}",
        "5",
        None,
        "4",
        "f",
        "{}",
    ]
    assert with_global_timestamp([None, None, None, None], None) == [None, None, None, None]
    assert with_global_timestamp([None], "4") == [None, None, None, "4"]
