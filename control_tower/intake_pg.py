"""Intake on PostgreSQL: tasks, their CWOM objects and links, the audit chain and the worker wake-ups in
ONE statement, run in autocommit, so it is one transaction and one round trip.

Group commit: the thread that finds no statement under way writes every task queued meanwhile (up to
`BATCH_MAX`) in one statement; the others wait for its result. Each task stays all-or-nothing: every
row of a task is gated on that task's own insert (`_task` / `task` keys checked against `t`), so a task
whose idempotency key is already taken writes nothing at all while its neighbours are stored. The chain
head is locked once per statement, for its audit inserts and the commit, with no Python in between.
Row values arrive as JSON and become rows of each table's own type (`jsonb_populate_record`), so the
statement is built once, from the table definitions.

The Repo is looked up by slug first (and cached). A task that creates its Repo is written in a statement
of its own; a stale cache entry or a concurrent creator of the same slug then makes the statement fail
on the Repo's unique slug or the Issue's foreign key, which rolls it back whole, and the task is written
again after a fresh lookup. A statement that fails for any other reason fails every task in it, and
none of them is stored.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Engine, Table, select
from sqlalchemy.exc import IntegrityError

from control_tower.group_commit import GroupCommit
from control_tower.intake_plan import Built, FailureInjected, IntakePlan
from control_tower.tables import TaskRow
from cwom import audit
from cwom.tables import (
    ConstraintSnapshotRow,
    ContextPacketRow,
    IssueRow,
    RepoRow,
    RunRow,
    issue_constraint_snapshots,
    issue_context_packets,
    run_context_packets,
)
from cwom.task_rows import CwomIds, table_of

# Foreign-key order; each gets one `jsonb` array parameter (empty when nothing goes there).
_TABLES: tuple[Table, ...] = (
    table_of(RepoRow),
    table_of(IssueRow),
    table_of(ContextPacketRow),
    table_of(ConstraintSnapshotRow),
    table_of(RunRow),
    issue_context_packets,
    issue_constraint_snapshots,
    run_context_packets,
)
_RUNS = _TABLES.index(table_of(RunRow))
BATCH_MAX = 64
_RETRIES = 3
_REPO_CACHE_MAX = 10_000


@cache
def statement() -> str:
    """The intake statement (psycopg `%(name)s` parameters: tasks, w0…w7, audit)."""
    # Table names come from our own metadata, never from input.
    tasks = TaskRow.__tablename__
    ctes = [
        f"t AS (INSERT INTO {tasks} SELECT * FROM"
        f" jsonb_populate_recordset(NULL::{tasks}, CAST(%(tasks)s AS jsonb))"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)"
    ]
    for i, table in enumerate(_TABLES):
        returning = "id" if i == _RUNS else "1"
        ctes.append(
            f"w{i} AS (INSERT INTO {table.name} SELECT r.*"
            f" FROM jsonb_array_elements(CAST(%(w{i})s AS jsonb)) e,"
            f" LATERAL jsonb_populate_record(NULL::{table.name}, e) r"
            f" WHERE e->>'_task' IN (SELECT id FROM t) RETURNING {returning})"
        )
    ctes.append(f"notified AS (SELECT pg_notify('control_tower_runs', id) FROM w{_RUNS})")
    chain = audit.pg_chain_ctes("%(audit)s", gate="r.task IN (SELECT id FROM t)")
    # The scalar subqueries run in order: the object inserts first, the audit chain (which takes
    # the head lock) last, so the lock is held for the audit inserts and the commit only.
    counts = " + ".join(f"(SELECT count(*) FROM w{i})" for i in range(len(_TABLES)))
    return (
        "WITH RECURSIVE "
        + ",\n".join(ctes)
        + ","
        + chain
        + f"\nSELECT (SELECT coalesce(array_agg(id), '{{}}') FROM t) AS created, {counts} AS objects,"
        " (SELECT count(*) FROM notified) AS notified, (SELECT count(*) FROM ins) AS audited"
    )


class _RepoCache:
    """slug → Repo id per database (Repos are never deleted; a stale entry only costs a retry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], str] = {}

    def get(self, engine: Engine, slug: str) -> str | None:
        found = self._ids.get((str(engine.url), slug))
        if found is not None:
            return found
        with engine.connect() as conn:
            found = conn.execute(select(RepoRow.id).where(RepoRow.slug == slug)).scalar()
        if found is not None:
            self.put(engine, slug, found)
        return found

    def put(self, engine: Engine, slug: str, repo_id: str) -> None:
        with self._lock:
            if len(self._ids) >= _REPO_CACHE_MAX:
                self._ids.clear()
            self._ids[(str(engine.url), slug)] = repo_id

    def forget(self, engine: Engine, slug: str) -> None:
        with self._lock:
            self._ids.pop((str(engine.url), slug), None)


REPOS = _RepoCache()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class _Item:
    """One task ready for a statement: its rows and its prepared audit entries."""

    built: Built
    audit_rows: list[audit.Prepared]


def _params(items: list[_Item]) -> dict[str, Any]:
    per_table: list[list[dict[str, Any]]] = [[] for _ in _TABLES]
    index = {t.name: i for i, t in enumerate(_TABLES)}
    tasks: list[dict[str, Any]] = []
    entries: list[tuple[dict[str, Any], str, str, str]] = []
    for item in items:
        task_id = item.built.task["id"]
        tasks.append(item.built.task)
        objects = item.built.objects
        for table, row in objects.rows if objects else ():
            per_table[index[table.name]].append({**row, "_task": task_id})
        entries.extend((row, prefix, suffix, task_id) for row, prefix, suffix in item.audit_rows)
    return {
        "tasks": _json(tasks),
        "audit": audit.pg_payload(
            [(row, prefix, suffix) for row, prefix, suffix, _ in entries],
            tasks=[task_id for *_, task_id in entries],
        ),
        **{f"w{i}": _json(rows) for i, rows in enumerate(per_table)},
    }


def _execute(engine: Engine, items: list[_Item], *, fail_after_cwom: bool = False) -> set[str]:
    """Run the statement for `items`; the ids of the tasks it stored."""
    params = _params(items)
    if fail_after_cwom:
        # The failure test: the statement runs inside a transaction that is then rolled back.
        with engine.begin() as conn:
            conn.exec_driver_sql(statement(), params)
            raise FailureInjected(message="failure injected after CWOM objects were written")
    with engine.connect() as conn:
        result = (
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(statement(), params).one()
        )
    return set(result.created)


_GROUPS: weakref.WeakKeyDictionary[Engine, GroupCommit[_Item, bool]] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def _group(engine: Engine) -> GroupCommit[_Item, bool]:
    """The engine's group commit (one per engine: statements of different databases never mix)."""
    group = _GROUPS.get(engine)
    if group is None:
        with _GROUPS_LOCK:
            group = _GROUPS.get(engine)
            if group is None:
                ref = weakref.ref(engine)  # the group must not keep a disposed engine alive

                def write(items: Sequence[_Item]) -> list[bool]:
                    bound = ref()
                    if bound is None:  # pragma: no cover - callers hold the engine
                        raise RuntimeError("engine is gone")
                    created = _execute(bound, list(items))
                    return [item.built.task["id"] in created for item in items]

                group = _GROUPS[engine] = GroupCommit(write, batch_max=BATCH_MAX)
    return group


def write(
    engine: Engine, plan: IntakePlan, *, redactor: audit.Redacts | None = None, fail_after_cwom: bool = False
) -> tuple[TaskRow, CwomIds | None] | None:
    """Store the task; None when its idempotency key is already taken (nothing was written)."""
    slug = plan.task.target.repo
    for attempt in range(1, _RETRIES + 1):
        repo_id = REPOS.get(engine, slug) if plan.create_cwom else None
        built = plan.build(repo_id=repo_id)
        item = _Item(built, audit.prepare(built.audit, redactor))
        objects = built.objects
        try:
            if fail_after_cwom:
                _execute(engine, [item], fail_after_cwom=True)
            if objects is not None and objects.new_repo:
                # Alone: two new Repos with one slug in one statement would fail each other.
                created = built.task["id"] in _execute(engine, [item])
            else:
                created = _group(engine).submit(item)
        except IntegrityError as exc:
            # A Repo created meanwhile by another intake, or a cached Repo id gone stale.
            REPOS.forget(engine, slug)
            if attempt == _RETRIES or not plan.create_cwom:
                raise RuntimeError(f"intake could not be stored after {attempt} attempts") from exc
            continue
        if not created:
            return None
        if objects is not None and objects.new_repo:
            REPOS.put(engine, slug, objects.ids.repo_id)
        return TaskRow(**built.task), objects.ids if objects else None
    raise AssertionError("unreachable")  # pragma: no cover
