"""An OpenAI Chat Completions provider behind the same interface (plain HTTP; optional backend)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from worker.ai.providers import AICode, AIError, AIRequest, ContentBlock, Message
from worker.ai.retry import RetryPolicy, TransientAIError
from worker.ai.wire import RetryingProvider

DEFAULT_OPENAI_MODEL = "gpt-5"
_STOP_REASONS = {
    "tool_calls": "tool_use",
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def to_openai_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Anthropic-style messages as Chat Completions messages (tool_result blocks become `tool` messages)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        blocks = [b for b in content or [] if isinstance(b, dict)]
        texts = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        if role == "assistant":
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": texts or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for b in blocks:
            if b.get("type") == "tool_result":
                body = str(b.get("content", ""))
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": b.get("tool_use_id"),
                        "content": ("ERROR: " + body) if b.get("is_error") else body,
                    }
                )
        if texts:
            out.append({"role": "user", "content": texts})
    return out


def to_anthropic_raw(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions response in Messages API shape, so telemetry and replay treat it alike."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[ContentBlock] = []
    if message.get("content"):
        content.append({"type": "text", "text": str(message["content"])})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError:
            # Malformed arguments reach the tool as-is and fail its input schema: the model sees why.
            arguments = {"_unparsed_arguments": function.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
        )
    usage = body.get("usage") or {}
    return {
        "id": body.get("id"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": _STOP_REASONS.get(str(choice.get("finish_reason")), str(choice.get("finish_reason"))),
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


class OpenAIProvider(RetryingProvider[httpx.Client]):
    """Calls `POST {base_url}/chat/completions` with function tools; retries done here, like Anthropic."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        default_model: str = DEFAULT_OPENAI_MODEL,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.default_model = default_model
        self._policy = retry_policy or RetryPolicy()
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"authorization": f"Bearer {api_key}"}, timeout=600.0
        )

    def _attempt(self, request: AIRequest, remaining_s: float) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.system, request.messages),
            "max_completion_tokens": request.max_tokens,
        }
        if request.tools:
            payload["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                }
                for t in request.tools
            ]
        try:
            response = self._client.post("/chat/completions", json=payload, timeout=remaining_s)
        except httpx.TimeoutException as exc:
            raise AIError(AICode.AI_TIMEOUT, f"no answer within {remaining_s:.1f}s") from exc
        except httpx.TransportError as exc:
            raise TransientAIError(f"connection error: {exc}") from exc
        status = response.status_code
        if status in (408, 409, 429) or status >= 500:
            retry_after = response.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            raise TransientAIError(f"HTTP {status}", retry_after_s=wait)
        if status >= 400:
            raise AIError(AICode.AI_REQUEST_REJECTED, f"HTTP {status}: {response.text[:500]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise TransientAIError("the response body is not JSON") from exc
        return to_anthropic_raw(body)
