"""One model call with its `ai.request` / `ai.response` / `ai.error` events and cost estimate."""

from __future__ import annotations

from typing import Any

from worker.ai.pricing import estimate_cost_usd
from worker.ai.providers import AIError, AIProvider, AIRequest, AIResponse, EventSink, last_user_tool_results


def _ignore(_kind: str, _data: dict[str, Any]) -> None:
    return


def call_model(
    provider: AIProvider, request: AIRequest, on_event: EventSink | None, **extra: Any
) -> tuple[AIResponse, float]:
    """Call the provider, emitting telemetry; return the response and its estimated cost in USD.

    Events carry no credentials: providers hold the API key and never put it in requests or responses.
    """
    emit = on_event or _ignore
    base: dict[str, Any] = {
        "provider": provider.name,
        "model": request.model,
        "template_id": request.template_id,
        "template_version": request.template_version,
        **extra,
    }
    emit(
        "ai.request",
        {
            **base,
            "message_count": len(request.messages),
            "tools": [t.name for t in request.tools],
            "max_tokens": request.max_tokens,
            "timeout_s": round(request.timeout_s, 3),
            "tool_results": last_user_tool_results(request.messages),
        },
    )
    try:
        response = provider.complete(request)
    except AIError as exc:
        emit("ai.error", {**base, "code": exc.code, "message": exc.message, "retry_count": exc.retry_count})
        raise
    cost = estimate_cost_usd(response.model, response.tokens_prompt, response.tokens_output)
    emit(
        "ai.response",
        {
            **base,
            "provider": response.provider,
            "model": response.model,
            "tokens_prompt": response.tokens_prompt,
            "tokens_output": response.tokens_output,
            "latency_ms": round(response.latency_ms, 3),
            "retry_count": response.retry_count,
            "stop_reason": response.stop_reason,
            "cost_usd": round(cost, 8),
            "raw": response.raw,
        },
    )
    return response, cost
