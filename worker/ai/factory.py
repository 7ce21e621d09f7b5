"""Choose and build the provider from configuration values (the worker passes its settings in)."""

from __future__ import annotations

from worker.ai.mock_provider import MockMode, MockProvider
from worker.ai.openai_provider import DEFAULT_OPENAI_MODEL, OpenAIProvider
from worker.ai.providers import DEFAULT_MODEL, AICode, AIError, AIProvider
from worker.ai.retry import RetryPolicy


def build_provider(
    *,
    provider: str = "auto",
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    mock_seed: int = 0,
    mock_mode: str = "success",
    stream: bool = False,
    retry_policy: RetryPolicy | None = None,
) -> AIProvider:
    """`auto` picks anthropic when an API key is given, else the deterministic mock; `openai` is opt-in."""
    choice = provider
    if choice == "auto":
        choice = "anthropic" if api_key else "mock"
    if choice == "anthropic":
        if not api_key:
            raise AIError(AICode.AI_CONFIG_INVALID, "the anthropic provider needs ANTHROPIC_API_KEY")
        from worker.ai.anthropic_provider import AnthropicProvider  # the SDK is slow to import

        return AnthropicProvider(
            api_key=api_key,
            base_url=base_url or None,
            default_model=model or DEFAULT_MODEL,
            stream=stream,
            retry_policy=retry_policy,
        )
    if choice == "openai":
        if not api_key:
            raise AIError(AICode.AI_CONFIG_INVALID, "the openai provider needs an API key")
        return OpenAIProvider(
            api_key=api_key,
            base_url=base_url or "https://api.openai.com/v1",
            default_model=model or DEFAULT_OPENAI_MODEL,
            retry_policy=retry_policy,
        )
    if choice == "mock":
        try:
            mode = MockMode(mock_mode)
        except ValueError as exc:
            raise AIError(AICode.AI_CONFIG_INVALID, f"unknown MOCK_AI_MODE {mock_mode!r}") from exc
        return MockProvider(seed=mock_seed, mode=mode, retry_policy=retry_policy)
    raise AIError(AICode.AI_CONFIG_INVALID, f"unknown AI provider {provider!r}")
