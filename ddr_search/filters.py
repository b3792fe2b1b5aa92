"""The metadata filter language, one home for every backend and the CLI (docs/filters.md).

A filter is a mapping from a metadata key to a condition; every condition must hold:

- a scalar (string, number, boolean): equals (for a list-valued field: any element equals);
- a list of scalars: any of them;
- `{"gte" / "gt" / "lte" / "lt": bound, ...}`: a range over numbers or ISO-8601 dates (one kind per range);
- `{"ne": scalar}`: does not equal; `{"exists": true / false}`: the key is present or absent.

Keys name `metadata` fields; dots reach into nested objects (`source.site`). The CLI spells the same
conditions `key=value`, `key=a,b` (any of), `key!=value`, `key>N`, `key>=N`, `key<N`, `key<=N`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ddr_search.errors import InputError

Scalar = str | int | float | bool
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_CLI = re.compile(r"^(?P<key>[^=!<>]+?)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*)$")


@dataclass(frozen=True)
class Condition:
    """One checked condition on `metadata.<key>`."""

    key: str
    op: Literal["in", "ne", "range", "exists"]
    values: tuple[Scalar, ...] = ()  # "in": any of these; "ne": the one value
    bounds: tuple[tuple[str, Scalar], ...] = ()  # "range": (operator, bound) pairs
    present: bool = True  # "exists"


Filters = tuple[Condition, ...]


def _scalar(key: str, value: object) -> Scalar:
    if isinstance(value, str | bool | int | float):
        return value
    raise InputError(f"filter {key!r}: expected a string, number or boolean, got {type(value).__name__}")


def _bound_kind(key: str, bound: object) -> str:
    if isinstance(bound, bool) or not isinstance(bound, str | int | float):
        raise InputError(f"filter {key!r}: a range bound must be a number or an ISO-8601 date, got {bound!r}")
    if isinstance(bound, str):
        try:
            datetime.fromisoformat(bound)
        except ValueError:
            raise InputError(f"filter {key!r}: {bound!r} is neither a number nor an ISO-8601 date") from None
        return "date"
    return "number"


def _condition(key: str, spec: object) -> Condition:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InputError(f"filter key {key!r}: use letters, digits, '_' or '-', with '.' between nested keys")
    if isinstance(spec, list | tuple):
        if not spec:
            raise InputError(f"filter {key!r}: an empty list matches nothing; give at least one value")
        return Condition(key, "in", tuple(_scalar(key, v) for v in spec))
    if not isinstance(spec, Mapping):
        return Condition(key, "in", (_scalar(key, spec),))
    unknown = sorted(set(spec) - {*RANGE_OPERATORS, "ne", "exists"})
    if unknown or not spec:
        raise InputError(
            f"filter {key!r}: unknown operator {', '.join(map(repr, unknown)) or '(none)'}; "
            f"use {', '.join(RANGE_OPERATORS)}, ne or exists"
        )
    if "exists" in spec:
        if len(spec) > 1 or not isinstance(spec["exists"], bool):
            raise InputError(f"filter {key!r}: exists takes true or false, alone")
        return Condition(key, "exists", present=spec["exists"])
    if "ne" in spec:
        if len(spec) > 1:
            raise InputError(f"filter {key!r}: ne stands alone")
        return Condition(key, "ne", (_scalar(key, spec["ne"]),))
    bounds = tuple((op, spec[op]) for op in RANGE_OPERATORS if op in spec)
    kinds = {_bound_kind(key, b) for _, b in bounds}
    if len(kinds) > 1:
        raise InputError(f"filter {key!r}: a range compares numbers or dates, not both")
    return Condition(key, "range", bounds=bounds)  # type: ignore[arg-type]


def parse_filters(filters: Mapping[str, object] | None) -> Filters:
    """Check a filter mapping; InputError names the key and what is wrong."""
    if filters is None:
        return ()
    if not isinstance(filters, Mapping):
        raise InputError(f"filters must be a mapping of metadata key to condition, got {type(filters).__name__}")
    return tuple(_condition(key, spec) for key, spec in filters.items())


def _cli_value(text: str) -> Scalar:
    """`2020` -> 2020, `1.5` -> 1.5, `true` -> True, anything else the string itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float) else text


def parse_cli_filters(expressions: Sequence[str], as_json: str | None = None) -> dict[str, object]:
    """`--filter lang=en --filter year>=2020` (and `--filters JSON`) as one filter mapping."""
    merged: dict[str, object] = {}
    if as_json:
        try:
            loaded = json.loads(as_json)
        except ValueError as e:
            raise InputError(f"--filters is not valid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise InputError("--filters must be a JSON object of metadata key to condition")
        merged.update(loaded)
    for expression in expressions:
        match = _CLI.match(expression.strip())
        if match is None:
            raise InputError(f"--filter {expression!r}: write key=value, key!=value, key>=N (or >, <, <=), key=a,b")
        key, op, text = match["key"].strip(), match["op"], match["value"].strip()
        if op == "=":
            parts = [_cli_value(p.strip()) for p in text.split(",")]
            condition: object = parts if len(parts) > 1 else parts[0]
        elif op == "!=":
            condition = {"ne": _cli_value(text)}
        else:
            name = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}[op]
            previous = merged.get(key)
            condition = {**(previous if isinstance(previous, dict) else {}), name: _cli_value(text)}
        merged[key] = condition
    return merged


def query_clauses(conditions: Filters) -> list[dict[str, object]]:
    """The conditions as OpenSearch / Elasticsearch query DSL clauses (for a `bool.filter` or a kNN filter)."""
    clauses: list[dict[str, object]] = []
    for c in conditions:
        field = f"metadata.{c.key}"
        if c.op == "in":
            clauses.append({"terms": {field: list(c.values)}} if len(c.values) > 1 else {"term": {field: c.values[0]}})
        elif c.op == "ne":
            clauses.append({"bool": {"must_not": [{"term": {field: c.values[0]}}]}})
        elif c.op == "exists":
            exists = {"exists": {"field": field}}
            clauses.append(exists if c.present else {"bool": {"must_not": [exists]}})
        else:
            clauses.append({"range": {field: dict(c.bounds)}})
    return clauses
