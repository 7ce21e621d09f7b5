"""The task <-> CWOM adapter: mapping rules and the round trip task -> CWOM -> task (property-based)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cwom.enums import IssueType, Priority
from cwom.task_adapter import (
    OPERATION_TO_ISSUE_TYPE,
    TITLE_MAX,
    cwom_to_task,
    issue_title,
    priority_band,
    task_to_cwom,
)
from policy.contract import TaskCreateV1
from tests.support.strategies import storable_text

json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | storable_text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(storable_text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
slug_part = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,15}", fullmatch=True)

tasks = st.builds(
    lambda kind, rid, objective, op, owner, name, ref, path, budget, net, sec, inputs, meta, prio, key: {
        "requested_by": {"kind": kind, "id": rid},
        "objective": objective,
        "operation": op,
        "target": {"repo": f"{owner}/{name}", "ref": ref, "path": path},
        "constraints": {"time_budget_seconds": budget, "allow_network": net, "allow_secrets": sec},
        "inputs": inputs,
        "metadata": meta,
        "priority": prio,
        "idempotency_key": key,
    },
    st.sampled_from(["human", "agent", "system"]),
    storable_text(min_size=1, max_size=30).filter(str.strip),
    storable_text(min_size=1, max_size=300).filter(str.strip),
    st.sampled_from(["code_change", "docs", "analysis", "ops"]),
    slug_part,
    slug_part,
    storable_text(min_size=1, max_size=20),
    st.none() | storable_text(max_size=30),
    st.integers(1, 86_400),
    st.booleans(),
    st.booleans(),
    st.dictionaries(storable_text(max_size=8), json_value, max_size=4),
    st.dictionaries(storable_text(max_size=8), json_value, max_size=3),
    st.integers(0, 1000),
    st.none() | storable_text(min_size=1, max_size=40),
)


def through_json(value: dict[str, Any]) -> dict[str, Any]:
    """What a JSON column hands back."""
    out: dict[str, Any] = json.loads(json.dumps(value))
    return out


@settings(max_examples=200, deadline=None)
@given(tasks)
def test_round_trip_gives_the_normalised_task(body: dict[str, Any]) -> None:
    task = TaskCreateV1.model_validate(body)
    draft = task_to_cwom(task, policy_version="sha256:x")
    back = cwom_to_task(
        repo_slug=draft.repo["slug"],
        issue=through_json(draft.issue),
        context_packet=through_json(draft.context_packet),
        constraint_snapshot=through_json(draft.constraint_snapshot),
    )
    assert back == task
    assert back.request_hash() == task.request_hash()


def test_mapping_rules() -> None:
    task = TaskCreateV1.model_validate(
        {
            "requested_by": {"kind": "human", "id": "alice"},
            "objective": "  Write the docs\nwith details  ",
            "operation": "docs",
            "target": {"repo": "Acme/App"},
            "constraints": {"time_budget_seconds": 120, "allow_network": True},
            "inputs": {"files": ["README.md"]},
            "priority": 10,
        }
    )
    draft = task_to_cwom(task, policy_version="sha256:p")
    assert draft.repo == {
        "name": "app",
        "slug": "acme/app",
        "source_system": "github",
        "default_branch": "main",
    }
    assert draft.issue["type"] == IssueType.DOC and draft.issue["priority"] == Priority.P0
    assert draft.issue["title"] == "Write the docs"
    assert draft.issue["description"] == "Write the docs\nwith details"
    assert draft.issue["acceptance"] == {"criteria": ["Write the docs\nwith details"]}
    assert draft.context_packet["inputs"] == {"files": ["README.md"]}
    assert draft.constraint_snapshot == {
        "time_budget_seconds": 120,
        "allow_network": True,
        "allow_secrets": False,
        "tool_limits": {},
        "policy_version": "sha256:p",
    }
    assert draft.run["status"] == "queued" and draft.run["mode"] == "agent"
    assert draft.run["executor"]["requested_by"] == {"kind": "human", "id": "alice", "label": None}


def test_operations_map_to_issue_types_and_ops_runs_as_system() -> None:
    expected = {"code_change": "feature", "docs": "doc", "analysis": "research", "ops": "ops"}
    for op, issue_type in expected.items():
        task = TaskCreateV1.model_validate(
            {
                "requested_by": {"kind": "system", "id": "s"},
                "objective": "x",
                "operation": op,
                "target": {"repo": "acme/app"},
            }
        )
        draft = task_to_cwom(task, policy_version="v")
        assert draft.issue["type"] == issue_type
        assert draft.run["mode"] == ("system" if op == "ops" else "agent")


def test_priority_bands_and_titles() -> None:
    assert [priority_band(p) for p in (0, 25, 26, 75, 76, 150, 151, 1000)] == [
        Priority.P0,
        Priority.P0,
        Priority.P1,
        Priority.P1,
        Priority.P2,
        Priority.P2,
        Priority.P3,
        Priority.P3,
    ]
    long = "x" * (TITLE_MAX + 50)
    assert len(issue_title(long)) == TITLE_MAX and issue_title(long).endswith("…")
    assert issue_title("first\nsecond") == "first"


@settings(max_examples=200, deadline=None)
@given(body=tasks, existing_repo=st.booleans(), floatless=st.booleans())
def test_task_objects_equal_the_reference_builder(
    body: dict[str, Any], existing_repo: bool, floatless: bool
) -> None:
    """The rows and audit entries `task_objects` builds from precomputed table shapes are those of
    `task_objects_reference` (each row completed column by column, each snapshot value by value),
    keys in the same order, given the same ids."""
    from datetime import UTC, datetime

    from cwom.audit import Actor
    from cwom.base import new_ids
    from cwom.task_rows import task_objects, task_objects_reference

    task = TaskCreateV1.model_validate(body)
    draft = task_to_cwom(task, policy_version="sha256:x")
    repo_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV" if existing_repo else None
    ids = new_ids(4 if existing_repo else 5)
    kwargs: dict[str, Any] = {
        "task_id": "01ARZ3NDEKTSV4RRFFQ69G5FAX",
        "trace_id": "0" * 32,
        "actor": Actor(task.requested_by.kind, task.requested_by.id),
        "max_attempts": 3,
        "now": datetime.now(UTC),
        "repo_id": repo_id,
        "floatless": floatless,
        "ids": ids,
    }
    fast = task_objects(draft, **kwargs)
    reference = task_objects_reference(task_to_cwom(task, policy_version="sha256:x"), **kwargs)
    assert fast == reference
    assert [(table.name, list(row.items())) for table, row in fast.rows] == [
        (table.name, list(row.items())) for table, row in reference.rows
    ]
    assert [list(e.after or {}) for e in fast.audit] == [list(e.after or {}) for e in reference.audit]
    # Nothing is shared between a task's JSON values (a later change to one never shows in another).
    run = next(row for table, row in fast.rows if table.name == "cwom_runs")
    issue = next(row for table, row in fast.rows if table.name == "cwom_issues")
    assert run["executor"]["requested_by"] == issue["provenance"]["requested_by"]
    assert run["executor"]["requested_by"] is not issue["provenance"]["requested_by"]


def test_task_to_cwom_matches_the_enums() -> None:
    """The enum values looked up once are the enums' own."""
    from cwom.enums import RunMode

    for op, kind in OPERATION_TO_ISSUE_TYPE.items():
        body = {"requested_by": {"kind": "human", "id": "a"}, "objective": "x", "operation": op}
        draft = task_to_cwom(
            TaskCreateV1.model_validate({**body, "target": {"repo": "a/b"}}), policy_version="v"
        )
        assert draft.issue["type"] == kind.value
        assert draft.run["mode"] == (RunMode.SYSTEM if op == "ops" else RunMode.AGENT).value
    for prio in (0, 25, 26, 75, 76, 150, 151, 1000):
        body = {"requested_by": {"kind": "human", "id": "a"}, "objective": "x", "operation": "docs"}
        task = TaskCreateV1.model_validate({**body, "target": {"repo": "a/b"}, "priority": prio})
        assert task_to_cwom(task, policy_version="v").issue["priority"] == priority_band(prio).value
