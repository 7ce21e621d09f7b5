"""What the AI steps share: the provider from settings, run totals, the sandboxed bash tool, the doctrine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from control_tower.settings import Settings
from policy.errors import ControlTowerError
from worker.ai import AIProvider, AIRequest, AIResponse, ToolRunResult, build_provider
from worker.ai.tools import BashRunner
from worker.sandbox import Sandbox, SandboxLimits

# The agent's commands see nothing of the worker's environment: no API key, no token, no proxy settings.
AGENT_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",  # noqa: S108 - the sandbox's own fresh tmpfs
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    # No bytecode files in the checkout: they would show up in the diff.
    "PYTHONDONTWRITEBYTECODE": "1",
}
# A command is not started with less time than this left in the budget.
MIN_COMMAND_SECONDS = 0.5


class RunCancelled(ControlTowerError):
    """The run was cancelled while a model call was about to start."""

    code = "CANCELLED"
    http_status = 409


def provider_from_settings(settings: Settings) -> AIProvider:
    """AI_PROVIDER (auto|anthropic|mock) with ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, AI_MODEL, MOCK_AI_*."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key is not None else None
    return build_provider(
        provider=settings.ai_provider,
        api_key=key,
        base_url=settings.anthropic_base_url,
        model=settings.ai_model,
        mock_seed=settings.mock_ai_seed,
        mock_mode=settings.mock_ai_mode,
    )


def close_provider(provider: AIProvider) -> None:
    """Close the provider's HTTP client when it has one."""
    close = getattr(provider, "close", None)
    if callable(close):
        with suppress(Exception):
            close()


class CancellableProvider:
    """Refuses to start a model call once the run is cancelled (the loop then ends promptly)."""

    def __init__(self, inner: AIProvider, cancelled: threading.Event) -> None:
        self.inner = inner
        self.cancelled = cancelled
        self.name = inner.name
        self.default_model = inner.default_model

    def complete(self, request: AIRequest) -> AIResponse:
        """The inner provider's answer, unless the run was cancelled."""
        if self.cancelled.is_set():
            raise RunCancelled(message="the run was cancelled")
        return self.inner.complete(request)


@dataclass
class AITotals:
    """Token, cost, latency and retry totals over every model call of a run."""

    calls: int = 0
    errors: int = 0
    retries: int = 0
    turns: int = 0
    tokens_prompt: int = 0
    tokens_output: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    def add(self, kind: str, data: Mapping[str, Any]) -> None:
        """Account for one telemetry event."""
        if kind == "ai.response":
            self.calls += 1
            self.tokens_prompt += int(data.get("tokens_prompt") or 0)
            self.tokens_output += int(data.get("tokens_output") or 0)
            self.cost_usd += float(data.get("cost_usd") or 0.0)
            self.latency_ms += float(data.get("latency_ms") or 0.0)
            self.retries += int(data.get("retry_count") or 0)
        elif kind == "ai.error":
            self.errors += 1
            self.retries += int(data.get("retry_count") or 0)
        elif kind == "agent.stop":
            self.turns += int(data.get("turns") or 0)

    def merge(self, other: AITotals) -> None:
        """Add another set of totals into this one."""
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready totals, with tokens_total."""
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 8)
        data["latency_ms"] = round(self.latency_ms, 3)
        data["tokens_total"] = self.tokens_prompt + self.tokens_output
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AITotals:
        """Totals from as_dict() output (unknown keys ignored)."""
        totals = cls()
        for key in asdict(totals):
            if data and key in data:
                setattr(totals, key, type(getattr(totals, key))(data[key]))
        return totals


def telemetry_sink(
    emit: Callable[[str, dict[str, Any]], object], totals: AITotals
) -> Callable[[str, dict[str, Any]], None]:
    """An EventSink that writes each event and keeps the totals."""

    def sink(kind: str, data: dict[str, Any]) -> None:
        totals.add(kind, data)
        emit(kind, data)

    return sink


def sandbox_bash_runner(
    *,
    sandbox: Sandbox,
    workspace: Path,
    cancel: threading.Event,
    deadline: float,
    allow_network: bool,
    max_seconds: float,
) -> BashRunner:
    """The agent's `bash` tool: `sh -c` in the sandbox, bounded by what remains of the time budget."""

    def run(command: str) -> ToolRunResult:
        remaining = deadline - time.monotonic()
        if cancel.is_set():
            return ToolRunResult(130, "", "CANCELLED: the run was cancelled", timed_out=False)
        if remaining < MIN_COMMAND_SECONDS:
            note = "TIME_BUDGET_EXCEEDED: no time left for this command"
            return ToolRunResult(124, "", note, timed_out=True)
        result = sandbox.run(
            ["sh", "-c", command],
            workspace=workspace,
            limits=SandboxLimits(wall_seconds=min(max_seconds, remaining)),
            allow_network=allow_network,
            env=dict(AGENT_ENV),
            cancel=cancel,
        )
        stdout = result.stdout.decode("utf-8", "replace")
        stderr = result.stderr.decode("utf-8", "replace")
        if result.truncated:
            stderr += "\n[output over the sandbox's cap was dropped]"
        killed = result.killed_reason
        if killed is not None:
            stderr += f"\n[killed by the sandbox: {killed}]"
        exit_code = result.exit_code if result.exit_code is not None else 137
        return ToolRunResult(exit_code, stdout, stderr, timed_out=killed is not None)

    return run


def doctrine_of(task: Mapping[str, Any]) -> dict[str, Any]:
    """The repository doctrine the run was given (`task.metadata.doctrine`), or {}."""
    metadata = task.get("metadata")
    doctrine = metadata.get("doctrine") if isinstance(metadata, Mapping) else None
    return dict(doctrine) if isinstance(doctrine, Mapping) else {}


def verify_command(task: Mapping[str, Any], explicit: str | None = None) -> str | None:
    """The verify command: the spec's, else the doctrine's `verify`, else `inputs.verify`."""
    inputs = task.get("inputs")
    for candidate in (
        explicit,
        doctrine_of(task).get("verify"),
        inputs.get("verify") if isinstance(inputs, Mapping) else None,
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def record_ai_cost(session: Session, *, run_id: str, attempt: int, totals: Mapping[str, Any]) -> None:
    """This attempt's AI totals on the CWOM Run's `cost`, summed over attempts (a retry replaces its own)."""
    from cwom.tables import RunRow

    run = session.get_one(RunRow, run_id)
    cost = dict(run.cost or {})
    by_attempt = dict(cost.get("by_attempt") or {})
    by_attempt[str(attempt)] = dict(totals)
    parts = list(by_attempt.values())
    cost.update(
        {
            "currency": "USD",
            "by_attempt": by_attempt,
            "ai_usd": round(sum(float(p.get("cost_usd") or 0) for p in parts), 8),
            "tokens_prompt": sum(int(p.get("tokens_prompt") or 0) for p in parts),
            "tokens_output": sum(int(p.get("tokens_output") or 0) for p in parts),
            "tokens_total": sum(int(p.get("tokens_total") or 0) for p in parts),
            "model_calls": sum(int(p.get("calls") or 0) for p in parts),
        }
    )
    run.cost = cost


def totals_line(totals: Mapping[str, Any] | None) -> str:
    """One Markdown line with the run's AI totals, for the status comment and the PR body."""
    if not totals:
        return "_No model calls._"
    return (
        f"_AI: {int(totals.get('calls') or 0)} model calls, {int(totals.get('turns') or 0)} agent turns, "
        f"{int(totals.get('tokens_total') or 0)} tokens ({int(totals.get('tokens_prompt') or 0)} prompt, "
        f"{int(totals.get('tokens_output') or 0)} output), {int(totals.get('retries') or 0)} retries, "
        f"est. ${float(totals.get('cost_usd') or 0):.4f}._"
    )


def pr_description(task: Mapping[str, Any], publish_info: Mapping[str, Any], *, run_id: str) -> str:
    """The draft PR body: objective, the agent's summary, the plan and the AI totals (Markdown)."""
    parts = [f"**Objective:** {str(task.get('objective', '')).strip()}", ""]
    if publish_info.get("agent_summary"):
        parts += ["## Summary", "", str(publish_info["agent_summary"]).strip(), ""]
    if publish_info.get("plan_markdown"):
        parts += [str(publish_info["plan_markdown"]).strip(), ""]
    parts += ["---", totals_line(publish_info.get("ai")), f"<sub>Control Tower run `{run_id}`</sub>"]
    return "\n".join(parts) + "\n"
