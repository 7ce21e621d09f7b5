"""The policy gate: a pure function from (task, config) to a normalised task or a PolicyError."""

from __future__ import annotations

from policy.config import PolicyConfig
from policy.contract import OPERATIONS, TaskCreateV1
from policy.errors import PolicyCode, PolicyError


def repo_allowed(repo: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `owner/name` matches an allow-list entry.

    `*` allows all; `owner` or `owner/` allows the owner's repositories; `owner/name` allows that
    repository only; a trailing `*` is a plain string prefix (`acme/svc-*`). Empty denies all.
    """
    repo = repo.lower()
    for raw in prefixes:
        prefix = raw.strip().lower()
        if not prefix:
            continue
        if prefix == "*":
            return True
        if prefix.endswith("*"):
            if repo.startswith(prefix[:-1]):
                return True
        elif "/" not in prefix or prefix.endswith("/"):
            if repo.startswith(prefix.rstrip("/") + "/"):
                return True
        elif repo == prefix:
            return True
    return False


def evaluate(task: TaskCreateV1, config: PolicyConfig) -> TaskCreateV1:
    """Return the task as policy normalises it, or raise PolicyError with the first rule it breaks."""
    if task.operation not in OPERATIONS:
        raise PolicyError(
            PolicyCode.INVALID_OPERATION,
            "operation",
            f"operation {task.operation!r} is not one of {', '.join(OPERATIONS)}",
        )
    if task.operation not in config.allowed_operations:
        raise PolicyError(
            PolicyCode.OPERATION_NOT_ALLOWED_BY_DOCTRINE,
            "operation",
            f"operation {task.operation!r} is not allowed for this repository",
        )
    if not repo_allowed(task.target.repo, config.allowed_repo_prefixes):
        raise PolicyError(
            PolicyCode.REPO_NOT_ALLOWED,
            "target.repo",
            f"repository {task.target.repo!r} is not in the allowed prefixes",
        )
    budget = task.constraints.time_budget_seconds
    if budget < config.min_time_budget_seconds:
        raise PolicyError(
            PolicyCode.TIME_BUDGET_TOO_LOW,
            "constraints.time_budget_seconds",
            f"time budget {budget}s is below the minimum of {config.min_time_budget_seconds}s",
        )
    if budget > config.max_time_budget_seconds:
        raise PolicyError(
            PolicyCode.TIME_BUDGET_TOO_HIGH,
            "constraints.time_budget_seconds",
            f"time budget {budget}s is above the maximum of {config.max_time_budget_seconds}s",
        )
    if task.constraints.allow_network and not config.allow_network:
        raise PolicyError(
            PolicyCode.NETWORK_ACCESS_DENIED,
            "constraints.allow_network",
            "network access is not allowed by policy",
        )
    if task.constraints.allow_secrets and not config.allow_secrets:
        raise PolicyError(
            PolicyCode.SECRETS_ACCESS_DENIED,
            "constraints.allow_secrets",
            "secrets access is not allowed by policy",
        )
    return task
