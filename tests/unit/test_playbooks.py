"""Playbooks chosen by operation: the ops steps, approval when asked or required, NO_EXECUTOR otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from policy.errors import ControlTowerError
from worker.playbooks import PlaybookRegistry, PlaybookRequest, default_registry
from worker.steps import ApprovalSpec, CheckoutSpec, ShellSpec, Spec


def task(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operation": "ops",
        "target": {"repo": "acme/app", "ref": "main"},
        "inputs": {"command": "make lint"},
        "constraints": {"time_budget_seconds": 120, "allow_network": False},
    }
    body.update(overrides)
    return body


def test_ops_playbook_steps_and_budget() -> None:
    steps = default_registry().build(PlaybookRequest(task(), approval_required=False))
    assert [s.type for s in steps] == ["checkout", "shell", "collect"]
    shell = steps[1]
    assert isinstance(shell, ShellSpec)
    assert (shell.command, shell.timeout_seconds, shell.allow_network) == ("make lint", 120.0, False)


@pytest.mark.parametrize(
    ("inputs", "required"), [({"command": "x", "approval": True}, False), ({"command": "x"}, True)]
)
def test_approval_comes_after_checkout(inputs: dict[str, Any], required: bool) -> None:
    steps = default_registry().build(PlaybookRequest(task(inputs=inputs), approval_required=required))
    assert [s.id for s in steps] == ["checkout", "approval", "shell", "collect"]
    assert isinstance(steps[1], ApprovalSpec)


def test_approval_must_be_literally_true() -> None:
    steps = default_registry().build(PlaybookRequest(task(inputs={"command": "x", "approval": "yes"}), False))
    assert "approval" not in [s.id for s in steps]


@pytest.mark.parametrize("operation", ["code_change", "docs", "analysis", "unknown"])
def test_other_operations_have_no_executor(operation: str) -> None:
    with pytest.raises(ControlTowerError) as err:
        default_registry().build(PlaybookRequest(task(operation=operation), approval_required=False))
    assert err.value.code == "NO_EXECUTOR"


@pytest.mark.parametrize("inputs", [{}, {"command": ""}, {"command": "  "}, {"command": ["ls"]}])
def test_ops_needs_a_command(inputs: dict[str, Any]) -> None:
    with pytest.raises(ControlTowerError) as err:
        default_registry().build(PlaybookRequest(task(inputs=inputs), approval_required=False))
    assert (err.value.code, err.value.field) == ("INVALID_INPUTS", "inputs.command")


def test_registry_accepts_new_operations_and_refuses_repeated_ids() -> None:
    registry = PlaybookRegistry()
    registry.register("docs", lambda request: [CheckoutSpec()])
    assert registry.operations() == ["docs"]
    assert [s.id for s in registry.build(PlaybookRequest(task(operation="docs"), False))] == ["checkout"]

    def twice(request: PlaybookRequest) -> list[Spec]:
        return [CheckoutSpec(), CheckoutSpec()]

    registry.register("ops", twice)
    with pytest.raises(ControlTowerError):
        registry.build(PlaybookRequest(task(), False))
