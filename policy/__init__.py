"""The pure policy gate: contract models, configuration and evaluate(); no I/O, clock or globals."""

from policy.config import PolicyConfig
from policy.contract import OPERATIONS, TaskCreateV1
from policy.errors import ControlTowerError, PolicyCode, PolicyError
from policy.evaluate import evaluate, repo_allowed

__all__ = [
    "OPERATIONS",
    "ControlTowerError",
    "PolicyCode",
    "PolicyConfig",
    "PolicyError",
    "TaskCreateV1",
    "evaluate",
    "repo_allowed",
]
