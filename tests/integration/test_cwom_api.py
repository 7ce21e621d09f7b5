"""Every /cwom endpoint through real HTTP on SQLite and PostgreSQL: links, Refs, immutability, transitions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower.tables import TaskRow
from cwom.audit import AuditRow
from cwom.tables import RunRow
from tests.conftest import task_body

MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def ok(resp: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    return body


def ref(kind: str, id: str) -> dict[str, str]:
    return {"kind": kind, "id": id}


def audit_rows(factory: sessionmaker[Session], entity_id: str) -> list[AuditRow]:
    with factory() as session:
        return list(
            session.execute(
                select(AuditRow).where(AuditRow.entity_id == entity_id).order_by(AuditRow.seq)
            ).scalars()
        )


def seed(api: httpx.Client) -> dict[str, Any]:
    repo = ok(
        api.post("/cwom/repos", json={"name": "app", "slug": "acme/app"}, headers={"X-Actor": "human:alice"})
    )
    doctrine = ok(
        api.post(
            "/cwom/doctrine-refs", json={"namespace": "acme/app", "name": "ct", "version": "1", "hash": "h1"}
        )
    )
    snap = ok(api.post("/cwom/constraint-snapshots", json={"time_budget_seconds": 60}))
    issue = ok(
        api.post(
            "/cwom/issues",
            json={
                "repo": ref("repo", repo["id"]),
                "title": "Fix it",
                "type": "bug",
                "acceptance": {"criteria": ["tests pass"]},
                "doctrine_refs": [ref("doctrine_ref", doctrine["id"])],
                "constraint_snapshots": [ref("constraint_snapshot", snap["id"])],
            },
        )
    )
    packet = ok(
        api.post(
            "/cwom/context-packets",
            json={
                "for_issue": ref("issue", issue["id"]),
                "summary": "s",
                "inputs": {"a": 1},
                "doctrine_refs": [ref("doctrine_ref", doctrine["id"])],
            },
        )
    )
    return {"repo": repo, "doctrine": doctrine, "snap": snap, "issue": issue, "packet": packet}


def test_create_and_read_every_object(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    s = seed(api)
    repo, issue, packet = s["repo"], s["issue"], s["packet"]
    assert repo["source"] == {"system": "github", "external_id": None}
    assert issue["status"] == "open" and issue["repo"] == ref("repo", repo["id"])
    assert issue["doctrine_refs"] == [ref("doctrine_ref", s["doctrine"]["id"])]
    assert packet["version"] == 1 and packet["doctrine_refs"] == [ref("doctrine_ref", s["doctrine"]["id"])]
    got_issue = ok(api.get(f"/cwom/issues/{issue['id']}"), 200)
    assert got_issue["context_packets"] == [ref("context_packet", packet["id"])]
    run = ok(
        api.post(
            "/cwom/runs",
            json={
                "for_issue": ref("issue", issue["id"]),
                "context_packets": [ref("context_packet", packet["id"])],
                "doctrine_refs": [ref("doctrine_ref", s["doctrine"]["id"])],
                "executor": {"actor": "bob"},
            },
        )
    )
    assert run["status"] == "planned" and run["repo"] == ref("repo", repo["id"])
    artifact = ok(
        api.post(
            "/cwom/artifacts", json={"produced_by": ref("run", run["id"]), "type": "report", "title": "r"}
        )
    )
    assert artifact["for_issue"] == ref("issue", issue["id"])
    for path, obj in (
        ("repos", repo),
        ("issues", issue),
        ("context-packets", packet),
        ("constraint-snapshots", s["snap"]),
        ("doctrine-refs", s["doctrine"]),
        ("runs", run),
        ("artifacts", artifact),
    ):
        assert ok(api.get(f"/cwom/{path}/{obj['id']}"), 200)["id"] == obj["id"]
        missing = api.get(f"/cwom/{path}/{MISSING}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert [a["id"] for a in ok(api.get("/cwom/artifacts", params={"run_id": run["id"]}), 200)["items"]] == [
        artifact["id"]
    ]
    assert ok(api.get("/cwom/artifacts", params={"run_id": MISSING}), 200)["items"] == []
    assert [r["id"] for r in ok(api.get("/cwom/runs", params={"issue_id": issue["id"]}), 200)["items"]] == [
        run["id"]
    ]
    assert (
        ok(api.get("/cwom/doctrine-refs", params={"namespace": "acme/app"}), 200)["items"][0]["hash"] == "h1"
    )
    # Every create and link is audited with the actor from X-Actor (default human:api).
    repo_audit = audit_rows(factory, repo["id"])
    assert [(r.action, r.actor_kind, r.actor_id) for r in repo_audit] == [("created", "human", "alice")]
    issue_actions = sorted(r.action for r in audit_rows(factory, issue["id"]))
    assert issue_actions == ["created", "linked", "linked", "linked"]
    assert {r.actor_id for r in audit_rows(factory, issue["id"])} == {"api"}
    run_actions = sorted(r.action for r in audit_rows(factory, run["id"]))
    assert run_actions == ["created", "linked", "linked"]


def test_duplicate_slug_and_bad_actor(api: httpx.Client) -> None:
    ok(api.post("/cwom/repos", json={"name": "app", "slug": "acme/app"}))
    dup = api.post("/cwom/repos", json={"name": "other", "slug": "acme/app"})
    assert dup.status_code == 409 and dup.json()["error"] == {
        "code": "REPO_EXISTS",
        "field": "slug",
        "message": "repo 'acme/app' already exists",
    }
    for bad in ("alice", "robot:x", "human:", "human:a b"):
        resp = api.post("/cwom/repos", json={"name": "b", "slug": "acme/b"}, headers={"X-Actor": bad})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "INVALID_ACTOR", bad
    assert ok(api.get("/cwom/repos", params={"slug": "acme/b"}), 200)["items"] == []


def test_immutable_objects_are_405(api: httpx.Client) -> None:
    s = seed(api)
    for path, obj in (("context-packets", s["packet"]), ("constraint-snapshots", s["snap"])):
        for method in ("PUT", "PATCH"):
            resp = api.request(method, f"/cwom/{path}/{obj['id']}", json={"summary": "changed"})
            assert resp.status_code == 405
            assert resp.json()["error"]["code"] == "IMMUTABLE_OBJECT"
            assert resp.headers["allow"] == "GET"
    assert ok(api.get(f"/cwom/context-packets/{s['packet']['id']}"), 200)["summary"] == "s"


def test_refs_to_missing_objects_are_422(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    s = seed(api)
    cases = [
        ("/cwom/issues", {"repo": ref("repo", MISSING), "title": "t", "type": "bug"}, "repo"),
        (
            "/cwom/issues",
            {
                "repo": ref("repo", s["repo"]["id"]),
                "title": "t",
                "type": "bug",
                "context_packets": [ref("context_packet", s["packet"]["id"]), ref("context_packet", MISSING)],
            },
            "context_packets.1",
        ),
        ("/cwom/context-packets", {"for_issue": ref("issue", MISSING)}, "for_issue"),
        (
            "/cwom/runs",
            {"for_issue": ref("issue", s["issue"]["id"]), "doctrine_refs": [ref("doctrine_ref", MISSING)]},
            "doctrine_refs.0",
        ),
        ("/cwom/artifacts", {"produced_by": ref("run", MISSING), "type": "log", "title": "t"}, "produced_by"),
    ]
    before = len(ok(api.get("/cwom/issues"), 200)["items"])
    for path, body, field in cases:
        resp = api.post(path, json=body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "REF_NOT_FOUND" and resp.json()["error"]["field"] == field
    # Nothing of a refused request is left behind (the issue row was flushed before the bad link).
    assert len(ok(api.get("/cwom/issues"), 200)["items"]) == before
    wrong_kind = api.post(
        "/cwom/issues", json={"repo": ref("issue", s["issue"]["id"]), "title": "t", "type": "bug"}
    )
    assert wrong_kind.status_code == 422 and wrong_kind.json()["error"]["code"] == "REF_KIND_MISMATCH"


def test_issue_patch_and_transitions(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    issue = seed(api)["issue"]
    url = f"/cwom/issues/{issue['id']}"
    patched = ok(
        api.patch(
            url,
            json={"title": "Better", "status": "in_progress", "note": "go"},
            headers={"X-Actor": "agent:claude"},
        ),
        200,
    )
    assert patched["title"] == "Better" and patched["status"] == "in_progress"
    ok(api.patch(url, json={"status": "done"}), 200)
    bad = api.patch(url, json={"status": "blocked"})
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "INVALID_TRANSITION"
    assert bad.json()["error"]["field"] == "status"
    assert ok(api.patch(url, json={"status": "open"}), 200)["status"] == "open"
    rows = audit_rows(factory, issue["id"])
    changes = [(r.action, r.before, r.after) for r in rows if r.action in ("updated", "status_changed")]
    assert changes == [
        ("status_changed", {"status": "open"}, {"status": "in_progress"}),
        ("updated", {"title": "Fix it"}, {"title": "Better"}),
        ("status_changed", {"status": "in_progress"}, {"status": "done"}),
        ("status_changed", {"status": "done"}, {"status": "open"}),
    ]
    actors = [(r.actor_kind, r.actor_id) for r in rows if r.action in ("updated", "status_changed")]
    assert actors == [("agent", "claude"), ("agent", "claude"), ("human", "api"), ("human", "api")]
    assert api.patch(url, json={"status": "nonsense"}).status_code == 422
    assert ok(api.patch(url, json={"title": None, "external_ref": "gh#1"}), 200)["title"] == "Better"
    extra = api.patch(url, json={"repo_id": "x"})
    assert extra.status_code == 422 and extra.json()["error"]["field"] == "repo_id"
    assert api.patch(f"/cwom/issues/{MISSING}", json={"title": "x"}).status_code == 404


def test_run_patch_only_cancels(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    task = ok(api.post("/tasks/enqueue", json=task_body()))
    run_id = task["run_id"]
    url = f"/cwom/runs/{run_id}"
    # The worker's moves are refused: an operator cannot claim, finish or fail a run.
    for status in ("running", "done", "failed"):
        resp = api.patch(url, json={"status": status})
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "INVALID_TRANSITION", status
    # A concurrent worker move between read and write wins: the compare-and-set refuses to overwrite it.
    cancelled = ok(
        api.patch(url, json={"status": "cancelled", "note": "not needed"}, headers={"X-Actor": "human:op"}),
        200,
    )
    assert cancelled["status"] == "cancelled" and cancelled["ended_at"] is not None
    assert ok(api.get(f"/tasks/{task['task_id']}"), 200)["status"] == "cancelled"
    again = api.patch(url, json={"status": "queued"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "INVALID_TRANSITION"
    changed = [r for r in audit_rows(factory, run_id) if r.action == "status_changed"]
    assert [(r.before, r.after, r.note, r.actor_id) for r in changed] == [
        ({"status": "queued"}, {"status": "cancelled"}, "not needed", "op")
    ]


def test_run_cancel_does_not_overwrite_a_worker_move(
    api: httpx.Client, factory: sessionmaker[Session], db_url: str
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip(
            "on SQLite every transaction holds the write lock from its first statement: no interleaving"
        )
    from cwom.audit import Actor
    from cwom.enums import RunStatus
    from cwom.errors import ConcurrentUpdate
    from cwom.service_runs import transition_run

    run_id = ok(api.post("/tasks/enqueue", json=task_body()))["run_id"]
    with factory() as session, session.begin():
        run = session.get_one(RunRow, run_id)
        assert run.status == "queued"
        # The worker claims the run after this session read it.
        with factory() as worker, worker.begin():
            worker.execute(
                update(RunRow).where(RunRow.id == run_id).values(status="running", version=RunRow.version + 1)
            )
        try:
            transition_run(session, run_id=run_id, status=RunStatus.CANCELLED, actor=Actor("human", "op"))
        except ConcurrentUpdate:
            pass
        else:
            raise AssertionError("expected ConcurrentUpdate")
    with factory() as session:
        assert session.get_one(RunRow, run_id).status == "running"
        assert session.execute(select(TaskRow.status)).scalar_one() == "queued"


def test_lists_are_keyset_paginated_newest_first(api: httpx.Client) -> None:
    repo = ok(api.post("/cwom/repos", json={"name": "app", "slug": "acme/app"}))
    other = ok(api.post("/cwom/repos", json={"name": "web", "slug": "acme/web"}))
    ids = [
        ok(
            api.post(
                "/cwom/issues", json={"repo": ref("repo", repo["id"]), "title": f"i{i}", "type": "chore"}
            )
        )["id"]
        for i in range(5)
    ]
    ok(
        api.post(
            "/cwom/issues", json={"repo": ref("repo", other["id"]), "title": "elsewhere", "type": "chore"}
        )
    )
    ok(api.patch(f"/cwom/issues/{ids[0]}", json={"status": "blocked"}), 200)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "repo_id": repo["id"]}
        if cursor:
            params["cursor"] = cursor
        page = ok(api.get("/cwom/issues", params=params), 200)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    blocked = ok(api.get("/cwom/issues", params={"status": "blocked"}), 200)["items"]
    assert [i["id"] for i in blocked] == [ids[0]]
    bad = api.get("/cwom/issues", params={"cursor": "!!!"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_CURSOR"
    assert api.get("/cwom/issues", params={"limit": 0}).status_code == 422


def test_context_packet_versions(api: httpx.Client) -> None:
    s = seed(api)
    issue_ref = ref("issue", s["issue"]["id"])
    second = ok(api.post("/cwom/context-packets", json={"for_issue": issue_ref}))
    assert second["version"] == 2
    taken = api.post("/cwom/context-packets", json={"for_issue": issue_ref, "version": 2})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "VERSION_EXISTS"
    assert ok(api.post("/cwom/context-packets", json={"for_issue": issue_ref, "version": 7}))["version"] == 7
    issue = ok(api.get(f"/cwom/issues/{s['issue']['id']}"), 200)
    assert len(issue["context_packets"]) == 3


def test_artifact_idempotency_key(api: httpx.Client) -> None:
    s = seed(api)
    run = ok(api.post("/cwom/runs", json={"for_issue": ref("issue", s["issue"]["id"])}))
    body = {
        "produced_by": ref("run", run["id"]),
        "type": "pr",
        "title": "PR",
        "idempotency_key": "pr-1",
        "verification": {"status": "passed", "checks": [{"name": "ci"}]},
    }
    first = ok(api.post("/cwom/artifacts", json=body))
    assert first["verification"] == {"status": "passed", "checks": [{"name": "ci"}]}
    dup = api.post("/cwom/artifacts", json=body)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "ARTIFACT_EXISTS"


def test_stored_objects_give_back_the_task(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    from cwom.rows import snapshot
    from cwom.tables import ConstraintSnapshotRow, ContextPacketRow, IssueRow
    from cwom.task_adapter import cwom_to_task
    from policy import TaskCreateV1

    body = task_body(
        inputs={"command": "make", "env": {"A": "1"}},
        metadata={"k": [1, 2]},
        priority=7,
        idempotency_key="rt-1",
        target={"repo": "acme/app", "ref": "dev", "path": "src"},
    )
    task = ok(api.post("/tasks/enqueue", json=body))
    ids = task["cwom"]
    with factory() as session:
        back = cwom_to_task(
            repo_slug=ok(api.get(f"/cwom/repos/{ids['repo_id']}"), 200)["slug"],
            issue=snapshot(session.get_one(IssueRow, ids["issue_id"])),
            context_packet=snapshot(session.get_one(ContextPacketRow, ids["context_packet_id"])),
            constraint_snapshot=snapshot(
                session.get_one(ConstraintSnapshotRow, ids["constraint_snapshot_id"])
            ),
        )
    assert back == TaskCreateV1.model_validate(task["task"])
