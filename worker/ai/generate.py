"""`ai_generate`: a JSON answer checked against a JSON Schema, with bounded corrective retries."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from worker.ai.providers import AICode, AIError, AIProvider, AIRequest, EventSink, Message
from worker.ai.telemetry import call_model
from worker.ai.templates import Template

GENERATE_SYSTEM = "You produce exactly one JSON document and nothing else. No prose, no comments."
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)


def _ignore(_kind: str, _data: dict[str, Any]) -> None:
    return


def parse_json_answer(text: str) -> Any:
    """The JSON value in a model answer, tolerating ```json fences and prose around one object."""
    stripped = text.strip()
    fenced = _FENCE.search(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if 0 <= start < end:
            return json.loads(stripped[start : end + 1])
        raise


def validation_errors(text: str, validator: Draft202012Validator) -> tuple[Any, list[str]]:
    """The parsed document and a list of readable problems (empty when valid)."""
    try:
        doc = parse_json_answer(text)
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
    problems = [
        f"{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    ][:20]
    if not problems and not isinstance(doc, dict):
        problems = ["(root): the answer must be a JSON object"]
    return doc, problems


def ai_generate(
    provider: AIProvider,
    *,
    template: Template,
    variables: Mapping[str, Any],
    schema: Mapping[str, Any],
    model: str | None = None,
    max_retries: int = 2,
    max_tokens: int = 4096,
    timeout_s: float = 120.0,
    on_event: EventSink | None = None,
) -> dict[str, Any]:
    """Render the template, ask for JSON, validate; after `max_retries` corrections raise AIError.

    Codes: AI_SCHEMA_VALIDATION_FAILED (last raw output attached), AI_TIMEOUT (whole call, all attempts),
    AI_PROVIDER_UNAVAILABLE (transient errors outlasted the provider's retries), AI_CONFIG_INVALID.
    """
    emit = on_event or _ignore
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise AIError(AICode.AI_CONFIG_INVALID, f"the output schema is invalid: {exc.message}") from exc
    validator = Draft202012Validator(dict(schema))
    prompt = (
        template.render(variables)
        + "\n\nAnswer with a single JSON object that satisfies this JSON Schema (draft 2020-12):\n```json\n"
        + json.dumps(schema, indent=2, sort_keys=True)
        + "\n```\nReply with the JSON only."
    )
    messages: list[Message] = [{"role": "user", "content": prompt}]
    deadline = time.monotonic() + timeout_s
    last_raw = ""
    problems: list[str] = []
    for attempt in range(max_retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AIError(
                AICode.AI_TIMEOUT, f"ai_generate ran past {timeout_s:.1f}s", raw_output=last_raw or None
            )
        request = AIRequest(
            model=model or provider.default_model,
            system=GENERATE_SYSTEM,
            messages=list(messages),
            max_tokens=max_tokens,
            timeout_s=remaining,
            template_id=template.id,
            template_version=template.version,
            response_schema=schema,
        )
        response, _cost = call_model(provider, request, emit, attempt=attempt)
        last_raw = response.text
        doc, problems = validation_errors(last_raw, validator)
        emit(
            "ai.validation",
            {
                "attempt": attempt,
                "ok": not problems,
                "errors": problems,
                "template_id": template.id,
                "template_version": template.version,
                **({"raw_output": last_raw} if problems else {}),
            },
        )
        if not problems:
            return dict(doc)
        messages.append({"role": "assistant", "content": last_raw or "(empty answer)"})
        messages.append(
            {
                "role": "user",
                "content": "Your answer did not satisfy the schema:\n- "
                + "\n- ".join(problems)
                + "\nReply with the corrected JSON object only.",
            }
        )
    raise AIError(
        AICode.AI_SCHEMA_VALIDATION_FAILED,
        f"no valid answer after {max_retries + 1} attempts; last problems: {'; '.join(problems[:5])}",
        raw_output=last_raw,
        attempts=max_retries + 1,
    )
