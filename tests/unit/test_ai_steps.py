"""Pure parts of the AI playbooks: path policy, playbook shapes, totals, verify command, replay helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.ai import READ_ONLY_TOOLS
from worker.ai_playbooks import analysis_playbook, code_change_playbook, docs_playbook
from worker.ai_runtime import AITotals, doctrine_of, pr_description, totals_line, verify_command
from worker.ai_specs import AgentSpec, DiffCheckSpec, PlanSpec, ReportSpec, VerifySpec
from worker.ai_steps import is_docs_path, plan_markdown, refused_paths
from worker.playbooks import InvalidInputs, PlaybookRequest
from worker.replay import ReplayError, agent_segment, tool_calls
from worker.steps import ApprovalSpec, CheckoutSpec, CollectSpec


def request(operation: str, *, approval: bool = False, **task: Any) -> PlaybookRequest:
    body: dict[str, Any] = {
        "operation": operation,
        "objective": "do it",
        "target": {"repo": "acme/app"},
        "constraints": {"time_budget_seconds": 300, "allow_network": False},
        "inputs": {},
    }
    body.update(task)
    return PlaybookRequest(body, approval)


@pytest.mark.parametrize(
    ("path", "docs"),
    [
        ("README.md", True),
        ("a/b/notes.MDX", True),
        ("guide.rst", True),
        ("LICENSE.txt", True),
        ("docs/conf.py", True),
        ("docs/img/x.png", True),
        ("src/app.py", False),
        ("Makefile", False),
        ("mydocs/x.py", False),
        ("README.md.py", False),
    ],
)
def test_docs_paths(path: str, docs: bool) -> None:
    assert is_docs_path(path) is docs


def test_refused_paths_by_reason(tmp_path: Path) -> None:
    (tmp_path / "link.md").symlink_to("/etc/passwd")
    (tmp_path / "inside.md").symlink_to(tmp_path / "README.md")
    paths = ["README.md", "src/app.py", ".github/workflows/ci.yml", "link.md", "inside.md"]
    reasons = refused_paths(paths, tmp_path, docs_only=True, allow_workflows=False, doctrine_paths=None)
    assert reasons == {
        "not_docs": ["src/app.py", ".github/workflows/ci.yml"],
        "workflow": [".github/workflows/ci.yml"],
        "symlink_outside_workspace": ["link.md"],
    }
    allowed = refused_paths(
        [".github/workflows/ci.yml", "src/app.py"],
        tmp_path,
        docs_only=False,
        allow_workflows=True,
        doctrine_paths=None,
    )
    assert allowed == {}
    narrowed = refused_paths(
        ["src/app.py", "lib/x.py"],
        tmp_path,
        docs_only=False,
        allow_workflows=False,
        doctrine_paths=["src/**"],
    )
    assert narrowed == {"outside_doctrine_paths": ["lib/x.py"]}


def test_code_change_playbook_shape() -> None:
    steps = code_change_playbook(
        request("code_change", constraints={"time_budget_seconds": 300, "allow_network": True})
    )
    assert [type(s) for s in steps] == [
        CheckoutSpec,
        PlanSpec,
        AgentSpec,
        VerifySpec,
        DiffCheckSpec,
        CollectSpec,
    ]
    agent = steps[2]
    assert isinstance(agent, AgentSpec) and agent.budget_seconds == 300 and agent.allow_network
    assert "bash" in agent.tools and not agent.read_only


def test_docs_playbook_is_docs_only_and_asks_for_approval_when_required() -> None:
    steps = docs_playbook(request("docs", approval=True))
    assert [s.type for s in steps] == ["checkout", "approval", "agent", "verify", "diff_check", "collect"]
    assert isinstance(steps[1], ApprovalSpec) and "acme/app" in steps[1].prompt
    check = steps[4]
    assert isinstance(check, DiffCheckSpec) and check.docs_only


def test_analysis_playbook_is_read_only() -> None:
    steps = analysis_playbook(request("analysis", inputs={"approval": True, "max_turns": 5}))
    assert [s.type for s in steps] == ["checkout", "approval", "agent", "report"]
    agent = steps[2]
    assert isinstance(agent, AgentSpec) and agent.tools == READ_ONLY_TOOLS and agent.read_only
    assert agent.max_turns == 5 and agent.objective_template == "analysis.report@1"
    assert isinstance(steps[3], ReportSpec)


@pytest.mark.parametrize("bad", [{"max_turns": 0}, {"max_cost_usd": "1"}, {"max_tokens": True}])
def test_bad_limits_are_invalid_inputs(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputs):
        code_change_playbook(request("code_change", inputs=bad))


def test_empty_objective_is_invalid() -> None:
    with pytest.raises(InvalidInputs):
        docs_playbook(request("docs", objective="  "))


def test_verify_command_precedence() -> None:
    task: dict[str, Any] = {"metadata": {"doctrine": {"verify": "make test"}}, "inputs": {"verify": "true"}}
    assert verify_command(task, "pytest") == "pytest"
    assert verify_command(task) == "make test"
    assert verify_command({"inputs": {"verify": " sh t.sh "}}) == "sh t.sh"
    assert verify_command({"inputs": {"verify": ""}, "metadata": "x"}) is None
    assert doctrine_of({"metadata": {"doctrine": ["no"]}}) == {}


def test_totals_from_events_and_merge() -> None:
    totals = AITotals()
    totals.add(
        "ai.response",
        {"tokens_prompt": 10, "tokens_output": 5, "cost_usd": 0.5, "latency_ms": 2.5, "retry_count": 1},
    )
    totals.add("ai.error", {"retry_count": 2})
    totals.add("agent.stop", {"turns": 3})
    totals.add("tool.result", {"tokens_prompt": 1000})
    data = totals.as_dict()
    assert data == {
        "calls": 1,
        "errors": 1,
        "retries": 3,
        "turns": 3,
        "tokens_prompt": 10,
        "tokens_output": 5,
        "cost_usd": 0.5,
        "latency_ms": 2.5,
        "tokens_total": 15,
    }
    again = AITotals.from_dict(data)
    again.merge(totals)
    assert again.as_dict()["tokens_total"] == 30 and again.calls == 2


def test_plan_markdown() -> None:
    text = plan_markdown(
        {"steps": ["a", "b"], "files": ["x.py"], "risks": [{"risk": "r", "severity": "high"}]}
    )
    assert text == "## Plan\n\n1. a\n2. b\n\n**Files:** `x.py`\n\n**Risks:**\n- (high) r\n"


def test_agent_segment_takes_the_last_agent_run() -> None:
    def ev(kind: str, step: str, **data: Any) -> dict[str, Any]:
        return {"type": kind, "step_id": step, "data": data}

    events = [
        ev("agent.start", "agent", n=1),
        ev("tool.result", "agent", name="a", input={}, is_error=False),
        ev("agent.stop", "agent"),
        ev("agent.start", "agent", n=2),
        ev("ai.response", "plan"),
        ev("tool.result", "agent", name="b", input={"p": 1}, is_error=True),
        ev("agent.stop", "agent"),
        ev("step.finished", "agent"),
    ]
    segment = agent_segment(events)
    assert segment[0]["data"] == {"n": 2} and segment[-1]["type"] == "agent.stop"
    assert tool_calls(segment) == [{"name": "b", "input": {"p": 1}, "is_error": True}]
    with pytest.raises(ReplayError):
        agent_segment(events, "other")


def test_pr_description_and_totals_line() -> None:
    info = {
        "agent_summary": "Fixed it.",
        "plan_markdown": "## Plan\n\n1. a\n",
        "ai": {
            "calls": 7,
            "turns": 6,
            "tokens_total": 120,
            "tokens_prompt": 100,
            "tokens_output": 20,
            "retries": 2,
            "cost_usd": 0.0123,
        },
    }
    body = pr_description({"objective": "Make it pass"}, info, run_id="RUN1")
    assert body.startswith("**Objective:** Make it pass\n")
    assert "## Summary\n\nFixed it.\n" in body and "## Plan\n\n1. a\n" in body
    assert "7 model calls, 6 agent turns, 120 tokens (100 prompt, 20 output), 2 retries, est. $0.0123" in body
    assert body.rstrip().endswith("`RUN1`</sub>")
    assert totals_line(None) == "_No model calls._"


def test_a_plan_from_an_earlier_attempt_is_restored(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace
    from typing import cast

    from worker.ai_steps import restore_plan
    from worker.steps import StepContext

    plan = {"steps": ["a"], "files": [], "risks": []}
    for n, status in ((2, "completed"), (9, "failed")):
        folder = tmp_path / "steps" / f"{n}-plan"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"status": status, "plan": plan if n == 2 else None}))
    ctx = cast(StepContext, SimpleNamespace(publish_info={}, trace=SimpleNamespace(path=tmp_path)))
    restore_plan(ctx)
    assert ctx.publish_info == {"plan": plan, "plan_markdown": "## Plan\n\n1. a\n"}
    fresh = cast(
        StepContext,
        SimpleNamespace(publish_info={"plan": {"steps": ["b"]}}, trace=SimpleNamespace(path=tmp_path)),
    )
    restore_plan(fresh)
    assert fresh.publish_info == {"plan": {"steps": ["b"]}}
