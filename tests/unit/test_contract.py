"""The V1 task contract: aliases, normalisation, and a frozen JSON schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policy.contract import TaskCreateV1, canonical_reference
from tests.conftest import task_body

SNAPSHOT = Path(__file__).parent / "snapshots" / "task_create_v1.schema.json"


def test_legacy_aliases_are_normalised() -> None:
    legacy = {
        "requested_by": {"kind": "agent", "id": "bot"},
        "objective": "  Fix the docs  ",
        "type": "docs",
        "target": {"repository": "Acme/Web"},
        "payload": {"files": ["README.md"]},
    }
    task = TaskCreateV1.model_validate(legacy)
    assert task.operation == "docs"
    assert task.inputs == {"files": ["README.md"]}
    assert task.target.repo == "acme/web"
    assert task.target.ref == "main"
    assert task.objective == "Fix the docs"
    canonical = TaskCreateV1.model_validate(
        {
            **task_body(operation="docs", objective="Fix the docs", inputs={"files": ["README.md"]}),
            "requested_by": {"kind": "agent", "id": "bot"},
            "target": {"repo": "acme/web"},
        }
    )
    assert task.request_hash() == canonical.request_hash()


def test_defaults() -> None:
    task = TaskCreateV1.model_validate(task_body())
    assert task.constraints.time_budget_seconds == 900
    assert task.constraints.allow_network is False
    assert task.constraints.allow_secrets is False
    assert task.version == "v1"


@pytest.mark.parametrize(
    "body",
    [
        task_body(type="docs", operation="ops"),
        task_body(payload={"a": 1}, inputs={"a": 2}),
        task_body(target={"repo": "acme/a", "repository": "acme/b"}),
        task_body(target={"repo": "not a repo"}),
        task_body(objective="   "),
        task_body(requested_by={"kind": "robot", "id": "x"}),
        task_body(unexpected_field=1),
        task_body(version="v2"),
    ],
)
def test_invalid_bodies_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskCreateV1.model_validate(body)


def test_schema_snapshot() -> None:
    """Changing the request contract is a deliberate act: update the snapshot with CT_UPDATE_SNAPSHOTS=1."""
    schema = json.dumps(TaskCreateV1.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("CT_UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(schema)
    assert schema == SNAPSHOT.read_text()


ENQUEUE_SNAPSHOT = Path(__file__).parent / "snapshots" / "enqueue.openapi.json"


def test_enqueue_openapi_entry_snapshot(tmp_path: Path) -> None:
    """POST /tasks/enqueue as OpenAPI describes it (parameters, body, answers, description) is part of
    the contract too, whatever the handler's implementation; update with CT_UPDATE_SNAPSHOTS=1."""
    from control_tower.api.app import create_app
    from control_tower.settings import Settings

    settings = Settings(environment="test", database_url=f"sqlite:///{tmp_path}/x.db", _env_file=None)  # type: ignore[call-arg]
    entry = json.dumps(create_app(settings).openapi()["paths"]["/tasks/enqueue"], indent=2, sort_keys=True)
    if os.environ.get("CT_UPDATE_SNAPSHOTS") == "1" or not ENQUEUE_SNAPSHOT.exists():
        ENQUEUE_SNAPSHOT.write_text(entry + "\n")
    assert entry + "\n" == ENQUEUE_SNAPSHOT.read_text()


_ASCIIISH = st.characters(max_codepoint=0x80)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=_ASCIIISH | st.characters()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    objective=st.text(alphabet=_ASCIIISH, min_size=1).filter(str.strip),
    inputs=st.dictionaries(st.text(max_size=6), _JSON, max_size=4),
    metadata=st.dictionaries(st.text(alphabet=_ASCIIISH, max_size=6), _JSON, max_size=3),
)
def test_canonical_json_is_the_reference_text(
    objective: str, inputs: dict[str, object], metadata: dict[str, object]
) -> None:
    """The request hash of a stored task must not change: the fast encoding gives the reference text."""
    try:
        task = TaskCreateV1.model_validate(task_body(objective=objective, inputs=inputs, metadata=metadata))
    except ValidationError:
        return  # e.g. an integer past 64 bits: refused before any hash
    assert task.canonical_json() == canonical_reference(task.model_dump(mode="json"))


def test_canonical_json_escapes_what_the_reference_escapes() -> None:
    for text in ("plain", "tab\there \x01 \x1f", "del \x7f", "é ☃ \U0001f600", 'q"uote \\ back'):
        task = TaskCreateV1.model_validate(task_body(objective=text, inputs={text: [text, 1, None, True]}))
        assert task.canonical_json() == canonical_reference(task.model_dump(mode="json"))
