"""The task <-> CWOM adapter: mapping rules and the round trip task -> CWOM -> task (property-based)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cwom.enums import IssueType, Priority
from cwom.task_adapter import TITLE_MAX, cwom_to_task, issue_title, priority_band, task_to_cwom
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
