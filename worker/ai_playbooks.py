"""The AI playbooks (`code_change`, `docs`, `analysis`) and their registration with the executor."""

from __future__ import annotations

from typing import Any

from worker.ai import READ_ONLY_TOOLS
from worker.ai_specs import AgentSpec, DiffCheckSpec, PlanSpec, ReportSpec, VerifySpec
from worker.ai_steps import AI_RUNNERS
from worker.playbooks import InvalidInputs, PlaybookRegistry, PlaybookRequest, approval_requested
from worker.steps import ApprovalSpec, CheckoutSpec, CollectSpec, Runner, Spec, builtin_runners

DEFAULT_BUDGET_SECONDS = 900.0


def _number(inputs: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = inputs.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidInputs(message=f"inputs.{name} must be a positive number", field=f"inputs.{name}")
    return kind(value)


def _limits(request: PlaybookRequest) -> dict[str, Any]:
    """Agent limits a task may set in its inputs (only ever below the defaults' purpose: tighter)."""
    limits: dict[str, Any] = {}
    for name, kind in (("max_turns", int), ("max_tokens", int), ("max_cost_usd", float)):
        value = _number(request.inputs, name, kind)
        if value is not None:
            limits[name] = value
    return limits


def _common(request: PlaybookRequest) -> tuple[float, bool, list[Spec]]:
    if not str(request.task.get("objective") or "").strip():
        raise InvalidInputs(message="an AI task needs an objective", field="objective")
    budget = float(request.constraints.get("time_budget_seconds") or DEFAULT_BUDGET_SECONDS)
    network = bool(request.constraints.get("allow_network", False))
    steps: list[Spec] = [CheckoutSpec()]
    if request.approval_required or approval_requested(request.inputs):
        repo = (request.task.get("target") or {}).get("repo")
        objective = str(request.task.get("objective"))[:200]
        steps.append(ApprovalSpec(prompt=f"{request.operation} in {repo}: {objective}"))
    return budget, network, steps


def code_change_playbook(request: PlaybookRequest) -> list[Spec]:
    """checkout → approval (if required) → plan → agent → verify → diff_check → collect."""
    budget, network, steps = _common(request)
    steps += [
        PlanSpec(budget_seconds=budget, timeout_seconds=min(120.0, budget)),
        AgentSpec(budget_seconds=budget, allow_network=network, **_limits(request)),
        VerifySpec(budget_seconds=budget, allow_network=network),
        DiffCheckSpec(),
        CollectSpec(),
    ]
    return steps


def docs_playbook(request: PlaybookRequest) -> list[Spec]:
    """checkout → approval (if required) → agent → verify → diff_check (docs and Markdown only) → collect."""
    budget, network, steps = _common(request)
    steps += [
        AgentSpec(budget_seconds=budget, allow_network=network, **_limits(request)),
        VerifySpec(budget_seconds=budget, allow_network=network),
        DiffCheckSpec(docs_only=True),
        CollectSpec(),
    ]
    return steps


def analysis_playbook(request: PlaybookRequest) -> list[Spec]:
    """checkout → approval (if required) → agent with read-only tools → report.md."""
    budget, _network, steps = _common(request)
    steps += [
        AgentSpec(
            budget_seconds=budget,
            tools=READ_ONLY_TOOLS,
            objective_template="analysis.report@1",
            **_limits(request),
        ),
        ReportSpec(),
    ]
    return steps


PLAYBOOKS = {"code_change": code_change_playbook, "docs": docs_playbook, "analysis": analysis_playbook}


def register_ai_playbooks(registry: PlaybookRegistry) -> PlaybookRegistry:
    """Add the AI playbooks to `registry` (returned for chaining)."""
    for operation, builder in PLAYBOOKS.items():
        registry.register(operation, builder)
    return registry


def ai_runners(base: dict[str, Runner] | None = None) -> dict[str, Runner]:
    """The built-in step runners (or `base`) plus plan, agent, verify, diff_check and report."""
    return {**(builtin_runners() if base is None else base), **AI_RUNNERS}
