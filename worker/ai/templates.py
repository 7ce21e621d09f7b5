"""Versioned prompt templates; every model call records the id and version it was built from."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policy.errors import ControlTowerError

_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


class TemplateError(ControlTowerError):
    """A template is unknown or a variable is missing."""


@dataclass(frozen=True)
class Template:
    """A prompt text with `{{name}}` placeholders, identified by id and version."""

    id: str
    version: int
    text: str

    @property
    def ref(self) -> str:
        """`id@version`."""
        return f"{self.id}@{self.version}"

    def variables(self) -> set[str]:
        """The placeholder names the text uses."""
        return set(_PLACEHOLDER.findall(self.text))

    def render(self, variables: Mapping[str, Any]) -> str:
        """The text with every placeholder replaced; non-strings are JSON-encoded."""
        missing = self.variables() - set(variables)
        if missing:
            raise TemplateError("TEMPLATE_VARIABLE_MISSING", f"{self.ref} needs {', '.join(sorted(missing))}")

        def value(match: re.Match[str]) -> str:
            item = variables[match.group(1)]
            return item if isinstance(item, str) else json.dumps(item, indent=2, sort_keys=True, default=str)

        return _PLACEHOLDER.sub(value, self.text)


class TemplateRegistry:
    """Templates by id and version; `get(id)` is the newest version."""

    def __init__(self, templates: Iterable[Template]) -> None:
        self._by_key: dict[tuple[str, int], Template] = {}
        for template in templates:
            key = (template.id, template.version)
            if key in self._by_key:
                raise TemplateError("TEMPLATE_DUPLICATE", f"{template.ref} registered twice")
            self._by_key[key] = template

    def get(self, template_id: str, version: int | None = None) -> Template:
        """One template; the newest version when none is given."""
        if version is not None:
            found = self._by_key.get((template_id, version))
        else:
            versions = [t for (i, _), t in self._by_key.items() if i == template_id]
            found = max(versions, key=lambda t: t.version) if versions else None
        if found is None:
            raise TemplateError("TEMPLATE_NOT_FOUND", f"no template {template_id}@{version or 'latest'}")
        return found

    def get_ref(self, ref: str) -> Template:
        """A template by `id@version` (or bare id for the newest)."""
        template_id, _, version = ref.partition("@")
        return self.get(template_id, int(version) if version else None)


AGENT_SYSTEM_V1 = Template(
    "agent.system",
    1,
    """You are Control Tower's coding agent working in a checked-out repository.

Task
- operation: {{operation}}
- repository: {{repo}} (ref {{ref}})
- objective: {{objective}}

Context
{{context}}

Repository doctrine (rules set by the repository owners; follow them)
{{doctrine}}

Rules
- Work only inside the workspace; paths are relative to its root.
- Tools available: {{tools}}. Use edit_file for small changes (old_str must match exactly once).
- Never change .git/ or .github/workflows/; such writes are refused.
- There is no network and there are no credentials in the environment; do not look for any.
- When done, call finish with a short summary of what you changed and why (Markdown).
""",
)

PLAN_CODE_CHANGE_V1 = Template(
    "plan.code_change",
    1,
    """Plan a code change for the repository {{repo}} (ref {{ref}}).

Objective: {{objective}}

Files in the repository (may be truncated):
{{files}}

Return a plan: the ordered steps, the files you expect to touch and the risks.
""",
)

ANALYSIS_REPORT_V1 = Template(
    "analysis.report",
    1,
    """Analyse the repository {{repo}} (ref {{ref}}) to answer: {{objective}}

You have read-only tools. Do not try to change anything. Read what you need, then call finish with the
report in Markdown: a one-paragraph answer first, then findings with file references (path:line).
""",
)

BUILTIN_TEMPLATES: tuple[Template, ...] = (AGENT_SYSTEM_V1, PLAN_CODE_CHANGE_V1, ANALYSIS_REPORT_V1)

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["steps", "files", "risks"],
    "additionalProperties": False,
    "properties": {
        "steps": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "files": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "risks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["risk", "severity"],
                "additionalProperties": False,
                "properties": {
                    "risk": {"type": "string", "minLength": 1},
                    "severity": {"enum": ["low", "medium", "high"]},
                },
            },
        },
    },
}


def _bullets(data: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    chosen = list(keys) if keys is not None else sorted(data)
    lines = []
    for key in chosen:
        if key in data and data[key] not in (None, "", [], {}):
            value = data[key]
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            lines.append(f"- {key}: {shown}")
    return "\n".join(lines) if lines else "- (none)"


def build_system_prompt(
    registry: TemplateRegistry,
    *,
    context: Mapping[str, Any],
    doctrine: Mapping[str, Any],
    tools: Iterable[str],
    template_ref: str = "agent.system@1",
) -> tuple[str, Template]:
    """The agent's system prompt from a ContextPacket-like and a DoctrineRef-like dict."""
    template = registry.get_ref(template_ref)
    target = context.get("target") if isinstance(context.get("target"), Mapping) else {}
    assert isinstance(target, Mapping)
    other = {k: v for k, v in context.items() if k not in {"objective", "operation", "target", "repo", "ref"}}
    text = template.render(
        {
            "operation": str(context.get("operation", "code_change")),
            "repo": str(context.get("repo") or target.get("repo") or "(unknown)"),
            "ref": str(context.get("ref") or target.get("ref") or "HEAD"),
            "objective": str(context.get("objective", "")),
            "context": _bullets(other),
            "doctrine": _bullets(doctrine),
            "tools": ", ".join(tools),
        }
    )
    return text, template
