"""The V1 task contract: what a client may ask Control Tower to do."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REPO_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99})/[A-Za-z0-9._-]{1,100}$"
OPERATIONS = ("code_change", "docs", "analysis", "ops")


def _no_nul(value: str | None) -> str | None:
    """PostgreSQL's text and jsonb cannot hold U+0000; refused on every database alike."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character (U+0000)")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestedBy(_Frozen):
    """Who asked: a person, an agent or the system itself."""

    kind: Literal["human", "agent", "system"]
    id: str = Field(min_length=1, max_length=200)
    label: str | None = Field(default=None, max_length=200)

    _text = field_validator("id", "label")(_no_nul)


class Target(_Frozen):
    """Where the work happens."""

    repo: str = Field(pattern=REPO_PATTERN, description='"owner/name"')
    ref: str = Field(default="main", min_length=1, max_length=255)
    path: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="before")
    @classmethod
    def _legacy_repository(cls, data: Any) -> Any:
        if isinstance(data, dict) and "repository" in data:
            data = dict(data)
            legacy = data.pop("repository")
            if "repo" in data and data["repo"] != legacy:
                raise ValueError("target.repo and legacy target.repository disagree")
            data["repo"] = legacy
        return data

    _text = field_validator("ref", "path")(_no_nul)

    @field_validator("repo")
    @classmethod
    def _lower_repo(cls, value: str) -> str:
        # GitHub slugs are case-insensitive; one spelling keeps allow-lists and lookups exact.
        return value.lower()


class Constraints(_Frozen):
    """The operating envelope the client asks for; policy decides whether it is allowed."""

    time_budget_seconds: int = Field(default=900, ge=-(2**31), le=2**31)
    allow_network: bool = False
    allow_secrets: bool = False


_LEGACY_TOP = {"type": "operation", "payload": "inputs"}
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


def _unstorable(value: Any, path: str = "") -> str | None:
    """Where free-form JSON holds what the databases cannot store: NaN or an infinity (which Python's
    JSON parser accepts, though JSON has neither), an integer past 64 bits, or a NUL character in a
    string or key (PostgreSQL's text and jsonb refuse U+0000)."""
    if isinstance(value, str):
        return f"{path or 'value'} contains a NUL character (U+0000)" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'value'} is {value}"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if _INT_MIN <= value <= _INT_MAX else f"{path or 'value'} is an integer past 64 bits"
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return f"a key of {path or 'the object'} contains a NUL character (U+0000)"
            found = _unstorable(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = _unstorable(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


def canonical_reference(data: Any) -> str:
    """The canonical JSON the request hash has always been computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


class TaskCreateV1(_Frozen):
    """A request for work, version 1 of the contract."""

    version: Literal["v1"] = "v1"
    requested_by: RequestedBy
    objective: str = Field(min_length=1, max_length=20_000)
    operation: str = Field(min_length=1, max_length=64, description="code_change | docs | analysis | ops")
    target: Target
    constraints: Constraints = Field(default_factory=Constraints)
    inputs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=100, ge=0, le=1000, description="lower runs first")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _legacy_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for legacy, canonical in _LEGACY_TOP.items():
            if legacy in data:
                value = data.pop(legacy)
                if canonical in data and data[canonical] != value:
                    raise ValueError(f"{canonical} and legacy {legacy} disagree")
                data[canonical] = value
        return data

    _text = field_validator("operation", "idempotency_key")(_no_nul)

    @field_validator("inputs", "metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = _unstorable(value)
        if bad is not None:
            raise ValueError(
                f"{bad} (numbers must be finite, integers within 64 bits, text without NUL characters)"
            )
        return value

    @field_validator("objective")
    @classmethod
    def _strip_objective(cls, value: str) -> str:
        _no_nul(value)
        value = value.strip()
        if not value:
            raise ValueError("objective must not be blank")
        return value

    def canonical_json(self) -> str:
        """Stable JSON of the normalised task (sorted keys, no whitespace, ASCII with \\u escapes).

        The reference is `json.dumps(..., sort_keys=True, separators=(",", ":"))`, whose text the
        stored request hashes were made from. orjson with sorted keys writes the same text, ~5x
        faster, for data without floats (repr and orjson write some differently) whose text is ASCII
        without DEL (which json.dumps escapes) (a property test checks it); anything else, or what
        orjson refuses (an integer past 64 bits), takes the reference path."""
        data = self.model_dump(mode="json")
        if not (_has_float(data["inputs"]) or _has_float(data["metadata"])):
            try:
                text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            except TypeError:
                pass
            else:
                if text.isascii() and b"\x7f" not in text:
                    return text.decode()
        return canonical_reference(data)

    def request_hash(self) -> str:
        """Fingerprint used to tell a replay of a request from a different request with the same key."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
