"""AnthropicProvider with the real SDK against the local scripted Messages API server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.anthropic_server import (
    Fail,
    FakeAnthropic,
    Reply,
    overloaded,
    rate_limited,
    running_fake_anthropic,
    server_error,
    text,
    tool_use,
)
from worker.ai.anthropic_provider import AnthropicProvider
from worker.ai.generate import ai_generate
from worker.ai.providers import AIError, AIRequest, ToolSpec
from worker.ai.retry import RetryPolicy
from worker.ai.templates import PLAN_CODE_CHANGE_V1, PLAN_SCHEMA

API_KEY = "sk-ant-test-0123456789abcdef"
FAST = RetryPolicy(max_retries=3, base_delay_s=0.05, max_delay_s=0.2)
LIST_DIR = ToolSpec(
    "list_dir", "List a directory.", {"type": "object", "properties": {"path": {"type": "string"}}}
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with running_fake_anthropic() as server:
        yield server


def provider(fake: FakeAnthropic, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(
        api_key=API_KEY, base_url=fake.url, retry_policy=kwargs.pop("policy", FAST), **kwargs
    )


def request(timeout_s: float = 10.0) -> AIRequest:
    return AIRequest(
        model="claude-sonnet-5-5",
        system="be brief",
        messages=[{"role": "user", "content": "list the repo"}],
        tools=(LIST_DIR,),
        max_tokens=512,
        timeout_s=timeout_s,
        template_id="agent.system",
        template_version=1,
    )


def key_header_sent(headers: dict[str, str]) -> bool:
    return headers.get("x-api-key") == API_KEY or headers.get("authorization") == f"Bearer {API_KEY}"


@pytest.mark.parametrize("stream", [False, True])
def test_text_and_tool_use_non_streaming_and_streaming(fake: FakeAnthropic, stream: bool) -> None:
    fake.enqueue(
        Reply(
            [
                text("Let me look."),
                tool_use("list_dir", {"path": "src", "deep": [1, {"a": None}]}, "toolu_01"),
            ],
            input_tokens=321,
            output_tokens=45,
        )
    )
    with provider(fake, stream=stream) as p:
        response = p.complete(request())
    assert response.text == "Let me look."
    assert response.tool_uses == [
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "list_dir",
            "input": {"path": "src", "deep": [1, {"a": None}]},
        }
    ]
    assert response.stop_reason == "tool_use"
    assert (response.tokens_prompt, response.tokens_output) == (321, 45)
    assert response.retry_count == 0 and response.provider == "anthropic"
    assert response.model == "claude-sonnet-5-5"
    assert response.raw["id"].startswith("msg_fake_")
    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert key_header_sent(sent.headers)
    assert sent.body.get("stream", False) is stream
    assert sent.body["tools"][0]["name"] == "list_dir" and sent.body["system"] == "be brief"
    # The SDK must not retry on its own: our retry_count would lie.
    assert sent.headers.get("x-stainless-retry-count") == "0"


def test_rate_limit_with_retry_after_then_success(fake: FakeAnthropic) -> None:
    fake.enqueue(rate_limited("0.4"), Reply([text("ok")]))
    start = time.monotonic()
    with provider(fake) as p:
        response = p.complete(request())
    elapsed = time.monotonic() - start
    assert response.text == "ok" and response.retry_count == 1
    assert elapsed >= 0.4, "retry-after must be honoured"
    assert response.latency_ms >= 400
    assert len(fake.requests) == 2


def test_overloaded_529_backs_off_then_succeeds(fake: FakeAnthropic) -> None:
    fake.enqueue(overloaded(), overloaded(), Reply([text("fine")]))
    with provider(fake) as p:
        response = p.complete(request())
    assert response.text == "fine" and response.retry_count == 2
    assert len(fake.requests) == 3


def test_streaming_also_retries(fake: FakeAnthropic) -> None:
    fake.enqueue(overloaded(), Reply([text("streamed")]))
    with provider(fake, stream=True) as p:
        response = p.complete(request())
    assert response.text == "streamed" and response.retry_count == 1


def test_repeated_500_gives_provider_unavailable(fake: FakeAnthropic) -> None:
    fake.enqueue(*[server_error() for _ in range(4)])
    with provider(fake) as p, pytest.raises(AIError) as info:
        p.complete(request())
    assert info.value.code == "AI_PROVIDER_UNAVAILABLE"
    assert info.value.retry_count == 3
    assert len(fake.requests) == 4


def test_client_error_is_not_retried(fake: FakeAnthropic) -> None:
    fake.enqueue(Fail(400, "invalid_request_error", "messages: bad"))
    with provider(fake) as p, pytest.raises(AIError) as info:
        p.complete(request())
    assert info.value.code == "AI_REQUEST_REJECTED" and "messages: bad" in info.value.message
    assert len(fake.requests) == 1


def test_slow_response_times_out_within_the_limit(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply([text("too late")], delay_s=5))
    start = time.monotonic()
    with provider(fake) as p, pytest.raises(AIError) as info:
        p.complete(request(timeout_s=0.5))
    elapsed = time.monotonic() - start
    assert info.value.code == "AI_TIMEOUT"
    assert 0.4 <= elapsed < 2.0


def test_retry_after_beyond_the_deadline_fails_fast(fake: FakeAnthropic) -> None:
    fake.enqueue(rate_limited("30"))
    start = time.monotonic()
    with provider(fake) as p, pytest.raises(AIError) as info:
        p.complete(request(timeout_s=2.0))
    assert info.value.code == "AI_TIMEOUT"
    assert time.monotonic() - start < 1.0


def test_ai_generate_recovers_from_malformed_json_over_http(fake: FakeAnthropic) -> None:
    good = '{"steps": ["edit app.py"], "files": ["app.py"], "risks": [{"risk": "none", "severity": "low"}]}'
    fake.enqueue(
        Reply([text('{"steps": ["edit", }')]), rate_limited("0"), Reply([text(f"```json\n{good}\n```")])
    )
    events: list[tuple[str, dict[str, Any]]] = []
    with provider(fake) as p:
        plan = ai_generate(
            p,
            template=PLAN_CODE_CHANGE_V1,
            schema=PLAN_SCHEMA,
            variables={"repo": "a/b", "ref": "main", "objective": "o", "files": []},
            on_event=lambda k, d: events.append((k, d)),
        )
    assert plan["files"] == ["app.py"]
    validations = [d for k, d in events if k == "ai.validation"]
    assert [v["ok"] for v in validations] == [False, True]
    assert "not valid JSON" in validations[0]["errors"][0]
    assert [d["retry_count"] for k, d in events if k == "ai.response"] == [0, 1]
    # The correction turn carried the parse error back to the model.
    feedback = fake.requests[-1].body["messages"][-1]["content"]
    assert "did not satisfy the schema" in feedback and "not valid JSON" in feedback


def test_stream_trickling_past_the_deadline_times_out(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply([text("x" * 70)], event_delay_s=0.1))
    start = time.monotonic()
    with provider(fake, stream=True) as p, pytest.raises(AIError) as info:
        p.complete(request(timeout_s=0.5))
    assert info.value.code == "AI_TIMEOUT"
    assert time.monotonic() - start < 1.2


def test_error_event_mid_stream_is_retried(fake: FakeAnthropic) -> None:
    fake.enqueue(Reply([text("partial")], fail_mid_stream="overloaded_error"), Reply([text("whole")]))
    with provider(fake, stream=True) as p:
        response = p.complete(request())
    assert response.text == "whole" and response.retry_count == 1
    assert len(fake.requests) == 2
