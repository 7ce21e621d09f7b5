"""The agent loop over real HTTP: a scripted Claude edits a repo, runs tests, is refused escapes; replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_server import (
    FakeAnthropic,
    Reply,
    overloaded,
    running_fake_anthropic,
    text,
    tool_use,
)
from worker.ai.agent import AgentLimits, AgentResult, StopCode, run_agent
from worker.ai.anthropic_provider import AnthropicProvider
from worker.ai.providers import AIError
from worker.ai.replay_provider import ReplayProvider
from worker.ai.retry import RetryPolicy
from worker.ai.tools import ToolRunResult, unsandboxed_bash_runner

API_KEY = "sk-ant-secret-do-not-leak-42"
Events = list[tuple[str, dict[str, Any]]]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
AI_RESPONSE_KEYS = (
    "provider",
    "model",
    "template_id",
    "template_version",
    "tokens_prompt",
    "tokens_output",
    "latency_ms",
    "retry_count",
    "stop_reason",
    "cost_usd",
)
TOOL_RESULT_KEYS = ("name", "input", "duration_ms", "exit_code", "is_error", "output")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with running_fake_anthropic() as server:
        yield server


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "app.py").write_text("def answer():\n    return 41\n")
    (root / "test_app.py").write_text(
        "from app import answer\n\n\ndef test_answer():\n    assert answer() == 42\n"
    )
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "init"], check=True, env=env)
    return root


def diff_of(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "diff"], capture_output=True, text=True, check=True).stdout


def coding_script() -> list[Reply]:
    pytest_cmd = f"{sys.executable} -m pytest -q -p no:cacheprovider test_app.py"
    return [
        Reply(
            [text("Looking at the repository."), tool_use("list_dir", {"path": "."}, "toolu_01")],
            input_tokens=900,
            output_tokens=30,
        ),
        Reply([tool_use("read_file", {"path": "app.py"}, "toolu_02")], input_tokens=1000, output_tokens=20),
        Reply(
            [
                tool_use(
                    "edit_file",
                    {"path": "app.py", "old_str": "return 41", "new_str": "return 42"},
                    "toolu_03",
                )
            ],
            input_tokens=1100,
            output_tokens=40,
        ),
        Reply([tool_use("bash", {"command": pytest_cmd}, "toolu_04")], input_tokens=1200, output_tokens=25),
        Reply([tool_use("git_diff", {}, "toolu_05")], input_tokens=1300, output_tokens=10),
        Reply(
            [
                text("Done."),
                tool_use("finish", {"summary": "answer() now returns 42; tests pass."}, "toolu_06"),
            ],
            input_tokens=1400,
            output_tokens=30,
        ),
    ]


def run_coding_agent(provider: Any, root: Path, events: Events) -> AgentResult:
    return run_agent(
        provider,
        workspace=root,
        system_prompt="You are a careful engineer.",
        objective="Make test_app.py pass.",
        limits=AgentLimits(max_turns=10),
        bash_runner=unsandboxed_bash_runner(root, timeout_s=60),
        on_event=lambda kind, data: events.append((kind, data)),
        template_id="agent.system",
        template_version=1,
    )


def test_scripted_agent_edits_runs_tests_and_finishes(fake: FakeAnthropic, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    fake.enqueue(*coding_script())
    events: Events = []
    with AnthropicProvider(api_key=API_KEY, base_url=fake.url) as provider:
        result = run_coding_agent(provider, root, events)

    assert result.stop_code is StopCode.FINISHED
    assert result.summary == "answer() now returns 42; tests pass."
    assert (root / "app.py").read_text() == "def answer():\n    return 42\n"
    assert "+    return 42" in diff_of(root)
    assert result.turns == 6
    assert (result.tokens_prompt, result.tokens_output) == (6900, 155)
    assert result.cost_usd == pytest.approx((6900 * 2 + 155 * 10) / 1e6)
    assert [c.name for c in result.tool_calls] == [
        "list_dir",
        "read_file",
        "edit_file",
        "bash",
        "git_diff",
        "finish",
    ]
    assert not any(c.is_error for c in result.tool_calls)

    # Every request reached the server with the key in its header and the tool results of the last turn.
    assert len(fake.requests) == 6
    for sent in fake.requests:
        assert (
            sent.headers.get("x-api-key") == API_KEY
            or sent.headers.get("authorization") == f"Bearer {API_KEY}"
        )
        assert [t["name"] for t in sent.body["tools"]][-1] == "finish"
    second = fake.requests[1].body["messages"]
    assert second[1]["content"][1]["id"] == "toolu_01"
    assert second[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_01",
            "content": ".git/\napp.py\ntest_app.py",
            "is_error": False,
        }
    ]
    bash_result = fake.requests[4].body["messages"][-1]["content"][0]
    assert bash_result["tool_use_id"] == "toolu_04" and "1 passed" in bash_result["content"]

    # Telemetry: every ai.response and tool.result carries every required attribute; no key anywhere.
    responses = [d for k, d in events if k == "ai.response"]
    assert len(responses) == 6
    for data in responses:
        for key in AI_RESPONSE_KEYS:
            assert key in data, key
        assert data["provider"] == "anthropic" and data["template_id"] == "agent.system"
        assert data["template_version"] == 1 and data["retry_count"] == 0
    assert [d["stop_reason"] for d in responses] == ["tool_use"] * 6
    tool_results = [d for k, d in events if k == "tool.result"]
    for data in tool_results:
        for key in TOOL_RESULT_KEYS:
            assert key in data, key
    bash_event = next(d for d in tool_results if d["name"] == "bash")
    assert bash_event["exit_code"] == 0 and "1 passed" in bash_event["output"]
    assert [k for k, _ in events].count("tool.call") == 6
    dumped = json.dumps(events)
    assert API_KEY not in dumped


def test_agent_over_streaming_with_an_overload_in_the_middle(fake: FakeAnthropic, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    script = coding_script()
    fake.enqueue(script[0], overloaded(), *script[1:])
    events: Events = []
    policy = RetryPolicy(base_delay_s=0.05)
    with AnthropicProvider(api_key=API_KEY, base_url=fake.url, stream=True, retry_policy=policy) as provider:
        result = run_coding_agent(provider, root, events)
    assert result.stop_code is StopCode.FINISHED
    assert (root / "app.py").read_text().endswith("return 42\n")
    assert [d["retry_count"] for k, d in events if k == "ai.response"] == [0, 1, 0, 0, 0, 0]
    assert all(r.body.get("stream") is True for r in fake.requests)


def test_escape_attempts_are_refused_and_recorded(fake: FakeAnthropic, tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (root / "passwd").symlink_to("/etc/passwd")
    git_config_before = (root / ".git" / "config").read_text()
    attempts = [
        ("read_file", {"path": "../../etc/passwd"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("read_file", {"path": "passwd"}),
        ("search", {"pattern": "root", "path": "/etc"}),
        ("write_file", {"path": ".github/workflows/ci.yml", "content": "on: push\n"}),
        ("write_file", {"path": ".git/config", "content": "[core]\n\thooksPath = /tmp/evil\n"}),
        ("edit_file", {"path": "passwd", "old_str": "root", "new_str": "toor"}),
    ]
    script = [Reply([tool_use(name, args, f"toolu_e{n}")]) for n, (name, args) in enumerate(attempts)]
    script.append(Reply([tool_use("bash", {"command": "env"}, "toolu_env")]))
    script.append(Reply([tool_use("finish", {"summary": "gave up"}, "toolu_fin")]))
    fake.enqueue(*script)
    events: Events = []
    with AnthropicProvider(api_key=API_KEY, base_url=fake.url) as provider:
        result = run_agent(
            provider,
            workspace=root,
            system_prompt="s",
            objective="escape",
            limits=AgentLimits(),
            bash_runner=unsandboxed_bash_runner(root),
            on_event=lambda k, d: events.append((k, d)),
        )
    assert result.stop_code is StopCode.FINISHED
    codes = [c.code for c in result.tool_calls[: len(attempts)]]
    assert codes == ["PATH_OUTSIDE_WORKSPACE"] * 4 + ["PATH_NOT_ALLOWED"] * 2 + ["PATH_OUTSIDE_WORKSPACE"]
    refused = [d for k, d in events if k == "tool.result" and d["refused"]]
    assert len(refused) == len(attempts) and all(d["is_error"] for d in refused)
    # The model was told, each time, as an error tool_result.
    for n, sent in enumerate(fake.requests[1 : len(attempts) + 1]):
        block = sent.body["messages"][-1]["content"][0]
        assert block["tool_use_id"] == f"toolu_e{n}" and block["is_error"] is True
        assert block["content"].startswith(("PATH_OUTSIDE_WORKSPACE", "PATH_NOT_ALLOWED"))
    assert not (root / ".github").exists()
    assert (root / ".git" / "config").read_text() == git_config_before
    # Nothing of /etc/passwd and no key reached the model or the events.
    sent_bodies = json.dumps([r.body for r in fake.requests])
    assert "root:x:0:0" not in sent_bodies and "root:x:0:0" not in json.dumps(events)
    env_output = next(d["output"] for k, d in events if k == "tool.result" and d["name"] == "bash")
    assert "PATH=" in env_output and API_KEY not in env_output
    assert API_KEY not in sent_bodies and API_KEY not in json.dumps(events)


def test_replay_reproduces_tool_calls_and_diff(fake: FakeAnthropic, tmp_path: Path) -> None:
    recorded_root = make_repo(tmp_path / "recorded")
    fake.enqueue(*coding_script())
    recorded: Events = []
    with AnthropicProvider(api_key=API_KEY, base_url=fake.url) as provider:
        original = run_coding_agent(provider, recorded_root, recorded)
    # Through JSON lines, as the trace's events.jsonl stores them.
    lines = [
        json.dumps({"seq": n, "type": k, "step_id": "agent", "data": d}) for n, (k, d) in enumerate(recorded)
    ]
    from_trace = [json.loads(line) for line in lines]

    replay_root = make_repo(tmp_path / "replayed")
    replayer = ReplayProvider.from_events(from_trace)
    replayed_events: Events = []
    replayed = run_coding_agent(replayer, replay_root, replayed_events)
    assert len(fake.requests) == 6, "replay made no API calls"
    assert replayer.remaining == 0
    assert replayed.stop_code is StopCode.FINISHED and replayed.summary == original.summary
    assert [(c.name, c.input, c.is_error) for c in replayed.tool_calls] == [
        (c.name, c.input, c.is_error) for c in original.tool_calls
    ]
    assert diff_of(replay_root) == diff_of(recorded_root) != ""
    assert (replayed.tokens_prompt, replayed.tokens_output) == (
        original.tokens_prompt,
        original.tokens_output,
    )


def test_replay_detects_a_diverging_run(fake: FakeAnthropic, tmp_path: Path) -> None:
    recorded_root = make_repo(tmp_path / "recorded")
    fake.enqueue(*coding_script())
    recorded: Events = []
    with AnthropicProvider(api_key=API_KEY, base_url=fake.url) as provider:
        run_coding_agent(provider, recorded_root, recorded)
    other = make_repo(tmp_path / "other")
    (other / "app.py").write_text("def answer():\n    return 0\n")  # the recorded edit no longer applies
    with pytest.raises(AIError) as info:
        run_coding_agent(ReplayProvider.from_events(recorded), other, [])
    assert info.value.code == "AI_REPLAY_DIVERGED"


def test_bash_runner_sees_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    root = make_repo(tmp_path / "repo")
    result: ToolRunResult = unsandboxed_bash_runner(root)("env")
    assert result.exit_code == 0 and API_KEY not in result.stdout
