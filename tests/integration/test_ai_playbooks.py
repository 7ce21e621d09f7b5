"""The AI playbooks through the real executor on SQLite and PostgreSQL: bare git remotes, the real sandbox,
the scripted Anthropic server (real SDK over HTTP) and the deterministic mock provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_tower.settings import Settings
from cwom.audit import Actor
from tests.conftest import make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    Reply,
    overloaded,
    rate_limited,
    running_fake_anthropic,
    text,
    tool_use,
)
from tests.fakes.git_remote import make_bare_repo
from tests.support.runs import artifacts, drain, enqueue, make_queue, run_row, steps, wait_for
from worker.ai_playbooks import ai_runners, register_ai_playbooks
from worker.executor import build_executor
from worker.playbooks import default_registry
from worker.queue import Executor
from worker.replay import replay_run
from worker.sandbox import probe_sandbox

API_KEY = "sk-ant-api03-playbook-test-key-never-leaks-0123456789"
APP = "def answer():\n    return 41\n"
TEST_APP = "from app import answer\n\nassert answer() == 42, answer()\nprint('1 passed')\n"
FILES: dict[str, bytes | str] = {
    "README.md": "# app\n\nThe answer service.\n",
    "docs/guide.md": "# Guide\n",
    "app.py": APP,
    "test_app.py": TEST_APP,
    "test.sh": "python3 test_app.py\n",
    ".github/workflows/ci.yml": "on: push\n",
}
AI_KEYS = (
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
PLAN = {
    "steps": ["make answer() return 42", "run the tests"],
    "files": ["app.py"],
    "risks": [{"risk": "callers relying on 41", "severity": "low"}],
}


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    if not probe_sandbox("auto").available:
        pytest.skip("no sandbox tier works on this host; the AI playbooks refuse to run without one")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with running_fake_anthropic() as server:
        yield server


def ai_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    root = tmp_path / "remote"
    if not (root / "acme/app.git").exists():
        make_bare_repo(root, "acme/app", FILES)
    values: dict[str, Any] = {
        "git_base_url": f"file://{root}",
        "policy_min_time_budget": 1,
        "ai_provider": "mock",
    }
    values.update(overrides)
    return make_settings(db_url, tmp_path, **values)


def claude_settings(db_url: str, tmp_path: Path, fake: FakeAnthropic) -> Settings:
    return ai_settings(
        db_url, tmp_path, ai_provider="anthropic", anthropic_api_key=API_KEY, anthropic_base_url=fake.url
    )


def executor(settings: Settings, factory: sessionmaker[Session]) -> Executor:
    return build_executor(
        settings, factory, registry=register_ai_playbooks(default_registry()), runners=ai_runners()
    )


def task(operation: str, objective: str, *, budget: int = 120, **inputs: Any) -> dict[str, Any]:
    return {
        "operation": operation,
        "objective": objective,
        "inputs": inputs,
        "constraints": {"time_budget_seconds": budget},
    }


def events(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    lines = (Path(settings.trace_root) / run_id / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def trace_text(settings: Settings, run_id: str) -> str:
    folder = Path(settings.trace_root) / run_id
    return "".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file())


def step_map(factory: sessionmaker[Session], run_id: str) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in steps(factory, run_id)}


def coding_script() -> list[Reply]:
    return [
        Reply([text("Looking."), tool_use("list_dir", {"path": "."}, "toolu_01")], input_tokens=900),
        Reply([tool_use("read_file", {"path": "app.py"}, "toolu_02")], input_tokens=1000),
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
        Reply([tool_use("bash", {"command": "sh test.sh"}, "toolu_04")], input_tokens=1200),
        Reply([tool_use("git_diff", {}, "toolu_05")], input_tokens=1300),
        Reply(
            [text("Done."), tool_use("finish", {"summary": "answer() returns 42; tests pass."}, "toolu_06")],
            input_tokens=1400,
            output_tokens=30,
        ),
    ]


def run_code_change(settings: Settings, factory: sessionmaker[Session], **inputs: Any) -> str:
    inputs = inputs or {"verify": "sh test.sh"}
    run_id = enqueue(factory, settings, **task("code_change", "Make test_app.py pass", **inputs))
    drain(factory, settings, executor(settings, factory))
    return run_id


def test_code_change_end_to_end_with_scripted_claude_after_429_and_529(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session], fake: FakeAnthropic
) -> None:
    settings = claude_settings(db_url, tmp_path, fake)
    fake.enqueue(
        rate_limited("1"), overloaded(), Reply([text(json.dumps(PLAN))], output_tokens=60), *coding_script()
    )
    run_id = run_code_change(settings, factory)

    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("done", None), run.error_message
    by_id = step_map(factory, run_id)
    assert list(by_id) == ["checkout", "plan", "agent", "verify", "diff_check", "collect"]
    assert by_id["plan"]["output"]["plan"] == PLAN
    assert "1. make answer() return 42" in by_id["plan"]["output"]["plan_markdown"]
    agent = by_id["agent"]["output"]
    assert agent["stop_code"] == "FINISHED" and agent["summary"] == "answer() returns 42; tests pass."
    assert agent["tool_calls"] == ["list_dir", "read_file", "edit_file", "bash", "git_diff", "finish"]
    assert by_id["verify"]["output"]["exit_code"] == 0
    assert by_id["diff_check"]["output"]["paths"] == ["app.py"]
    patch = (Path(settings.trace_root) / run_id / "diff.patch").read_text()
    assert "-    return 41" in patch and "+    return 42" in patch
    assert set(artifacts(factory, run_id)) == {"patch", "trace"}

    evs = events(settings, run_id)
    bash = next(e["data"] for e in evs if e["type"] == "tool.result" and e["data"]["name"] == "bash")
    assert bash["exit_code"] == 0 and "1 passed" in bash["output"] and bash["duration_ms"] > 0
    responses = [e for e in evs if e["type"] == "ai.response"]
    assert [e["step_id"] for e in responses] == ["plan"] + ["agent"] * 6
    for event in responses:
        for key in AI_KEYS:
            assert key in event["data"], key
        assert event["data"]["provider"] == "anthropic"
    # The plan call was retried twice (429 with retry-after, then 529) with backoff, then succeeded.
    assert responses[0]["data"]["retry_count"] == 2 and responses[0]["data"]["latency_ms"] >= 1000
    assert responses[0]["data"]["template_id"] == "plan.code_change"
    assert len(fake.requests) == 9
    for event in (e for e in evs if e["type"] == "ai.request"):
        for key in ("provider", "model", "template_id", "template_version"):
            assert key in event["data"]

    tokens = json.loads((Path(settings.trace_root) / run_id / "manifest.json").read_text())["tokens"]
    assert tokens["tokens_prompt"] == 100 + 900 + 1000 + 1100 + 1200 + 1300 + 1400
    assert tokens["calls"] == 7 and tokens["turns"] == 6 and tokens["retries"] == 2
    assert run.telemetry["ai"] == tokens
    assert run.cost["tokens_total"] == tokens["tokens_total"] and run.cost["ai_usd"] > 0
    # The key went to the API and nowhere else.
    for sent in fake.requests:
        assert API_KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert API_KEY not in trace_text(settings, run_id)


def test_replay_reproduces_the_recorded_run_and_detects_a_changed_one(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session], fake: FakeAnthropic
) -> None:
    settings = claude_settings(db_url, tmp_path, fake)
    fake.enqueue(Reply([text(json.dumps(PLAN))]), *coding_script())
    run_id = run_code_change(settings, factory)
    assert run_row(factory, run_id).status == "done"
    served = len(fake.requests)

    report = replay_run(settings, run_id)
    assert report["same_tool_calls"] and report["same_diff"], report
    assert (report["recorded_tool_calls"], report["model_calls_left"]) == (6, 0)
    assert len(fake.requests) == served  # no API call

    env = {
        **os.environ,
        "TRACE_ROOT": str(settings.trace_root),
        "WORKSPACE_ROOT": str(settings.workspace_root),
        "GIT_BASE_URL": settings.git_base_url,
        "DATABASE_URL": db_url,
        "ANTHROPIC_API_KEY": "",
    }
    cli = [sys.executable, "-m", "worker.cli", "replay", run_id]
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["same_diff"] is True

    # A recording whose edit differs no longer reproduces the run's diff or tool calls: exit 1.
    path = Path(settings.trace_root) / run_id / "events.jsonl"
    path.write_text(path.read_text().replace('"new_str":"return 42"', '"new_str":"return 43"'))
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1
    changed = json.loads(done.stdout)
    assert changed["same_diff"] is False and changed["same_tool_calls"] is False


def test_escapes_are_refused_and_recorded(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session], fake: FakeAnthropic
) -> None:
    settings = claude_settings(db_url, tmp_path, fake)
    connect = (
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', 5432), timeout=3); "
        "print('CONNECTED')\""
    )
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("read_file", {"path": "../../../../etc/passwd"}),
        ("bash", {"command": "ln -s /etc/passwd leak.txt"}),
        ("read_file", {"path": "leak.txt"}),
        ("write_file", {"path": ".github/workflows/ci.yml", "content": "on: pull_request_target\n"}),
        ("bash", {"command": connect}),
        ("bash", {"command": "env"}),
        ("bash", {"command": "echo 'on: push # changed' >> .github/workflows/ci.yml"}),
    ]
    script = [Reply([tool_use(name, args, f"toolu_x{n}")]) for n, (name, args) in enumerate(attempts)]
    fake.enqueue(
        Reply([text(json.dumps(PLAN))]),
        *script,
        Reply([tool_use("finish", {"summary": "tried"}, "toolu_fin")]),
    )
    run_id = run_code_change(settings, factory, verify="true")

    evs = events(settings, run_id)
    results = {e["data"]["tool_use_id"]: e["data"] for e in evs if e["type"] == "tool.result"}
    assert results["toolu_x0"]["code"] == "PATH_OUTSIDE_WORKSPACE" and results["toolu_x0"]["refused"]
    assert results["toolu_x2"]["code"] == "PATH_OUTSIDE_WORKSPACE" and results["toolu_x2"]["refused"]
    assert results["toolu_x3"]["code"] == "PATH_NOT_ALLOWED" and results["toolu_x3"]["refused"]
    network = results["toolu_x4"]
    assert network["exit_code"] != 0 and "CONNECTED" not in network["output"]
    env_out = results["toolu_x5"]["output"]
    assert results["toolu_x5"]["exit_code"] == 0 and "PATH=" in env_out
    assert "ANTHROPIC" not in env_out and API_KEY not in env_out
    assert "root:x:0:0" not in trace_text(settings, run_id)
    assert API_KEY not in trace_text(settings, run_id)

    # What bash slipped past the file tools is caught before anything could be published.
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "PATH_NOT_ALLOWED")
    refusal = next(e["data"] for e in events(settings, run_id) if e["type"] == "diff.refused")
    assert refusal["reasons"]["symlink_outside_workspace"] == ["leak.txt"]
    assert refusal["reasons"]["workflow"] == [".github/workflows/ci.yml"]
    assert "collect" not in step_map(factory, run_id)
    assert "patch" not in artifacts(factory, run_id)


def test_docs_task_that_edits_python_fails_path_not_allowed(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = ai_settings(db_url, tmp_path)
    run_id = enqueue(factory, settings, **task("docs", "Explain the return value in app.py"))
    drain(factory, settings, executor(settings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "PATH_NOT_ALLOWED")
    by_id = step_map(factory, run_id)
    assert by_id["diff_check"]["output"]["paths"] == ["app.py"]
    assert "collect" not in by_id and "patch" not in artifacts(factory, run_id)
    assert not (Path(settings.trace_root) / run_id / "diff.patch").exists()


def test_docs_task_editing_markdown_completes(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = ai_settings(db_url, tmp_path, mock_ai_seed=3)
    run_id = enqueue(factory, settings, **task("docs", "Describe the service in docs/guide.md"))
    drain(factory, settings, executor(settings, factory))
    assert run_row(factory, run_id).status == "done"
    assert step_map(factory, run_id)["diff_check"]["output"]["paths"] == ["docs/guide.md"]
    assert "patch" in artifacts(factory, run_id)


def test_schema_violation_retries_twice_then_fails(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = ai_settings(db_url, tmp_path, mock_ai_mode="schema_violation")
    run_id = enqueue(factory, settings, **task("code_change", "Document README.md"))
    drain(factory, settings, executor(settings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "AI_SCHEMA_VALIDATION_FAILED")
    plan_events = [e for e in events(settings, run_id) if e["step_id"] == "plan"]
    assert [e["type"] for e in plan_events].count("ai.request") == 3
    checks = [e["data"] for e in plan_events if e["type"] == "ai.validation"]
    assert [c["attempt"] for c in checks] == [0, 1, 2] and not any(c["ok"] for c in checks)
    assert all(c["raw_output"] and c["errors"] for c in checks)
    assert "agent" not in step_map(factory, run_id)


def test_transient_error_succeeds_after_one_retry(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = ai_settings(db_url, tmp_path, mock_ai_mode="transient_error")
    body = task("code_change", "Document README.md", verify="python3 -c 'import app'")
    run_id = enqueue(factory, settings, **body)
    drain(factory, settings, executor(settings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("done", None), run.error_message
    # One provider per AI step: each step's first call fails once (HTTP 529 from the mock) and is retried.
    responses = [e for e in events(settings, run_id) if e["type"] == "ai.response"]
    for step_id in ("plan", "agent"):
        retries = [e["data"]["retry_count"] for e in responses if e["step_id"] == step_id]
        assert retries[0] == 1 and set(retries[1:]) <= {0}
    assert run.telemetry["ai"]["retries"] == 2 and run.telemetry["ai"]["errors"] == 0


@pytest.mark.parametrize(
    ("operation", "code"), [("code_change", "AI_TIMEOUT"), ("docs", "TIME_BUDGET_EXCEEDED")]
)
def test_timeout_fails_the_step_within_its_limit(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session], operation: str, code: str
) -> None:
    settings = ai_settings(db_url, tmp_path, mock_ai_mode="timeout")
    run_id = enqueue(factory, settings, **task(operation, "Document README.md", budget=3))
    started = time.monotonic()
    drain(factory, settings, executor(settings, factory))
    assert time.monotonic() - started < 15
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", code)
    failed = [s for s in steps(factory, run_id) if s["status"] == "failed"]
    assert [s["step_id"] for s in failed] == ["plan" if operation == "code_change" else "agent"]


def test_analysis_writes_report_artifact_with_read_only_tools(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = ai_settings(db_url, tmp_path)
    run_id = enqueue(factory, settings, **task("analysis", "What does app.py return?"))
    drain(factory, settings, executor(settings, factory))
    assert run_row(factory, run_id).status == "done"
    start = next(e["data"] for e in events(settings, run_id) if e["type"] == "agent.start")
    assert set(start["tools"]) == {"read_file", "list_dir", "search", "git_diff", "finish"}
    report = (Path(settings.trace_root) / run_id / "report.md").read_text()
    assert "What does app.py return?" in report and "Mock agent" in report
    assert artifacts(factory, run_id)["report"].title == "report.md"
    assert "patch" not in artifacts(factory, run_id)


@pytest.mark.parametrize(
    ("inputs", "code"),
    [
        ({"max_turns": 2}, "AGENT_TURN_LIMIT"),
        ({"max_tokens": 1500}, "AGENT_TOKEN_LIMIT"),
        ({"max_cost_usd": 0.002}, "COST_LIMIT"),
    ],
)
def test_agent_limits_end_the_step_with_their_code(
    db_url: str,
    tmp_path: Path,
    factory: sessionmaker[Session],
    fake: FakeAnthropic,
    inputs: dict[str, Any],
    code: str,
) -> None:
    settings = claude_settings(db_url, tmp_path, fake)
    # 1000 prompt tokens a turn: the token limit is passed on turn 2, the cost ($0.002 = 1000 tokens at
    # $2/M) on turn 1; the script never finishes on its own.
    fake.enqueue(
        *[
            Reply([tool_use("list_dir", {"path": "."}, f"toolu_l{n}")], input_tokens=1000, output_tokens=1)
            for n in range(5)
        ]
    )
    run_id = enqueue(factory, settings, **task("docs", "List the files", **inputs))
    drain(factory, settings, executor(settings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", code)
    agent = step_map(factory, run_id)["agent"]
    assert agent["error_code"] == code and agent["output"]["stop_code"] == code
    stop = next(e["data"] for e in events(settings, run_id) if e["type"] == "agent.stop")
    assert stop["stop_code"] == code and stop["turns"] <= 2
    assert "diff_check" not in step_map(factory, run_id)


def test_cancel_stops_the_agent_before_its_next_model_call(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session], fake: FakeAnthropic
) -> None:
    settings = ai_settings(
        db_url,
        tmp_path,
        ai_provider="anthropic",
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake.url,
        worker_lease_seconds=3,
    )
    fake.enqueue(
        *[Reply([tool_use("list_dir", {"path": "."}, f"toolu_c{n}")], delay_s=0.3) for n in range(60)]
    )
    run_id = enqueue(factory, settings, **task("docs", "Keep listing"))
    worker = threading.Thread(target=drain, args=(factory, settings, executor(settings, factory)))
    worker.start()
    wait_for(lambda: run_row(factory, run_id).current_step == "agent" and len(fake.requests) >= 2)
    make_queue(factory, settings).cancel(run_id, actor=Actor("human", "alice"), note="stop")
    cancelled_at = time.monotonic()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 10
    assert run_row(factory, run_id).status == "cancelled"
    assert len(fake.requests) < 40
    assert [e["type"] for e in events(settings, run_id)][-1] == "run.stopped"
