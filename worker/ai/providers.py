"""The provider interface: one request/response shape for every model backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from policy.errors import ControlTowerError

# Anthropic-style JSON blocks: {"type": "text", "text": ...}, {"type": "tool_use", "id", "name", "input"},
# {"type": "tool_result", "tool_use_id", "content", "is_error"}. Plain dicts so they replay byte for byte.
ContentBlock = dict[str, Any]
Message = dict[str, Any]
EventSink = Callable[[str, dict[str, Any]], None]

DEFAULT_MODEL = "claude-sonnet-5-5"


class AICode(StrEnum):
    """Stable codes for every way a model call can fail."""

    AI_TIMEOUT = "AI_TIMEOUT"
    AI_PROVIDER_UNAVAILABLE = "AI_PROVIDER_UNAVAILABLE"
    AI_REQUEST_REJECTED = "AI_REQUEST_REJECTED"
    AI_SCHEMA_VALIDATION_FAILED = "AI_SCHEMA_VALIDATION_FAILED"
    AI_REPLAY_DIVERGED = "AI_REPLAY_DIVERGED"
    AI_REPLAY_EXHAUSTED = "AI_REPLAY_EXHAUSTED"
    AI_CONFIG_INVALID = "AI_CONFIG_INVALID"


class AIError(ControlTowerError):
    """A model call failed; `raw_output` keeps the last model text when there was one."""

    http_status = 502

    def __init__(
        self,
        code: AICode,
        message: str | None = None,
        *,
        raw_output: str | None = None,
        retry_count: int = 0,
        attempts: int = 0,
    ) -> None:
        super().__init__(code.value, message)
        self.ai_code = code
        self.raw_output = raw_output
        self.retry_count = retry_count
        self.attempts = attempts


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description and a JSON Schema for its input."""

    name: str
    description: str
    input_schema: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The Anthropic `tools` entry."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class AIRequest:
    """One model call; template id and version travel with it for telemetry."""

    model: str
    system: str
    messages: list[Message]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    timeout_s: float = 120.0
    template_id: str = ""
    template_version: int = 0
    # Set by ai_generate: the schema the answer must satisfy (the mock builds its answer from it).
    response_schema: Mapping[str, Any] | None = None


@dataclass
class AIResponse:
    """What a provider answered, with exact accounting of tokens, latency and retries."""

    content: list[ContentBlock]
    stop_reason: str
    tokens_prompt: int
    tokens_output: int
    latency_ms: float
    retry_count: int
    model: str
    provider: str
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All text blocks joined."""
        return "".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")

    @property
    def tool_uses(self) -> list[ContentBlock]:
        """The tool_use blocks in order."""
        return [b for b in self.content if b.get("type") == "tool_use"]


@runtime_checkable
class AIProvider(Protocol):
    """A model backend: Anthropic, the deterministic mock, or a replay of a recorded run."""

    name: str
    default_model: str

    def complete(self, request: AIRequest) -> AIResponse:
        """Answer one request or raise AIError with a stable code."""
        ...


def last_user_tool_results(messages: list[Message]) -> list[dict[str, Any]]:
    """Id and error flag of each tool_result in the last user message (for replay checks)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            return []
        return [
            {"tool_use_id": b.get("tool_use_id"), "is_error": bool(b.get("is_error", False))}
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
    return []
