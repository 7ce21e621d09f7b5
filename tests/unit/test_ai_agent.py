"""The agent loop with the mock provider and scripted (replayed) responses: tools, limits, events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from worker.ai.agent import AgentLimits, StopCode, run_agent
from worker.ai.mock_provider import NOTE_FILE, MockProvider
from worker.ai.providers import AIError
from worker.ai.replay_provider import RecordedCall, ReplayProvider
from worker.ai.toolbox import READ_ONLY_TOOLS
from worker.ai.tools import ToolRunResult

Events = list[tuple[str, dict[str, Any]]]
NO_BASH = ("read_file", "write_file", "edit_file", "list_dir", "search", "git_diff", "finish")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Demo\n\nUsage: run it.\n")
    (root / "docs" / "guide.md").write_text("# Guide\n\nStep one.\n")
    return root


def scripted(*turns: list[dict[str, Any]], tokens: tuple[int, int] = (50, 10)) -> ReplayProvider:
    """A provider that answers with the given content blocks in order."""
    calls = [
        RecordedCall(
            raw={
                "id": f"msg_{i}",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-5-5",
                "content": content,
                "stop_reason": "tool_use",
                "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
            }
        )
        for i, content in enumerate(turns)
    ]
    return ReplayProvider(calls, default_model="claude-sonnet-5-5")


def use(name: str, tool_input: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": tool_input}]


def test_mock_agent_writes_a_note_and_finishes(repo: Path) -> None:
    events: Events = []
    result = run_agent(
        MockProvider(seed=5),
        workspace=repo,
        system_prompt="sys",
        objective="Say hello",
        limits=AgentLimits(),
        tools_enabled=NO_BASH,
        on_event=lambda k, d: events.append((k, d)),
    )
    assert result.stop_code is StopCode.FINISHED
    assert "Say hello" in (repo / NOTE_FILE).read_text()
    assert [c.name for c in result.tool_calls] == ["list_dir", "write_file", "git_diff", "finish"]
    assert result.turns == 4
    assert result.tokens_prompt == sum(d["tokens_prompt"] for k, d in events if k == "ai.response")
    assert "changed 1 file" in result.summary
    start = events[0]
    assert (
        start[0] == "agent.start"
        and start[1]["objective"] == "Say hello"
        and start[1]["system_prompt"] == "sys"
    )
    assert events[-1][0] == "agent.stop" and events[-1][1]["stop_code"] == "FINISHED"
    json.dumps(events)  # the worker writes them as JSON lines


def test_mock_agent_edits_the_file_named_in_the_objective(repo: Path) -> None:
    result = run_agent(
        MockProvider(seed=2),
        workspace=repo,
        system_prompt="sys",
        objective="Document the flag in docs/guide.md please",
        limits=AgentLimits(),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.FINISHED
    text = (repo / "docs" / "guide.md").read_text()
    assert text.startswith("# Guide\n\nStep one.\n<!-- control-tower mock 2 -->")
    assert [c.name for c in result.tool_calls][:3] == ["list_dir", "read_file", "edit_file"]
    assert not (repo / NOTE_FILE).exists()


def test_mock_agent_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for n in range(2):
        root = tmp_path / f"r{n}"
        root.mkdir()
        (root / "a.md").write_text("x\n")
        result = run_agent(
            MockProvider(seed=9),
            workspace=root,
            system_prompt="s",
            objective="Touch a.md",
            limits=AgentLimits(),
            tools_enabled=NO_BASH,
        )
        outputs.append(
            (
                [(c.name, c.input) for c in result.tool_calls],
                (root / "a.md").read_text(),
                result.tokens_prompt,
                result.tokens_output,
            )
        )
    assert outputs[0] == outputs[1]


def test_read_only_agent_changes_nothing(repo: Path) -> None:
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    result = run_agent(
        MockProvider(),
        workspace=repo,
        system_prompt="s",
        objective="Explain README.md",
        limits=AgentLimits(),
        tools_enabled=READ_ONLY_TOOLS,
    )
    assert result.stop_code is StopCode.FINISHED
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert "write_file" not in [c.name for c in result.tool_calls]


def test_read_only_agent_cannot_call_write_tools(repo: Path) -> None:
    provider = scripted(
        use("write_file", {"path": "x.md", "content": "x"}, 1), use("finish", {"summary": "s"}, 2)
    )
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(),
        tools_enabled=READ_ONLY_TOOLS,
    )
    assert result.tool_calls[0].is_error and result.tool_calls[0].code == "TOOL_NOT_AVAILABLE"
    assert not (repo / "x.md").exists()


def test_turn_limit(repo: Path) -> None:
    result = run_agent(
        MockProvider(),
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(max_turns=2),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.AGENT_TURN_LIMIT
    assert result.turns == 2


def test_token_limit(repo: Path) -> None:
    provider = scripted(use("list_dir", {}, 1), use("list_dir", {}, 2), use("finish", {"summary": "s"}, 3))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(max_tokens=100),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.AGENT_TOKEN_LIMIT
    assert result.turns == 2 and result.tokens_total == 120


def test_cost_limit(repo: Path) -> None:
    # 50 prompt + 10 output tokens on claude-sonnet-5-5 ($2/$10 per MTok) = $0.0002 per turn.
    provider = scripted(*[use("list_dir", {}, n) for n in range(10)], tokens=(50, 10))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(max_cost_usd=0.0005),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.COST_LIMIT
    assert result.turns == 3
    assert result.cost_usd == pytest.approx(0.0006)


def test_time_budget_while_waiting_for_the_model(repo: Path) -> None:
    start = time.monotonic()
    result = run_agent(
        MockProvider(mode="timeout"),
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(deadline=start + 0.3),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.TIME_BUDGET_EXCEEDED
    assert time.monotonic() - start < 1.5


def test_time_budget_between_turns(repo: Path) -> None:
    def slow_bash(command: str) -> ToolRunResult:
        time.sleep(0.3)
        return ToolRunResult(0, "", "")

    provider = scripted(use("bash", {"command": "sleep"}, 1), use("finish", {"summary": "s"}, 2))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        bash_runner=slow_bash,
        limits=AgentLimits(deadline=time.monotonic() + 0.2),
    )
    assert result.stop_code is StopCode.TIME_BUDGET_EXCEEDED
    assert result.turns == 1


def test_timeout_without_deadline_raises(repo: Path) -> None:
    with pytest.raises(AIError) as info:
        run_agent(
            MockProvider(mode="timeout"),
            workspace=repo,
            system_prompt="s",
            objective="o",
            limits=AgentLimits(per_call_timeout_s=0.1),
            tools_enabled=NO_BASH,
        )
    assert info.value.code == "AI_TIMEOUT"


def test_long_tool_output_truncated_for_model_but_whole_in_event(repo: Path) -> None:
    (repo / "big.txt").write_text("line\n" * 10_000)
    events: Events = []
    provider = scripted(use("read_file", {"path": "big.txt"}, 1), use("finish", {"summary": "s"}, 2))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(),
        tools_enabled=NO_BASH,
        tool_output_limit=1000,
        on_event=lambda k, d: events.append((k, d)),
    )
    sent = result.messages[2]["content"][0]["content"]
    assert len(sent) < 1300 and "output truncated" in sent
    tool_result = next(d for k, d in events if k == "tool.result")
    assert len(tool_result["output"]) == 50_000 and tool_result["truncated_for_model"] is True


def test_end_turn_without_finish_uses_the_text(repo: Path) -> None:
    provider = ReplayProvider(
        [
            RecordedCall(
                raw={
                    "content": [{"type": "text", "text": "All good."}],
                    "stop_reason": "end_turn",
                    "usage": {},
                }
            )
        ]
    )
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.END_TURN and result.summary == "All good." and result.ok


def test_bash_exit_code_recorded(repo: Path) -> None:
    events: Events = []
    provider = scripted(use("bash", {"command": "false"}, 1), use("finish", {"summary": "s"}, 2))
    run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(),
        bash_runner=lambda c: ToolRunResult(3, "out", "err"),
        on_event=lambda k, d: events.append((k, d)),
    )
    tool_result = next(d for k, d in events if k == "tool.result")
    assert tool_result["exit_code"] == 3 and tool_result["is_error"] is True
    assert tool_result["output"].startswith("exit_code: 3")
    for key in ("name", "input", "duration_ms", "exit_code", "is_error", "output"):
        assert key in tool_result


def test_mock_agent_runs_the_doctrine_verify_command(repo: Path) -> None:
    from worker.ai.templates import BUILTIN_TEMPLATES, TemplateRegistry, build_system_prompt

    system, _ = build_system_prompt(
        TemplateRegistry(BUILTIN_TEMPLATES),
        context={"objective": "o"},
        doctrine={"verify": "make test"},
        tools=["bash"],
    )
    commands: list[str] = []

    def runner(command: str) -> ToolRunResult:
        commands.append(command)
        return ToolRunResult(0, "ok", "")

    result = run_agent(
        MockProvider(),
        workspace=repo,
        system_prompt=system,
        objective="Add a note",
        limits=AgentLimits(),
        bash_runner=runner,
    )
    assert result.stop_code is StopCode.FINISHED
    assert commands == ["make test"]
    assert [c.name for c in result.tool_calls] == ["list_dir", "write_file", "bash", "git_diff", "finish"]


def test_finishing_turn_wins_over_an_exhausted_budget(repo: Path) -> None:
    provider = scripted(use("finish", {"summary": "done"}, 1), tokens=(500, 10))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(max_tokens=100),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.FINISHED and result.summary == "done"


def test_invalid_finish_over_budget_stops_before_another_call(repo: Path) -> None:
    provider = scripted(use("finish", {}, 1), use("finish", {"summary": "late"}, 2), tokens=(500, 10))
    result = run_agent(
        provider,
        workspace=repo,
        system_prompt="s",
        objective="o",
        limits=AgentLimits(max_tokens=100),
        tools_enabled=NO_BASH,
    )
    assert result.stop_code is StopCode.AGENT_TOKEN_LIMIT
    assert result.turns == 1 and provider.remaining == 1
    assert result.tool_calls[0].code == "INVALID_TOOL_INPUT"
