"""Typed specs of the AI playbook steps (plan, agent, verify, diff_check, report); data only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.ai.toolbox import ALL_TOOLS, READ_ONLY_TOOLS

# Paths a `docs` task may change: docs and Markdown only.
DOCS_SUFFIXES: tuple[str, ...] = (".md", ".mdx", ".rst", ".txt")
DOCS_DIRS: tuple[str, ...] = ("docs/",)


@dataclass(frozen=True)
class PlanSpec:
    """`ai_generate` with PLAN_SCHEMA: steps, files and risks; kept for the PR description."""

    id: str = "plan"
    template: str = "plan.code_change@1"
    max_retries: int = 2
    timeout_seconds: float = 120.0
    budget_seconds: float = 900.0
    type: Literal["plan"] = "plan"


@dataclass(frozen=True)
class AgentSpec:
    """The tool-use agent loop in the checkout, its bash tool inside the sandbox."""

    id: str = "agent"
    tools: tuple[str, ...] = ALL_TOOLS
    system_template: str = "agent.system@1"
    # For analysis: the first user message is rendered from this template instead of the bare objective.
    objective_template: str | None = None
    max_turns: int = 30
    max_tokens: int = 500_000
    max_cost_usd: float | None = None
    per_call_timeout_seconds: float = 300.0
    # The whole run's time budget; the step ends when what remains of it is spent.
    budget_seconds: float = 900.0
    # Ceiling for one bash command (further bounded by what remains of the budget).
    command_timeout_seconds: float = 600.0
    allow_network: bool = False
    allow_workflow_changes: bool = False
    tool_output_limit: int = 16_000
    type: Literal["agent"] = "agent"

    @property
    def read_only(self) -> bool:
        """True when the agent cannot change the workspace (analysis)."""
        return set(self.tools) <= set(READ_ONLY_TOOLS)


@dataclass(frozen=True)
class VerifySpec:
    """The doctrine's verify command in the sandbox; None means "read it from the doctrine at run time"."""

    command: str | None = None
    budget_seconds: float = 900.0
    allow_network: bool = False
    id: str = "verify"
    type: Literal["verify"] = "verify"


@dataclass(frozen=True)
class DiffCheckSpec:
    """The changed paths against policy: docs-only, workflows, symlinks out, size limits."""

    docs_only: bool = False
    allow_workflow_changes: bool = False
    max_files: int = 100
    max_diff_bytes: int = 2_000_000
    id: str = "diff_check"
    type: Literal["diff_check"] = "diff_check"


@dataclass(frozen=True)
class ReportSpec:
    """The analysis agent's answer as report.md and a `report` Artifact."""

    agent_step: str = "agent"
    id: str = "report"
    type: Literal["report"] = "report"


AISpec = PlanSpec | AgentSpec | VerifySpec | DiffCheckSpec | ReportSpec
