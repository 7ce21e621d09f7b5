"""Playbooks: the ordered step specs a run executes, chosen by the task's operation from a registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from policy.errors import ControlTowerError
from worker.steps import ApprovalSpec, CheckoutSpec, CollectSpec, ShellSpec, Spec


class NoExecutor(ControlTowerError):
    """This installation has no playbook for the task's operation."""

    code = "NO_EXECUTOR"
    http_status = 422


class InvalidInputs(ControlTowerError):
    """The task's inputs do not fit its playbook."""

    code = "INVALID_INPUTS"
    http_status = 422


@dataclass(frozen=True)
class PlaybookRequest:
    """What a playbook is built from: the task as accepted and what policy requires of it."""

    task: dict[str, Any]
    approval_required: bool

    @property
    def operation(self) -> str:
        return str(self.task.get("operation", ""))

    @property
    def inputs(self) -> dict[str, Any]:
        inputs = self.task.get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    @property
    def constraints(self) -> dict[str, Any]:
        constraints = self.task.get("constraints")
        return constraints if isinstance(constraints, dict) else {}


Builder = Callable[[PlaybookRequest], Sequence[Spec]]


class PlaybookRegistry:
    """Playbook builders keyed by operation; other engineers register theirs (code_change, docs, ...)."""

    def __init__(self) -> None:
        self._builders: dict[str, Builder] = {}

    def register(self, operation: str, builder: Builder) -> None:
        """Use `builder` for tasks of `operation` (replacing any earlier one)."""
        self._builders[operation] = builder

    def operations(self) -> list[str]:
        """Operations with a playbook."""
        return sorted(self._builders)

    def build(self, request: PlaybookRequest) -> list[Spec]:
        """The steps for this task; NoExecutor when its operation has no playbook."""
        builder = self._builders.get(request.operation)
        if builder is None:
            raise NoExecutor(message=f"no executor for operation {request.operation!r} yet")
        steps = list(builder(request))
        ids = [s.id for s in steps]
        if len(set(ids)) != len(ids):
            raise InvalidInputs(message=f"playbook step ids repeat: {ids}")
        return steps


def approval_requested(inputs: dict[str, Any]) -> bool:
    """`inputs.approval: true` asks for an approval step."""
    return inputs.get("approval") is True


def ops_playbook(request: PlaybookRequest) -> list[Spec]:
    """checkout → approval (when asked or required) → shell (`inputs.command`) → collect."""
    command = request.inputs.get("command")
    if not isinstance(command, str) or not command.strip():
        raise InvalidInputs(
            message="an ops task needs inputs.command (a non-empty string)", field="inputs.command"
        )
    budget = float(request.constraints.get("time_budget_seconds") or 900)
    steps: list[Spec] = [CheckoutSpec()]
    if request.approval_required or approval_requested(request.inputs):
        repo = (request.task.get("target") or {}).get("repo")
        steps.append(ApprovalSpec(prompt=f"run `{command[:200]}` in {repo}"))
    steps.append(
        ShellSpec(
            command=command,
            timeout_seconds=budget,
            allow_network=bool(request.constraints.get("allow_network", False)),
        )
    )
    steps.append(CollectSpec())
    return steps


def default_registry() -> PlaybookRegistry:
    """The built-in playbooks: `ops` only; other operations fail with NO_EXECUTOR for now."""
    registry = PlaybookRegistry()
    registry.register("ops", ops_playbook)
    return registry
