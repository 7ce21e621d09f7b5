"""The Messages API wire shapes shared by every provider (pure; no SDK import)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from worker.ai.providers import AIRequest, AIResponse, ContentBlock
from worker.ai.retry import RetryPolicy, call_with_retries


def blocks_from_raw(raw_content: list[Any]) -> list[ContentBlock]:
    """Content blocks in the shape the API accepts back in the next request."""
    blocks: list[ContentBlock] = []
    for item in raw_content:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(item.get("text", ""))})
        elif kind == "tool_use":
            blocks.append(
                {
                    "type": "tool_use",
                    "id": item.get("id"),
                    "name": item.get("name"),
                    "input": item.get("input"),
                }
            )
        else:
            blocks.append({k: v for k, v in item.items() if v is not None})
    return blocks


def response_from_raw(
    raw: dict[str, Any], *, provider: str, latency_ms: float, retry_count: int, fallback_model: str
) -> AIResponse:
    """An AIResponse from a Messages API response body."""
    usage = raw.get("usage") or {}
    prompt = int(usage.get("input_tokens") or 0)
    prompt += int(usage.get("cache_creation_input_tokens") or 0) + int(
        usage.get("cache_read_input_tokens") or 0
    )
    return AIResponse(
        content=blocks_from_raw(list(raw.get("content") or [])),
        stop_reason=str(raw.get("stop_reason") or ""),
        tokens_prompt=prompt,
        tokens_output=int(usage.get("output_tokens") or 0),
        latency_ms=latency_ms,
        retry_count=retry_count,
        model=str(raw.get("model") or fallback_model),
        provider=provider,
        raw=raw,
    )


class _Closable(Protocol):
    def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Closable)


class RetryingProvider(Generic[ClientT]):
    """A provider over an HTTP client: `complete()` retries `_attempt()` within the request's time limit."""

    name: str
    _client: ClientT
    _policy: RetryPolicy

    def _attempt(self, request: AIRequest, remaining_s: float) -> dict[str, Any]:
        raise NotImplementedError

    def complete(self, request: AIRequest) -> AIResponse:
        """One call with bounded retries inside the request's time limit."""
        start = time.monotonic()
        raw, retries = call_with_retries(
            lambda remaining: self._attempt(request, remaining),
            policy=self._policy,
            deadline=start + request.timeout_s,
        )
        return response_from_raw(
            raw,
            provider=self.name,
            latency_ms=(time.monotonic() - start) * 1000,
            retry_count=retries,
            fallback_model=request.model,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
