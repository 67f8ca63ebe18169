"""Key layout of CONTRACT.md section 2: names, id encoding, the cluster hash-tag form."""

from __future__ import annotations

import pytest

from cache_pipeline.keys import (
    CustomerKeys,
    KeyLayout,
    is_private,
    timestamp_key,
    unsafe_id_problem,
    value_key_of,
)


def test_plain_layout() -> None:
    keys = KeyLayout("production").customer("cus-42")
    assert keys.entitlements == "production:c_cus-42"
    assert keys.metadata == "production:c_cus-42:metadata"
    assert keys.index == "production:c_cus-42#keys"
    assert keys.invalidated == "production:c_cus-42#invalidated"
    assert keys.lock == "production:c_cus-42#lock"
    assert all(is_private(k) for k in (keys.index, keys.invalidated, keys.lock))
    assert not is_private(keys.metadata)
    assert keys.feature_usage("feature-seats") == "production:c_cus-42:f_feature-seats"
    assert keys.credit("ai-tokens") == "production:c_cus-42:credit_ai-tokens"
    assert timestamp_key(keys.metadata) == "production:c_cus-42:metadata#timestamp"


def test_resource_scope() -> None:
    keys = KeyLayout("p").customer("cus-42", "site-1")
    assert keys.entitlements == "p:c_cus-42:r_site-1"
    assert keys.feature_usage("f") == "p:c_cus-42:r_site-1:f_f"


def test_cluster_hash_tag() -> None:
    keys = KeyLayout("p", cluster=True).customer("cus-42", "site-1")
    assert keys.entitlements == "p:{c_cus-42:r_site-1}"
    assert keys.metadata == "p:{c_cus-42:r_site-1}:metadata"
    assert keys.index == "p:{c_cus-42:r_site-1}#keys"
    assert keys.credit("c") == "p:{c_cus-42:r_site-1}:credit_c"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a", "b"), ("a:b", None)),
        (("a", None), ("a:meta", None)),
        (("a", "f"), ("a:r", "f")),
        (("a:b", None), ("a", "b")),
        (("acme:eu", None), ("acme", None)),
    ],
)
def test_distinct_scopes_never_share_a_key(
    first: tuple[str, str | None], second: tuple[str, str | None]
) -> None:
    for scope in (*first, *second):
        assert scope is None or unsafe_id_problem(scope) is None
    for cluster in (False, True):
        layout = KeyLayout("p", cluster=cluster)
        one, two = layout.customer(*first), layout.customer(*second)
        names_one = {
            one.entitlements,
            one.metadata,
            one.index,
            one.invalidated,
            one.lock,
            one.feature_usage("f"),
            one.credit("c"),
        }
        names_two = {
            two.entitlements,
            two.metadata,
            two.index,
            two.invalidated,
            two.lock,
            two.feature_usage("f"),
            two.credit("c"),
        }
        with_versions_two = names_two | {timestamp_key(k) for k in names_two}
        assert not names_one & with_versions_two


def test_schema_marker_and_scan_pattern() -> None:
    layout = KeyLayout("production")
    assert layout.schema_marker == "production:__schema__"
    assert layout.environment_pattern == "production:*"
    assert KeyLayout("we[ir]d*?").environment_pattern == "we\\[ir\\]d\\*\\?:*"


def test_a_timestamp_key_names_its_value_key() -> None:
    keys = KeyLayout("p").customer("acme:eu")
    assert value_key_of(timestamp_key(keys.credit("c"))) == "p:c_acme:eu:credit_c"
    assert value_key_of(keys.entitlements) == keys.entitlements


@pytest.mark.parametrize("cluster", [False, True])
def test_a_usage_or_credit_key_names_its_scope(cluster: bool) -> None:
    layout = KeyLayout("p:x", cluster=cluster)
    for keys in (layout.customer("acme:eu"), layout.customer("a:b", "site:1")):
        assert layout.usage_owner(keys.feature_usage("f:1")) == keys
        assert layout.usage_owner(keys.credit("tokens")) == keys
        assert layout.usage_owner(keys.entitlements) is None
        assert layout.usage_owner(keys.metadata) is None
    assert layout.usage_owner("other:c_a:f_b") is None
    assert KeyLayout("p").usage_owner("p:c_a:r_b:credit_c") == CustomerKeys("p:c_a:r_b")


@pytest.mark.parametrize(
    "value", ["acme:eu", "user@example.com", "cus-42", "a:b:c", "r_x", "x:c_y", "metadata"]
)
def test_raw_ids_that_name_only_their_own_keys_are_safe(value: str) -> None:
    assert unsafe_id_problem(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "a#timestamp",
        "a{b}",
        "a}",
        "a:r_b",
        "a:f_b",
        "a:credit_b",
        "a:metadata",
        "a\x01",
        "a\x7f",
        "a\u0085",
        "a\nb",
    ],
)
def test_ids_that_could_reach_other_keys_are_unsafe(value: str) -> None:
    problem = unsafe_id_problem(value)
    assert problem is not None
    assert "another scope" in problem
