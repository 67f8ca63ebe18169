"""Customer scopes named by operators: checked ids, and the JSON-lines list resync reads.

A scope is a customer's global scope or one of its resources. Its ids go raw into Redis
keys and into Edge API URLs, so both checks apply: ``check_edge_id`` (no ``/ ? & #``,
no control character) and ``unsafe_id_problem`` (nothing that names another scope's keys).

The list format (``cache-pipeline resync SCOPES``) is JSON lines, one scope per line::

    {"customerId": "cus-42"}
    {"customerId": "acme:eu", "resourceId": "site-1"}

Blank lines are skipped; a repeated scope is read once. Any other line is refused with
its number before anything is done.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cache_pipeline.errors import InvalidArgument
from cache_pipeline.keys import unsafe_id_problem

_FIELDS = frozenset({"customerId", "resourceId"})
# Characters Stigg's SDK would put raw into the Edge URL's path or query.
_UNSAFE_ID_CHARACTERS = frozenset("/?&#")


def check_edge_id(name: str, value: object) -> str:
    """An id that can go raw into the Edge URL, or ``InvalidArgument``."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string, got {value!r}")
    bad = sorted(set(value) & _UNSAFE_ID_CHARACTERS)
    if bad or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(
            f"{name} {value[:40]!r} cannot be sent raw in an Edge API URL"
            f" (contains {''.join(bad) or 'a control character'})"
        )
    return value


@dataclass(frozen=True, slots=True)
class ScopeRef:
    """One (customer, resource) scope; ``resource_id`` None is the customer's global scope."""

    customer_id: str
    resource_id: str | None = None

    def __str__(self) -> str:
        if self.resource_id is None:
            return repr(self.customer_id)
        return f"{self.customer_id!r} resource {self.resource_id!r}"


def scope_problem(customer_id: object, resource_id: object) -> str | None:
    """Why these ids cannot name a scope (raw in keys and in Edge URLs), or None."""
    for name, value in (("customerId", customer_id), ("resourceId", resource_id)):
        if value is None and name == "resourceId":
            continue
        try:
            check_edge_id(name, value)
        except InvalidArgument as exc:
            return str(exc)
        problem = unsafe_id_problem(str(value))
        if problem is not None:
            return f"{name}: {problem}"
    return None


def scope_from_json(item: Any) -> ScopeRef:
    """``{"customerId": ..., "resourceId"?: ...}`` → a checked scope, or ``InvalidArgument``."""
    if not isinstance(item, dict):
        raise InvalidArgument('expected a JSON object {"customerId": ..., "resourceId"?: ...}')
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0]!r} (only customerId, resourceId)")
    customer, resource = item.get("customerId"), item.get("resourceId")
    problem = scope_problem(customer, resource)
    if problem is not None:
        raise InvalidArgument(problem)
    return ScopeRef(str(customer), None if resource is None else str(resource))


def read_scopes(lines: Iterable[str], source: str = "SCOPES") -> list[ScopeRef]:
    """The scopes of a JSON-lines text, in order, each once.

    Raises ``InvalidArgument`` naming ``source`` and the line of the first bad one.
    """
    found: dict[ScopeRef, None] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            scope = scope_from_json(json.loads(line))
        except (ValueError, InvalidArgument) as exc:
            raise InvalidArgument(f"{source} line {number}: {exc}") from None
        found[scope] = None
    return list(found)


def unique(scopes: Iterable[ScopeRef]) -> list[ScopeRef]:
    """The scopes in order, each once."""
    return list(dict.fromkeys(scopes))
