"""Versioned templates, system prompt assembly, pricing and provider selection."""

from __future__ import annotations

import ast
from pathlib import Path

import anthropic
import pytest

from worker.ai.anthropic_provider import AnthropicProvider
from worker.ai.factory import build_provider
from worker.ai.mock_provider import MockProvider
from worker.ai.openai_provider import OpenAIProvider
from worker.ai.pricing import FALLBACK_PRICE, PRICES, estimate_cost_usd, price_for
from worker.ai.providers import DEFAULT_MODEL, AIError
from worker.ai.templates import (
    BUILTIN_TEMPLATES,
    Template,
    TemplateError,
    TemplateRegistry,
    build_system_prompt,
)


def test_registry_latest_and_exact_versions() -> None:
    v2 = Template("agent.system", 2, "v2 {{objective}}")
    registry = TemplateRegistry([*BUILTIN_TEMPLATES, v2])
    assert registry.get("agent.system") is v2
    assert registry.get("agent.system", 1).version == 1
    assert registry.get_ref("agent.system@1").ref == "agent.system@1"
    assert registry.get_ref("analysis.report").id == "analysis.report"
    with pytest.raises(TemplateError) as info:
        registry.get("nope")
    assert info.value.code == "TEMPLATE_NOT_FOUND"
    with pytest.raises(TemplateError):
        TemplateRegistry([v2, v2])


def test_render_requires_every_variable() -> None:
    template = Template("t", 1, "Hi {{ name }}, files: {{files}}")
    assert template.render({"name": "Ada", "files": ["a.py"]}) == 'Hi Ada, files: [\n  "a.py"\n]'
    with pytest.raises(TemplateError) as info:
        template.render({"name": "Ada"})
    assert info.value.code == "TEMPLATE_VARIABLE_MISSING"


def test_system_prompt_from_context_and_doctrine() -> None:
    registry = TemplateRegistry(BUILTIN_TEMPLATES)
    text, template = build_system_prompt(
        registry,
        context={
            "objective": "Fix the typo",
            "operation": "docs",
            "target": {"repo": "acme/app", "ref": "dev"},
            "issue": 42,
        },
        doctrine={"verify": "make test", "docs_only": True},
        tools=["read_file", "finish"],
    )
    assert template.ref == "agent.system@1"
    assert "acme/app (ref dev)" in text and "objective: Fix the typo" in text
    assert "- verify: make test" in text and "- issue: 42" in text
    assert "read_file, finish" in text and "{{" not in text


def _sdk_models() -> set[str]:
    source = Path(anthropic.__file__).parent.joinpath("types", "model_param.py").read_text()
    return {
        n.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_default_model_is_known_to_the_sdk_and_not_deprecated() -> None:
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    assert DEFAULT_MODEL in _sdk_models()
    assert DEFAULT_MODEL not in DEPRECATED_MODELS
    assert DEFAULT_MODEL in PRICES


def test_every_priced_claude_model_is_an_sdk_model() -> None:
    models = _sdk_models()
    assert all(name in models for name in PRICES if name.startswith("claude-"))


def test_cost_estimates() -> None:
    assert estimate_cost_usd("claude-sonnet-5-5", 1_000_000, 100_000) == pytest.approx(3.0)
    assert price_for("claude-haiku-4-5-20251001") == PRICES["claude-haiku-4-5"]
    assert price_for("some-future-model") == FALLBACK_PRICE
    assert estimate_cost_usd("mock", 10**6, 10**6) == 0.0


def test_build_provider_selection() -> None:
    assert isinstance(build_provider(), MockProvider)
    mock = build_provider(mock_seed=4, mock_mode="timeout")
    assert isinstance(mock, MockProvider) and mock.seed == 4 and mock.mode == "timeout"
    real = build_provider(api_key="sk-test", base_url="http://127.0.0.1:9", model="claude-opus-5-5")
    assert isinstance(real, AnthropicProvider) and real.default_model == "claude-opus-5-5"
    real.close()
    openai = build_provider(provider="openai", api_key="sk-o", base_url="http://127.0.0.1:9/v1")
    assert isinstance(openai, OpenAIProvider) and openai.name == "openai"
    openai.close()
    with pytest.raises(AIError) as info:
        build_provider(provider="anthropic")
    assert info.value.code == "AI_CONFIG_INVALID"
    with pytest.raises(AIError):
        build_provider(mock_mode="chaos")
