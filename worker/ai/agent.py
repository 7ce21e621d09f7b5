"""The agent loop: model turns and tool calls until finish or a limit, all accounted for."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker.ai.providers import AICode, AIError, AIProvider, AIRequest, ContentBlock, EventSink, Message
from worker.ai.telemetry import call_model
from worker.ai.toolbox import ALL_TOOLS, REFUSAL_CODES, Toolbox, truncate_for_model
from worker.ai.tools import BashRunner, Workspace


class StopCode(StrEnum):
    """Why the loop ended; the limit codes are stable and surface as step error codes."""

    FINISHED = "FINISHED"
    END_TURN = "END_TURN"
    AGENT_TURN_LIMIT = "AGENT_TURN_LIMIT"
    AGENT_TOKEN_LIMIT = "AGENT_TOKEN_LIMIT"  # noqa: S105 - a stop code, not a credential
    TIME_BUDGET_EXCEEDED = "TIME_BUDGET_EXCEEDED"
    COST_LIMIT = "COST_LIMIT"


@dataclass(frozen=True)
class AgentLimits:
    """Ceilings for one agent step; `deadline` is a time.monotonic() value."""

    max_turns: int = 30
    max_tokens: int = 500_000
    deadline: float | None = None
    max_cost_usd: float | None = None
    per_call_timeout_s: float = 300.0
    max_tokens_per_call: int = 8192


@dataclass
class ToolCallRecord:
    """One tool call as the run saw it."""

    tool_use_id: str
    name: str
    input: Any
    is_error: bool
    code: str | None
    duration_ms: float
    exit_code: int | None = None


@dataclass
class AgentResult:
    """The outcome of one agent step."""

    summary: str
    stop_code: StopCode
    turns: int
    tokens_prompt: int
    tokens_output: int
    cost_usd: float
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the model ended the task itself (finish or a final answer)."""
        return self.stop_code in (StopCode.FINISHED, StopCode.END_TURN)

    @property
    def tokens_total(self) -> int:
        """Prompt plus output tokens over all turns."""
        return self.tokens_prompt + self.tokens_output


def _ignore(_kind: str, _data: dict[str, Any]) -> None:
    return


class _Run:
    """State of one loop; kept small so run_agent reads top to bottom."""

    def __init__(self, toolbox: Toolbox, emit: EventSink, output_limit: int) -> None:
        self.toolbox = toolbox
        self.emit = emit
        self.output_limit = output_limit
        self.turns = 0
        self.tokens_prompt = 0
        self.tokens_output = 0
        self.cost = 0.0
        self.calls: list[ToolCallRecord] = []
        self.messages: list[Message] = []

    def result(self, code: StopCode, summary: str = "") -> AgentResult:
        self.emit(
            "agent.stop",
            {
                "stop_code": code.value,
                "turns": self.turns,
                "tokens_prompt": self.tokens_prompt,
                "tokens_output": self.tokens_output,
                "cost_usd": round(self.cost, 8),
            },
        )
        return AgentResult(
            summary,
            code,
            self.turns,
            self.tokens_prompt,
            self.tokens_output,
            self.cost,
            self.calls,
            self.messages,
        )

    def tool(self, block: ContentBlock) -> ContentBlock:
        """Run one tool_use block; the tool_result for the model (truncated) and full events."""
        tool_id, name, tool_input = str(block.get("id")), str(block.get("name")), block.get("input")
        self.emit(
            "tool.call", {"tool_use_id": tool_id, "name": name, "input": tool_input, "turn": self.turns}
        )
        start = time.monotonic()
        outcome = self.toolbox.run(name, tool_input)
        duration_ms = (time.monotonic() - start) * 1000
        text, truncated = truncate_for_model(outcome.output or "(no output)", self.output_limit)
        self.emit(
            "tool.result",
            {
                "tool_use_id": tool_id,
                "name": name,
                "input": tool_input,
                "duration_ms": round(duration_ms, 3),
                "exit_code": outcome.exit_code,
                "is_error": outcome.is_error,
                "code": outcome.code,
                "refused": outcome.code in REFUSAL_CODES,
                "output": outcome.output,
                "output_chars": len(outcome.output),
                "truncated_for_model": truncated,
            },
        )
        self.calls.append(
            ToolCallRecord(
                tool_id, name, tool_input, outcome.is_error, outcome.code, duration_ms, outcome.exit_code
            )
        )
        return {"type": "tool_result", "tool_use_id": tool_id, "content": text, "is_error": outcome.is_error}


def _over_budget(run: _Run, limits: AgentLimits) -> StopCode | None:
    if run.tokens_prompt + run.tokens_output >= limits.max_tokens:
        return StopCode.AGENT_TOKEN_LIMIT
    if limits.max_cost_usd is not None and run.cost >= limits.max_cost_usd:
        return StopCode.COST_LIMIT
    return None


def run_agent(
    provider: AIProvider,
    *,
    workspace: Path,
    system_prompt: str,
    objective: str,
    limits: AgentLimits,
    tools_enabled: Iterable[str] = ALL_TOOLS,
    bash_runner: BashRunner | None = None,
    on_event: EventSink | None = None,
    model: str | None = None,
    template_id: str = "agent.system",
    template_version: int = 1,
    allow_workflow_changes: bool = False,
    tool_output_limit: int = 16_000,
) -> AgentResult:
    """Drive the model through tool calls until it finishes or a limit stops it.

    Limits end the loop with a StopCode; a provider failure other than the deadline raises AIError.
    """
    emit = on_event or _ignore
    toolbox = Toolbox(
        Workspace(workspace, allow_workflow_changes=allow_workflow_changes), tools_enabled, bash_runner
    )
    run = _Run(toolbox, emit, tool_output_limit)
    run.messages.append({"role": "user", "content": objective})
    chosen_model = model or provider.default_model
    emit(
        "agent.start",
        {
            "model": chosen_model,
            "tools": list(toolbox.names),
            "template_id": template_id,
            "template_version": template_version,
            "max_turns": limits.max_turns,
            "max_tokens": limits.max_tokens,
            "max_cost_usd": limits.max_cost_usd,
            # Kept so a replay can rebuild the same conversation from the trace alone.
            "system_prompt": system_prompt,
            "objective": objective,
        },
    )
    while True:
        if limits.deadline is not None and time.monotonic() >= limits.deadline:
            return run.result(StopCode.TIME_BUDGET_EXCEEDED)
        if run.turns >= limits.max_turns:
            return run.result(StopCode.AGENT_TURN_LIMIT)
        over = _over_budget(run, limits)
        if over is not None:
            return run.result(over)
        timeout = limits.per_call_timeout_s
        if limits.deadline is not None:
            timeout = min(timeout, limits.deadline - time.monotonic())
        request = AIRequest(
            model=chosen_model,
            system=system_prompt,
            messages=list(run.messages),
            tools=toolbox.specs,
            max_tokens=limits.max_tokens_per_call,
            timeout_s=timeout,
            template_id=template_id,
            template_version=template_version,
        )
        try:
            response, cost = call_model(provider, request, emit, turn=run.turns + 1)
        except AIError as exc:
            if (
                exc.ai_code is AICode.AI_TIMEOUT
                and limits.deadline is not None
                and timeout < limits.per_call_timeout_s
            ):
                return run.result(StopCode.TIME_BUDGET_EXCEEDED)
            raise
        run.turns += 1
        run.tokens_prompt += response.tokens_prompt
        run.tokens_output += response.tokens_output
        run.cost += cost
        run.messages.append(
            {"role": "assistant", "content": response.content or [{"type": "text", "text": "."}]}
        )
        uses = response.tool_uses
        if not uses:
            return run.result(StopCode.END_TURN, response.text)
        # A turn that spent the budget does not get its tools run, unless it is the one that finishes.
        over = _over_budget(run, limits)
        if over is not None and not any(u.get("name") == "finish" for u in uses):
            return run.result(over)
        results: list[ContentBlock] = []
        for use in uses:
            result = run.tool(use)
            if use.get("name") == "finish" and not result["is_error"]:
                return run.result(StopCode.FINISHED, str((use.get("input") or {}).get("summary", "")))
            results.append(result)
        run.messages.append({"role": "user", "content": results})
