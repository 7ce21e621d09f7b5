"""The AI layer: providers, schema-checked generation, the tool-use agent loop, templates and pricing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.ai.anthropic_provider import AnthropicProvider

from worker.ai.agent import AgentLimits, AgentResult, StopCode, ToolCallRecord, run_agent
from worker.ai.factory import build_provider
from worker.ai.generate import ai_generate
from worker.ai.mock_provider import MockMode, MockProvider
from worker.ai.pricing import estimate_cost_usd
from worker.ai.providers import (
    DEFAULT_MODEL,
    AICode,
    AIError,
    AIProvider,
    AIRequest,
    AIResponse,
    ToolSpec,
)
from worker.ai.replay_provider import RecordedCall, ReplayProvider
from worker.ai.retry import RetryPolicy
from worker.ai.templates import (
    BUILTIN_TEMPLATES,
    PLAN_SCHEMA,
    Template,
    TemplateRegistry,
    build_system_prompt,
)
from worker.ai.toolbox import ALL_TOOLS, READ_ONLY_TOOLS
from worker.ai.tools import ToolError, ToolRunResult, Workspace

__all__ = [
    "ALL_TOOLS",
    "BUILTIN_TEMPLATES",
    "DEFAULT_MODEL",
    "PLAN_SCHEMA",
    "READ_ONLY_TOOLS",
    "AICode",
    "AIError",
    "AIProvider",
    "AIRequest",
    "AIResponse",
    "AgentLimits",
    "AgentResult",
    "AnthropicProvider",
    "MockMode",
    "MockProvider",
    "RecordedCall",
    "ReplayProvider",
    "RetryPolicy",
    "StopCode",
    "Template",
    "TemplateRegistry",
    "ToolCallRecord",
    "ToolError",
    "ToolRunResult",
    "ToolSpec",
    "Workspace",
    "ai_generate",
    "build_provider",
    "build_system_prompt",
    "estimate_cost_usd",
    "run_agent",
]


def __getattr__(name: str) -> Any:
    # The anthropic SDK takes seconds to import; only a process that talks to it pays for that.
    if name == "AnthropicProvider":
        from worker.ai.anthropic_provider import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(name)
