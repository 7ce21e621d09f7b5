"""The Anthropic Messages API provider (official SDK; retries done here so telemetry is exact)."""

from __future__ import annotations

import time
from typing import Any, cast

import anthropic

from worker.ai.providers import DEFAULT_MODEL, AICode, AIError, AIRequest
from worker.ai.retry import RetryPolicy, TransientAIError
from worker.ai.wire import RetryingProvider, blocks_from_raw, response_from_raw

__all__ = ["AnthropicProvider", "blocks_from_raw", "response_from_raw"]

# Status codes the API documents as transient: request timeout, lock conflict, rate limit, overload, 5xx.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
# A stream that already answered 200 can still fail with an `error` event; its type says if it is transient.
_TRANSIENT_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


def _retry_after_s(headers: Any) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `retry-after` (seconds; dates ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


class AnthropicProvider(RetryingProvider[anthropic.Anthropic]):
    """Calls the Messages API through the official SDK, non-streaming or streaming."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str = DEFAULT_MODEL,
        stream: bool = False,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.default_model = default_model
        self._stream = stream
        self._policy = retry_policy or RetryPolicy()
        # max_retries=0: the SDK must not retry behind our back, or retry_count and latency would lie.
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=600.0)

    def _attempt(self, request: AIRequest, remaining_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
            "timeout": remaining_s,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [t.to_dict() for t in request.tools]
        messages = cast(Any, self._client.messages)
        deadline = time.monotonic() + remaining_s
        try:
            if self._stream:
                with messages.stream(**kwargs) as stream:
                    # The SDK timeout bounds each read; a trickling stream must still end at the deadline.
                    for _event in stream:
                        if time.monotonic() > deadline:
                            raise AIError(AICode.AI_TIMEOUT, f"stream still running after {remaining_s:.1f}s")
                    message = stream.get_final_message()
            else:
                message = messages.create(**kwargs)
        except anthropic.APITimeoutError as exc:
            raise AIError(AICode.AI_TIMEOUT, f"no answer within {remaining_s:.1f}s") from exc
        except anthropic.APIConnectionError as exc:
            raise TransientAIError(f"connection error: {exc}") from exc
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            if status in _RETRYABLE_STATUS or status >= 500 or str(exc.type) in _TRANSIENT_TYPES:
                raise TransientAIError(
                    f"HTTP {status} {exc.type or ''}".strip(),
                    retry_after_s=_retry_after_s(exc.response.headers),
                ) from exc
            raise AIError(
                AICode.AI_REQUEST_REJECTED, f"HTTP {status}: {exc.api_message or exc.message}"
            ) from exc
        return cast(dict[str, Any], message.to_dict(mode="json"))
