"""GitHub integration: command grammar, webhook signatures, REST client, repository doctrine."""

from control_tower.github.auth import AppAuth, GitHubAuth, TokenAuth
from control_tower.github.client import (
    PERMISSION_ORDER,
    GitHubClient,
    PullRef,
    permission_at_least,
    status_marker,
)
from control_tower.github.commands import (
    Command,
    CommandError,
    commands_only,
    label_operation,
    parse_commands,
)
from control_tower.github.deliveries import DeliveryDetail, DeliveryPage, DeliverySummary
from control_tower.github.doctrine import DOCTRINE_PATH, DoctrineError, RepoDoctrine, parse_doctrine, tighten
from control_tower.github.errors import GitHubError
from control_tower.github.retry import RetryPolicy
from control_tower.github.signature import sign, verify_signature

__all__ = [
    "DOCTRINE_PATH",
    "PERMISSION_ORDER",
    "AppAuth",
    "Command",
    "CommandError",
    "DeliveryDetail",
    "DeliveryPage",
    "DeliverySummary",
    "DoctrineError",
    "GitHubAuth",
    "GitHubClient",
    "GitHubError",
    "PullRef",
    "RepoDoctrine",
    "RetryPolicy",
    "TokenAuth",
    "commands_only",
    "label_operation",
    "parse_commands",
    "parse_doctrine",
    "permission_at_least",
    "sign",
    "status_marker",
    "tighten",
    "verify_signature",
]
