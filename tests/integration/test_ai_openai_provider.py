"""OpenAIProvider over real HTTP against a scripted Chat Completions server; the agent loop on top."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.openai_server import Answer, running_fake_openai
from worker.ai.agent import AgentLimits, StopCode, run_agent
from worker.ai.openai_provider import OpenAIProvider
from worker.ai.retry import RetryPolicy

KEY = "sk-openai-test-key"


def test_agent_over_openai_function_calls(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("old line\n")
    script = [
        Answer(tool_calls=[("call_1", "list_dir", '{"path": "."}')]),
        Answer(status=429, retry_after="0"),
        Answer(
            tool_calls=[
                ("call_2", "edit_file", '{"path": "notes.md", "old_str": "old line", "new_str": "new line"}')
            ]
        ),
        Answer(tool_calls=[("call_3", "read_file", '{"path": ')]),  # malformed arguments
        Answer(content="All done.", tool_calls=[("call_4", "finish", '{"summary": "edited notes"}')]),
    ]
    events: list[tuple[str, dict[str, object]]] = []
    with (
        running_fake_openai(*script) as fake,
        OpenAIProvider(
            api_key=KEY, base_url=fake.url, retry_policy=RetryPolicy(base_delay_s=0.01)
        ) as provider,
    ):
        result = run_agent(
            provider,
            workspace=tmp_path,
            system_prompt="sys",
            objective="edit notes",
            limits=AgentLimits(),
            tools_enabled=("list_dir", "read_file", "edit_file", "finish"),
            on_event=lambda k, d: events.append((k, d)),
        )
    assert result.stop_code is StopCode.FINISHED and result.summary == "edited notes"
    assert (tmp_path / "notes.md").read_text() == "new line\n"
    assert [c.name for c in result.tool_calls] == ["list_dir", "edit_file", "read_file", "finish"]
    assert result.tool_calls[2].code == "INVALID_TOOL_INPUT"
    assert [d["retry_count"] for k, d in events if k == "ai.response"] == [0, 1, 0, 0]
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    assert all(r["path"] == "/v1/chat/completions" for r in fake.requests)
    third = fake.requests[2]["body"]["messages"]
    assert third[0] == {"role": "system", "content": "sys"}
    assert third[2]["tool_calls"][0]["function"] == {"name": "list_dir", "arguments": '{"path": "."}'}
    assert (
        third[3]["role"] == "tool"
        and third[3]["tool_call_id"] == "call_1"
        and "notes.md" in third[3]["content"]
    )
    assert fake.requests[0]["body"]["tools"][0]["type"] == "function"
    assert (result.tokens_prompt, result.tokens_output) == (400, 80)
