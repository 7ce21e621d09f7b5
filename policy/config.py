"""The policy configuration: frozen, hashable, versioned by content."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field

from policy.contract import OPERATIONS


class PolicyConfig(BaseModel):
    """What the operator allows; a repository's doctrine may only narrow it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_repo_prefixes: tuple[str, ...] = ()
    allowed_operations: frozenset[str] = frozenset(OPERATIONS)
    allow_network: bool = False
    allow_secrets: bool = False
    min_time_budget_seconds: int = Field(default=30, ge=1)
    max_time_budget_seconds: int = Field(default=86_400, ge=1)
    approval_required_operations: frozenset[str] = frozenset()

    @cached_property
    def version_hash(self) -> str:
        """sha256 of the canonical JSON of this configuration, stored with every decision."""
        doc = self.model_dump(mode="json")
        doc["allowed_operations"] = sorted(self.allowed_operations)
        doc["approval_required_operations"] = sorted(self.approval_required_operations)
        doc["allowed_repo_prefixes"] = list(self.allowed_repo_prefixes)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()

    def tightened(
        self,
        *,
        operations: frozenset[str] | None = None,
        max_time_budget_seconds: int | None = None,
        approval_required_operations: frozenset[str] = frozenset(),
    ) -> PolicyConfig:
        """A copy narrowed by a repository's doctrine; nothing here can widen what is allowed."""
        ops = self.allowed_operations if operations is None else self.allowed_operations & operations
        budget = self.max_time_budget_seconds
        if max_time_budget_seconds is not None:
            budget = min(budget, max_time_budget_seconds)
        # Validated anew rather than model_copy(): a copy would carry the cached version_hash along.
        return PolicyConfig.model_validate(
            {
                **self.model_dump(),
                "allowed_operations": ops,
                "max_time_budget_seconds": budget,
                "approval_required_operations": self.approval_required_operations
                | approval_required_operations,
            }
        )
