"""Re-run a finished run's agent step against its recorded model responses and compare the outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control_tower.settings import Settings
from cwom.base import new_id
from worker import checkout as co
from worker.ai import AgentLimits, AIError, ReplayProvider, ToolRunResult, run_agent
from worker.ai.tools import BashRunner
from worker.ai_runtime import doctrine_of, sandbox_bash_runner
from worker.ai_steps import diff_digest
from worker.sandbox import Sandbox, probe_sandbox
from worker.trace import TraceError, TraceReader

REPLAY_BUDGET_SECONDS = 600.0


class ReplayError(TraceError):
    """The run's trace does not hold what a replay needs."""

    code = "REPLAY_UNAVAILABLE"
    http_status = 422


def agent_segment(events: list[dict[str, Any]], step_id: str | None = None) -> list[dict[str, Any]]:
    """The events of the last agent.start (of `step_id`, if given) up to its agent.stop."""
    starts = [
        i
        for i, e in enumerate(events)
        if e.get("type") == "agent.start" and (step_id is None or e.get("step_id") == step_id)
    ]
    if not starts:
        raise ReplayError(message="the trace has no agent step to replay")
    first = starts[-1]
    sid = events[first].get("step_id")
    segment: list[dict[str, Any]] = []
    for event in events[first:]:
        if event.get("step_id") != sid:
            continue
        segment.append(event)
        if event.get("type") == "agent.stop":
            break
    return segment


def tool_calls(segment: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name, input and error flag of each tool call, in order."""
    return [
        {"name": d.get("name"), "input": d.get("input"), "is_error": bool(d.get("is_error"))}
        for d in (e.get("data") or {} for e in segment if e.get("type") == "tool.result")
    ]


def _start_commit(reader: TraceReader) -> str:
    manifest = reader.manifest() or {}
    if isinstance(manifest.get("commit"), str):
        return str(manifest["commit"])
    for step in reader.steps():
        result = step.result or {}
        if result.get("type") == "checkout" and isinstance(result.get("commit"), str):
            return str(result["commit"])
    raise ReplayError(message="the trace does not record the commit the run started from")


def _recorded_diff(reader: TraceReader, step_id: str) -> str | None:
    for step in reader.steps():
        if step.step_id == step_id and step.result and isinstance(step.result.get("diff_sha256"), str):
            return str(step.result["diff_sha256"])
    return None


def _unavailable_bash(_command: str) -> ToolRunResult:
    return ToolRunResult(126, "", "SANDBOX_UNAVAILABLE: no sandbox works on this host")


def replay_run(
    settings: Settings,
    run_id: str,
    *,
    step_id: str | None = None,
    sandbox: Sandbox | None = None,
    keep_workspace: bool = False,
) -> dict[str, Any]:
    """Replay the agent step of `run_id` on a fresh checkout of the same commit; no model API call."""
    reader = TraceReader(settings.trace_root, run_id)
    events, _bad = reader.events()
    segment = agent_segment(events, step_id)
    start = segment[0].get("data") or {}
    sid = str(segment[0].get("step_id"))
    task = reader.read().task
    task = task if isinstance(task, Mapping) else {}
    target = task.get("target") if isinstance(task.get("target"), Mapping) else {}
    assert isinstance(target, Mapping)
    commit = _start_commit(reader)
    dest = Path(settings.workspace_root) / f"replay-{run_id}-{new_id()[-6:].lower()}"
    checkout = co.clone(settings.git_base_url, str(target.get("repo")), commit, dest)
    replayed: list[tuple[str, dict[str, Any]]] = []
    error: dict[str, Any] | None = None
    stop_code = None
    try:
        tools = [str(t) for t in start.get("tools") or []]
        bash: BashRunner | None = None
        if "bash" in tools:
            box = sandbox if sandbox is not None else probe_sandbox(settings.sandbox)
            constraints = task.get("constraints") if isinstance(task.get("constraints"), Mapping) else {}
            assert isinstance(constraints, Mapping)
            bash = (
                sandbox_bash_runner(
                    sandbox=box,
                    workspace=checkout.path,
                    cancel=threading.Event(),
                    deadline=time.monotonic() + REPLAY_BUDGET_SECONDS,
                    allow_network=bool(constraints.get("allow_network", False)),
                    max_seconds=REPLAY_BUDGET_SECONDS,
                )
                if box.available
                else _unavailable_bash
            )
        provider = ReplayProvider.from_events(segment)
        try:
            result = run_agent(
                provider,
                workspace=checkout.path,
                system_prompt=str(start.get("system_prompt", "")),
                objective=str(start.get("objective", "")),
                limits=AgentLimits(max_turns=int(start.get("max_turns") or 30), max_tokens=10**12),
                tools_enabled=tools,
                bash_runner=bash,
                on_event=lambda kind, data: replayed.append((kind, data)),
                model=str(start.get("model")) if start.get("model") else None,
                template_id=str(start.get("template_id", "agent.system")),
                template_version=int(start.get("template_version") or 1),
                allow_workflow_changes=doctrine_of(task).get("allow_workflow_changes") is True,
            )
            stop_code = result.stop_code.value
        except AIError as exc:
            error = {"code": exc.code, "message": exc.message}
        new_diff = diff_digest(checkout.path)
    finally:
        if not keep_workspace:
            co.remove_workspace(dest)
    recorded_calls = tool_calls(segment)
    new_calls = tool_calls([{"type": k, "data": json.loads(json.dumps(d, default=str))} for k, d in replayed])
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(recorded_calls, new_calls, strict=False)) if a != b),
        None if len(recorded_calls) == len(new_calls) else min(len(recorded_calls), len(new_calls)),
    )
    recorded_diff = _recorded_diff(reader, sid)
    return {
        "run_id": run_id,
        "step_id": sid,
        "commit": commit,
        "same_tool_calls": error is None and first_diff is None,
        "same_diff": recorded_diff is not None and recorded_diff == new_diff,
        "recorded_tool_calls": len(recorded_calls),
        "replayed_tool_calls": len(new_calls),
        "first_difference": first_diff,
        "recorded_diff": recorded_diff,
        "replayed_diff": new_diff,
        "stop_code": stop_code,
        "model_calls_left": provider.remaining,
        "error": error,
    }
