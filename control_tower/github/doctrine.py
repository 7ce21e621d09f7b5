"""A repository's `.github/control-tower.yml` (its doctrine): parsed, hashed, only ever narrowing policy."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policy.config import PolicyConfig
from policy.contract import OPERATIONS
from policy.errors import ControlTowerError

DOCTRINE_PATH = ".github/control-tower.yml"
WORKFLOWS_DIR = ".github/workflows/"
MAX_DOCTRINE_BYTES = 64 * 1024


class DoctrineError(ControlTowerError):
    """The repository's control-tower.yml cannot be used."""

    code = "DOCTRINE_INVALID"
    http_status = 422


class RepoDoctrine(BaseModel):
    """What a repository allows Control Tower to do in it; None means "no narrowing" for that field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    operations: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None
    time_budget_seconds: int | None = Field(default=None, ge=1, le=86_400)
    approval_required: bool | frozenset[str] = False
    verify: str | None = Field(default=None, min_length=1, max_length=2_000)
    allow_workflow_changes: bool = False
    playbook: str | None = Field(default=None, min_length=1, max_length=200)
    content_hash: str = Field(default="", description="sha256:<hex> of the raw file bytes")

    @field_validator("operations", "approval_required", mode="before")
    @classmethod
    def _known_operations(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset):
            unknown = sorted(str(op) for op in value if op not in OPERATIONS)
            if unknown:
                raise ValueError(f"unknown operations {unknown}; known: {list(OPERATIONS)}")
            return frozenset(value)
        return value

    @field_validator("paths", mode="before")
    @classmethod
    def _path_globs(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for glob in value:
                if not isinstance(glob, str) or not glob.strip() or glob.startswith("/") or ".." in glob:
                    raise ValueError(f"{glob!r} is not a repository-relative glob")
            return tuple(value)
        return value

    def approval_operations(self) -> frozenset[str]:
        """The operations this doctrine requires approval for."""
        if self.approval_required is True:
            return frozenset(OPERATIONS)
        if self.approval_required is False:
            return frozenset()
        return self.approval_required

    def path_allowed(self, path: str) -> bool:
        """Whether a changed file may be touched: inside `paths` and not a workflow unless allowed."""
        clean = path.removeprefix("./")
        if clean.startswith("/") or ".." in clean.split("/"):
            return False
        if clean.startswith(WORKFLOWS_DIR) and not self.allow_workflow_changes:
            return False
        if self.paths is None:
            return True
        return any(_glob_regex(glob).fullmatch(clean) for glob in self.paths)

    def disallowed_paths(self, paths: Iterable[str]) -> list[str]:
        """The changed paths this doctrine refuses, sorted."""
        return sorted({p for p in paths if not self.path_allowed(p)})


def parse_doctrine(raw: bytes) -> RepoDoctrine:
    """Parse the raw bytes of `.github/control-tower.yml`; an empty file narrows nothing."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if len(raw) > MAX_DOCTRINE_BYTES:
        raise DoctrineError(message=f"{DOCTRINE_PATH} is larger than {MAX_DOCTRINE_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DoctrineError(message=f"{DOCTRINE_PATH} is not valid YAML: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise DoctrineError(message=f"{DOCTRINE_PATH} must be a mapping at the top level")
    if "content_hash" in doc:
        raise DoctrineError(message="content_hash is computed, not configured", field="content_hash")
    try:
        return RepoDoctrine.model_validate({**doc, "content_hash": digest})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise DoctrineError(message=f"{DOCTRINE_PATH}: {first['msg']}", field=field) from exc


def tighten(policy_limits: PolicyConfig, doctrine: RepoDoctrine | None) -> PolicyConfig:
    """The operator's policy narrowed: operations intersected, time budget min-ed, approval OR-ed."""
    if doctrine is None:
        return policy_limits
    narrowed = policy_limits.tightened(
        operations=doctrine.operations,
        max_time_budget_seconds=doctrine.time_budget_seconds,
        approval_required_operations=doctrine.approval_operations(),
    )
    # Rebuilt rather than returned as is: model_copy would carry over the cached version_hash of the original.
    return PolicyConfig.model_validate(narrowed.model_dump())


@lru_cache(maxsize=256)
def _glob_regex(glob: str) -> re.Pattern[str]:
    """`**` spans directories, `*` and `?` stay in one segment; a trailing `/` means all below."""
    if glob.endswith("/"):
        glob += "**"
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))
