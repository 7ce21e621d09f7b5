"""Build JSON documents from a JSON Schema: one that satisfies it, or one that violates it."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node if isinstance(node, Mapping) else {}


def generate_valid(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A document satisfying the common subset: objects, arrays, strings, enums, numbers, $ref, anyOf."""
    return _gen(schema, schema, rng, depth=0)


def _gen(schema: Mapping[str, Any], root: Mapping[str, Any], rng: random.Random, depth: int) -> Any:
    if "$ref" in schema:
        return _gen(_resolve_ref(str(schema["$ref"]), root), root, rng, depth)
    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if "enum" in schema:
        return copy.deepcopy(rng.choice(list(schema["enum"])))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _gen(schema[key][0], root, rng, depth)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            for k, v in part.items():
                if k in ("properties",) and k in merged:
                    merged[k] = {**merged[k], **v}
                elif k == "required" and k in merged:
                    merged[k] = [*merged[k], *v]
                else:
                    merged[k] = v
        return _gen(merged, root, rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else ("array" if "items" in schema else "string")
    if kind == "object":
        props = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        # Optional properties only near the top, so recursive schemas terminate.
        names = list(props) if depth < 3 else required
        return {name: _gen(props.get(name, {}), root, rng, depth + 1) for name in names}
    if kind == "array":
        low = int(schema.get("minItems", 1 if depth < 3 else 0))
        high = int(schema.get("maxItems", max(low, 2)))
        count = min(high, max(low, rng.randint(low, max(low, 2))))
        items = schema.get("items") or {}
        return [_gen(items, root, rng, depth + 1) for _ in range(count)]
    if kind == "string":
        low = int(schema.get("minLength", 1))
        high = int(schema.get("maxLength", max(low, 24)))
        value = " ".join(rng.choice(_WORDS) for _ in range(3))
        while len(value) < low:
            value += " " + rng.choice(_WORDS)
        return value[:high]
    if kind in ("integer", "number"):
        low_n = int(schema.get("minimum", 0))
        high_n = int(schema.get("maximum", low_n + 100))
        return rng.randint(low_n, max(low_n, high_n))
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def generate_violation(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A document that the schema rejects (dropping a required field, else a wrong type)."""
    doc = generate_valid(schema, rng)
    validator = Draft202012Validator(dict(schema))
    if isinstance(doc, dict):
        required = list(schema.get("required") or [])
        if required:
            broken = {k: v for k, v in doc.items() if k != required[0]}
            if not validator.is_valid(broken):
                return broken
        for name in list(doc):
            broken = {**doc, name: {"unexpected": [1, 2, 3]} if not isinstance(doc[name], dict) else 42}
            if not validator.is_valid(broken):
                return broken
    for candidate in ({"unexpected": True}, ["not", "an", "object"], "not json at all", 12345):
        if not validator.is_valid(candidate):
            return candidate
    return None
