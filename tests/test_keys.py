"""Key layout of CONTRACT.md section 2: names, id encoding, the cluster hash-tag form."""

from __future__ import annotations

import pytest

from cache_pipeline.keys import KeyLayout, encode_id, timestamp_key, unsafe_id_problem


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("cus-42", "cus-42"),
        ("ABC_xyz.09@example.com", "ABC_xyz.09@example.com"),
        ("a%b", "a%25b"),
        ("a:b", "a%3Ab"),
        ("{a}", "%7Ba%7D"),
        ("a#timestamp", "a%23timestamp"),
        ("%3A", "%253A"),
        ("é ü/+=*?", "é ü/+=*?"),
    ],
)
def test_encode_id(raw: str, encoded: str) -> None:
    assert encode_id(raw) == encoded


def test_plain_layout() -> None:
    keys = KeyLayout("production").customer("cus-42")
    assert keys.entitlements == "production:c_cus-42"
    assert keys.metadata == "production:c_cus-42:metadata"
    assert keys.index == "production:c_cus-42:keys"
    assert keys.feature_usage("feature-seats") == "production:c_cus-42:f_feature-seats"
    assert keys.credit("ai-tokens") == "production:c_cus-42:credit_ai-tokens"
    assert keys.usage_for("CREDIT", "x") == keys.credit("x")
    assert keys.usage_for("FEATURE", "x") == keys.feature_usage("x")
    assert timestamp_key(keys.metadata) == "production:c_cus-42:metadata#timestamp"


def test_resource_scope() -> None:
    keys = KeyLayout("p").customer("cus-42", "site-1")
    assert keys.entitlements == "p:c_cus-42:r_site-1"
    assert keys.feature_usage("f") == "p:c_cus-42:r_site-1:f_f"


def test_cluster_hash_tag() -> None:
    keys = KeyLayout("p", cluster=True).customer("cus-42", "site-1")
    assert keys.entitlements == "p:{c_cus-42:r_site-1}"
    assert keys.metadata == "p:{c_cus-42:r_site-1}:metadata"
    assert keys.index == "p:{c_cus-42:r_site-1}:keys"
    assert keys.credit("c") == "p:{c_cus-42:r_site-1}:credit_c"
    braces = KeyLayout("p", cluster=True).customer("}{", "{")
    assert braces.entitlements == "p:{c_%7D%7B:r_%7B}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a", "b"), ("a:r_b", None)),
        (("a", None), ("a:metadata", None)),
        (("a", "b#timestamp"), ("a", "b")),
        (("a:b", None), ("a%3Ab", None)),
    ],
)
def test_distinct_scopes_never_share_a_key(
    first: tuple[str, str | None], second: tuple[str, str | None]
) -> None:
    for cluster in (False, True):
        layout = KeyLayout("p", cluster=cluster)
        one, two = layout.customer(*first), layout.customer(*second)
        names_one = {one.entitlements, one.metadata, one.index, one.feature_usage("f")}
        names_two = {two.entitlements, two.metadata, two.index, two.feature_usage("f")}
        with_versions_two = names_two | {timestamp_key(k) for k in names_two}
        assert not names_one & with_versions_two


def test_schema_marker_and_scan_pattern() -> None:
    layout = KeyLayout("production")
    assert layout.schema_marker == "production:__schema__"
    assert layout.environment_pattern == "production:*"
    assert KeyLayout("we[ir]d*?").environment_pattern == "we\\[ir\\]d\\*\\?:*"


def test_entitlement_field() -> None:
    assert KeyLayout.entitlement_field("FEATURE", "seats") == "FEATURE:seats"


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
