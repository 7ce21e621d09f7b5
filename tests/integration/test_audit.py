"""The audit log: query API, tamper detection by /audit/verify, concurrent writers, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cwom import audit, audit_query
from cwom.audit import Actor, AuditRow
from cwom.base import utcnow
from tests.conftest import task_body

ALICE = Actor("human", "alice")


def write(factory: sessionmaker[Session], n: int, *, actor: Actor = ALICE, trace: str = "t1") -> None:
    """n transactions, each recording two rows."""
    for i in range(n):
        with factory() as session, session.begin():
            for j in range(2):
                audit.record(
                    session,
                    actor=actor,
                    action="updated" if j else "created",
                    entity_kind="issue",
                    entity_id=f"e{i}",
                    before=None if j == 0 else {"n": i},
                    after={"n": i, "label": 'ünïcode "quoted"\n', "f": 0.1 + 0.2, "tiny": 1e-7},
                    note=f"note {i}",
                    trace_id=trace,
                )


def verify(api: httpx.Client) -> dict[str, Any]:
    resp = api.get("/audit/verify")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def seq_row(engine: Engine, seq: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, seq FROM audit_log WHERE seq = :s"), {"s": seq}).one()


def raw(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_query_api_filters_and_orders(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    write(factory, 3)
    write(factory, 2, actor=Actor("agent", "claude"), trace="t2")
    page = api.get("/audit", params={"limit": 100}).json()
    seqs = [r["seq"] for r in page["items"]]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 10 and page["next_cursor"] is None
    by_actor = api.get("/audit", params={"actor_kind": "agent", "actor_id": "claude"}).json()["items"]
    assert len(by_actor) == 4 and {r["trace_id"] for r in by_actor} == {"t2"}
    by_entity = api.get(
        "/audit", params={"entity_kind": "issue", "entity_id": "e0", "action": "created"}
    ).json()
    assert len(by_entity["items"]) == 2
    history = api.get("/audit/entities/issue/e1").json()["items"]
    assert [r["action"] for r in history] == ["created", "updated", "created", "updated"]
    assert [r["seq"] for r in history] == sorted(r["seq"] for r in history)
    trace = api.get("/audit/traces/t2").json()["items"]
    assert len(trace) == 4 and trace[0]["seq"] < trace[-1]["seq"]
    now = utcnow()
    assert (
        len(api.get("/audit", params={"since": (now - timedelta(hours=1)).isoformat()}).json()["items"]) == 10
    )
    assert api.get("/audit", params={"until": (now - timedelta(hours=1)).isoformat()}).json()["items"] == []
    assert api.get("/audit", params={"cursor": "x"}).status_code == 422


def test_pages_hold_still_while_rows_are_added(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    write(factory, 3)
    first = api.get("/audit", params={"limit": 4}).json()
    write(factory, 2)  # appended between the two page requests
    second = api.get("/audit", params={"limit": 4, "cursor": first["next_cursor"]}).json()
    seqs = [r["seq"] for r in first["items"] + second["items"]]
    assert seqs == [6, 5, 4, 3, 2, 1]
    assert second["next_cursor"] is None


def test_cwom_changes_appear_in_the_log(api: httpx.Client) -> None:
    task = api.post("/tasks/enqueue", json=task_body()).json()
    trace = api.get(f"/audit/traces/{task['trace_id']}").json()["items"]
    kinds = {(r["action"], r["entity_kind"]) for r in trace}
    assert {
        ("policy_allowed", "task"),
        ("created", "issue"),
        ("created", "run"),
        ("linked", "issue"),
    } <= kinds
    assert verify(api) == {"ok": True, "rows": len(trace)}


def test_clean_chain_verifies(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    assert verify(api) == {"ok": True, "rows": 0}
    write(factory, 5)
    assert verify(api) == {"ok": True, "rows": 10}


@pytest.mark.parametrize("workers", [1, 2])
def test_edited_column_is_named(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine, workers: int
) -> None:
    write(factory, 5)
    target = seq_row(engine, 7)
    raw(engine, "UPDATE audit_log SET actor_id = 'mallory' WHERE seq = 7")
    body = verify(api)
    assert body["ok"] is False
    assert body["broken"]["seq"] == 7 and body["broken"]["id"] == target.id
    assert "hash" in body["broken"]["reason"]
    if engine.dialect.name == "postgresql":
        result = audit_query.verify(engine, workers=workers)
        assert result.broken is not None and (result.broken.seq, result.broken.id) == (7, target.id)


def test_edited_json_is_named(api: httpx.Client, factory: sessionmaker[Session], engine: Engine) -> None:
    write(factory, 3)
    target = seq_row(engine, 2)
    if engine.dialect.name == "postgresql":
        raw(engine, "UPDATE audit_log SET after = jsonb_set(after::jsonb, '{n}', '99')::json WHERE seq = 2")
    else:
        raw(engine, "UPDATE audit_log SET after = json_set(after, '$.n', 99) WHERE seq = 2")
    assert verify(api)["broken"] == {
        "seq": 2,
        "id": target.id,
        "reason": "hash does not match the row's content",
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_deleted_row_is_named(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine, workers: int
) -> None:
    write(factory, 5)
    after_gap = seq_row(engine, 5)
    raw(engine, "DELETE FROM audit_log WHERE seq = 4")
    body = verify(api)
    assert body["ok"] is False and body["broken"]["seq"] == 5 and body["broken"]["id"] == after_gap.id
    assert "row 4 is missing" in body["broken"]["reason"]
    if engine.dialect.name == "postgresql":
        result = audit_query.verify(engine, workers=workers)
        assert result.broken is not None and result.broken.seq == 5


def test_deleted_last_row_is_named(api: httpx.Client, factory: sessionmaker[Session], engine: Engine) -> None:
    write(factory, 5)
    raw(engine, "DELETE FROM audit_log WHERE seq = 10")
    body = verify(api)
    assert body["ok"] is False and body["rows"] == 9
    assert body["broken"]["seq"] == 10 and "audit_head is at seq 10" in body["broken"]["reason"]


def test_swapped_rows_are_named(api: httpx.Client, factory: sessionmaker[Session], engine: Engine) -> None:
    write(factory, 5)
    third = seq_row(engine, 3)
    raw(engine, "UPDATE audit_log SET seq = -1 WHERE seq = 3")
    raw(engine, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    raw(engine, "UPDATE audit_log SET seq = 4 WHERE seq = -1")
    body = verify(api)
    assert body["ok"] is False
    assert body["broken"]["seq"] == 3 and body["broken"]["id"] != third.id
    assert body["broken"]["reason"] == "prev_hash does not match the row before"


def test_row_past_the_head_is_reported(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    write(factory, 2)
    raw(engine, "UPDATE audit_head SET seq = 3 WHERE id = 1")
    assert verify(api)["broken"]["seq"] == 4
    raw(engine, "UPDATE audit_head SET seq = 5 WHERE id = 1")
    assert verify(api)["broken"]["seq"] == 5


def test_concurrent_writers_keep_one_chain(factory: sessionmaker[Session], engine: Engine) -> None:
    threads_n, txns = (20, 8) if engine.dialect.name == "postgresql" else (8, 5)
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            write(factory, txns, actor=Actor("agent", f"w{k}"), trace=f"t{k}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = audit_query.verify(engine)
    assert result.ok and result.rows == threads_n * txns * 2
    with factory() as session:
        seqs = list(session.execute(select(AuditRow.seq).order_by(AuditRow.seq)).scalars())
        assert seqs == list(range(1, threads_n * txns * 2 + 1))
        per_actor = dict(
            session.execute(select(AuditRow.actor_id, func.count()).group_by(AuditRow.actor_id)).all()
        )
    assert per_actor == {f"w{k}": txns * 2 for k in range(threads_n)}


def cli(db_url: str, *args: str) -> tuple[int, str]:
    """Run `control-tower` as a process (it configures logging globally, so not in this one)."""
    env = {**os.environ, "DATABASE_URL": db_url}
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout


def test_cli_verify_and_tail(factory: sessionmaker[Session], engine: Engine, db_url: str) -> None:
    write(factory, 3)
    code, out = cli(db_url, "audit", "verify")
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {"ok": True, "rows": 6}
    code, out = cli(db_url, "audit", "tail", "-n", "2")
    lines = [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]
    assert code == 0 and [row["seq"] for row in lines] == [5, 6]
    raw(engine, "UPDATE audit_log SET note = 'x' WHERE seq = 1")
    code, out = cli(db_url, "audit", "verify")
    verdict = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and verdict["ok"] is False and verdict["broken"]["seq"] == 1
