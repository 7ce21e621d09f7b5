"""ai_generate with the mock provider: schema checks, corrective retries, transient errors, timeouts."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from worker.ai.generate import ai_generate, parse_json_answer
from worker.ai.mock_provider import MockProvider
from worker.ai.providers import AIError
from worker.ai.schema_gen import generate_valid, generate_violation
from worker.ai.templates import PLAN_CODE_CHANGE_V1, PLAN_SCHEMA

VARS = {"repo": "acme/app", "ref": "main", "objective": "Add a health endpoint", "files": ["app.py"]}

Events = list[tuple[str, dict[str, Any]]]


def collect() -> tuple[Events, Any]:
    events: Events = []
    return events, lambda kind, data: events.append((kind, data))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_success_returns_a_document_that_satisfies_the_schema(seed: int) -> None:
    events, sink = collect()
    plan = ai_generate(
        MockProvider(seed=seed),
        template=PLAN_CODE_CHANGE_V1,
        variables=VARS,
        schema=PLAN_SCHEMA,
        on_event=sink,
    )
    Draft202012Validator(PLAN_SCHEMA).validate(plan)
    assert [k for k, _ in events] == ["ai.request", "ai.response", "ai.validation"]
    response = events[1][1]
    for key in (
        "provider",
        "model",
        "template_id",
        "template_version",
        "tokens_prompt",
        "tokens_output",
        "latency_ms",
        "retry_count",
        "stop_reason",
        "cost_usd",
    ):
        assert key in response, key
    assert (response["template_id"], response["template_version"]) == ("plan.code_change", 1)
    assert response["provider"] == "mock" and response["retry_count"] == 0


def test_same_seed_same_answer_different_seed_different_answer() -> None:
    def run(seed: int) -> dict[str, Any]:
        return ai_generate(
            MockProvider(seed=seed), template=PLAN_CODE_CHANGE_V1, variables=VARS, schema=PLAN_SCHEMA
        )

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_schema_violation_retries_exactly_twice_then_fails_with_the_raw_output() -> None:
    events, sink = collect()
    with pytest.raises(AIError) as info:
        ai_generate(
            MockProvider(mode="schema_violation"),
            template=PLAN_CODE_CHANGE_V1,
            variables=VARS,
            schema=PLAN_SCHEMA,
            on_event=sink,
        )
    assert info.value.code == "AI_SCHEMA_VALIDATION_FAILED"
    assert info.value.attempts == 3
    assert [k for k, _ in events].count("ai.request") == 3
    validations = [d for k, d in events if k == "ai.validation"]
    assert [v["ok"] for v in validations] == [False, False, False]
    assert info.value.raw_output is not None
    assert not Draft202012Validator(PLAN_SCHEMA).is_valid(parse_json_answer(info.value.raw_output))
    assert validations[-1]["raw_output"] == info.value.raw_output
    # The validation errors were fed back to the model on each retry.
    third_request_messages = 5
    assert [d["message_count"] for k, d in events if k == "ai.request"] == [1, 3, third_request_messages]


def test_max_retries_zero_means_one_call() -> None:
    events, sink = collect()
    with pytest.raises(AIError):
        ai_generate(
            MockProvider(mode="schema_violation"),
            template=PLAN_CODE_CHANGE_V1,
            variables=VARS,
            schema=PLAN_SCHEMA,
            max_retries=0,
            on_event=sink,
        )
    assert [k for k, _ in events].count("ai.request") == 1


def test_transient_error_succeeds_after_one_retry() -> None:
    events, sink = collect()
    provider = MockProvider(mode="transient_error")
    plan = ai_generate(
        provider, template=PLAN_CODE_CHANGE_V1, variables=VARS, schema=PLAN_SCHEMA, on_event=sink
    )
    assert Draft202012Validator(PLAN_SCHEMA).is_valid(plan)
    response = next(d for k, d in events if k == "ai.response")
    assert response["retry_count"] == 1
    # Only the first call of the provider fails; the next one needs no retry.
    events2, sink2 = collect()
    ai_generate(provider, template=PLAN_CODE_CHANGE_V1, variables=VARS, schema=PLAN_SCHEMA, on_event=sink2)
    assert next(d for k, d in events2 if k == "ai.response")["retry_count"] == 0


def test_timeout_mode_fails_within_the_limit() -> None:
    events, sink = collect()
    start = time.monotonic()
    with pytest.raises(AIError) as info:
        ai_generate(
            MockProvider(mode="timeout"),
            template=PLAN_CODE_CHANGE_V1,
            variables=VARS,
            schema=PLAN_SCHEMA,
            timeout_s=0.3,
            on_event=sink,
        )
    elapsed = time.monotonic() - start
    assert info.value.code == "AI_TIMEOUT"
    assert 0.25 <= elapsed < 1.5
    assert [k for k, _ in events] == ["ai.request", "ai.error"]
    assert events[1][1]["code"] == "AI_TIMEOUT"


def test_invalid_schema_is_a_configuration_error() -> None:
    with pytest.raises(AIError) as info:
        ai_generate(MockProvider(), template=PLAN_CODE_CHANGE_V1, variables=VARS, schema={"type": "nonsense"})
    assert info.value.code == "AI_CONFIG_INVALID"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Here you go:\n```\n{"a": [1, 2]}\n```\nThanks', {"a": [1, 2]}),
        ('Sure! {"a": {"b": 2}} hope that helps', {"a": {"b": 2}}),
    ],
)
def test_parse_json_answer_tolerates_fences_and_prose(text: str, expected: dict[str, Any]) -> None:
    assert parse_json_answer(text) == expected


def test_parse_json_answer_rejects_malformed() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json_answer('{"a": 1,,}')


SCHEMAS: list[dict[str, Any]] = [
    PLAN_SCHEMA,
    {
        "type": "object",
        "required": ["n", "tags"],
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "tags": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"enum": ["x", "y"]}},
            "name": {"type": "string", "minLength": 30, "maxLength": 40},
            "ok": {"type": "boolean"},
            "nested": {"$ref": "#/$defs/inner"},
        },
        "$defs": {
            "inner": {"type": "object", "required": ["v"], "properties": {"v": {"type": ["null", "number"]}}}
        },
    },
    {"type": "object", "properties": {"choice": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("seed", range(5))
def test_schema_generator_valid_and_violating(schema: dict[str, Any], seed: int) -> None:
    validator = Draft202012Validator(schema)
    assert validator.is_valid(generate_valid(schema, random.Random(seed)))
    assert not validator.is_valid(generate_violation(schema, random.Random(seed)))
