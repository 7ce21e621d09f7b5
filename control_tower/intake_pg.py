"""Intake on PostgreSQL: tasks, their CWOM objects and links, the audit chain and the worker wake-ups in
ONE statement, run in autocommit, so it is one transaction and one round trip.

Group commit: the thread that finds no statement under way writes every task queued meanwhile (up to
`BATCH_MAX`) in one statement; the others wait for its result. Each task stays all-or-nothing: every
row of a task is gated on that task's own insert (`_task` / `task` keys checked against `t`), so a task
whose idempotency key is already taken writes nothing at all while its neighbours are stored. The chain
head is locked once per statement, for its audit inserts and the commit, with no Python in between.
Row values arrive as JSON and become rows of each table's own type (`jsonb_to_recordset`), so the
statement is built once, from the table definitions.

The Repo is looked up by slug first (and cached). A task that creates its Repo is written in a statement
of its own; a stale cache entry or a concurrent creator of the same slug then makes the statement fail
on the Repo's unique slug or the Issue's foreign key, which rolls it back whole, and the task is written
again after a fresh lookup. A statement that fails for any other reason fails every task in it, and
none of them is stored.

Two writers send that statement: `write` (threads: the CLI, webhook processing, SQLAlchemy's pool) and
`AsyncWriter` (the HTTP handler's coroutines: one asyncio connection per server process).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine, Table, select
from sqlalchemy.exc import IntegrityError

from control_tower.group_commit import AsyncGroupCommit, GroupCommit
from control_tower.intake_plan import Built, FailureInjected, IntakePlan
from control_tower.pg_async import AsyncConnection
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
# How the HTTP path's connections show in pg_stat_activity.
APPLICATION_NAME = "control-tower-intake"
_RETRIES = 3
_REPO_CACHE_MAX = 10_000


@cache
def statement() -> str:
    """The intake statement (psycopg `%(name)s` parameters: tasks, w0…w7, audit, audit_prefix/suffix)."""
    # Table names come from our own metadata, never from input.
    tasks = TaskRow.__tablename__
    # `ok`: the ids of the tasks this statement stored, one array that every gate tests (`= ANY`: an
    # InitPlan and a filter, where `IN (SELECT …)` was a hash semi-join, built and torn down per table).
    ctes = [
        f"t AS (INSERT INTO {tasks} SELECT * FROM"
        f" jsonb_populate_recordset(NULL::{tasks}, %(tasks)s::jsonb)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)",
        "ok AS (SELECT coalesce(array_agg(id::text), '{}') AS ids FROM t)",
    ]
    for i, table in enumerate(_TABLES):
        # The Run's wake-up is its RETURNING expression: delivered at commit, like the rows.
        returning = "pg_notify('control_tower_runs', id)" if i == _RUNS else "1"
        # Each element is {"_task": …, "r": row}: `r` becomes a row of the table's own type in the same
        # function scan that reads `_task` (one node where a row per element was a nested loop).
        ctes.append(
            f"w{i} AS (INSERT INTO {table.name} SELECT (e.r).*"
            f" FROM jsonb_to_recordset(%(w{i})s::jsonb) AS e(_task text, r {table.name})"
            f" WHERE e._task = ANY((SELECT ids FROM ok)::text[]) RETURNING {returning})"
        )
    chain = audit.pg_chain_ctes("%(audit)s", gate="r.task = ANY((SELECT ids FROM ok)::text[])", texts="audit")
    # The scalar subqueries run in order: the object inserts first (one count over all of them), the
    # audit chain (which takes the head lock) last, so the lock is held for the audit inserts and the
    # commit only.
    objects = " UNION ALL ".join(f"SELECT FROM w{i}" for i in range(len(_TABLES)))
    return _one_line(
        "WITH RECURSIVE "
        + ",\n".join(ctes)
        + ","
        + chain
        + f"\nSELECT (SELECT ids FROM ok) AS created, (SELECT count(*) FROM ({objects}) o) AS objects,"
        " (SELECT count(*) FROM ins) AS audited"
    )


def _one_line(statement: str) -> str:
    """The statement with each run of white space made one space (no literal holds two): psycopg caches
    its parsing of statements up to 4 kB only."""
    return " ".join(statement.split())


class _RepoCache:
    """slug → Repo id per database (Repos are never deleted; a stale entry only costs a retry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], str] = {}
        # str(engine.url) renders the URL anew each time (~10 µs): once per engine.
        self._urls: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()

    def _url(self, engine: Engine) -> str:
        url = self._urls.get(engine)
        if url is None:
            url = self._urls[engine] = str(engine.url)
        return url

    def cached(self, engine: Engine, slug: str) -> str | None:
        """The cached id, without a lookup (the event loop's writer looks up on its own connection)."""
        return self._ids.get((self._url(engine), slug))

    def get(self, engine: Engine, slug: str) -> str | None:
        found = self.cached(engine, slug)
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
            self._ids[(self._url(engine), slug)] = repo_id

    def forget(self, engine: Engine, slug: str) -> None:
        with self._lock:
            self._ids.pop((self._url(engine), slug), None)


REPOS = _RepoCache()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class _Item:
    """One task ready for a statement: its rows and its prepared audit entries."""

    built: Built
    audit_rows: list[audit.Prepared]


_INDEX = {t.name: i for i, t in enumerate(_TABLES)}


def _params(items: list[_Item]) -> dict[str, Any]:
    per_table: list[list[dict[str, Any]]] = [[] for _ in _TABLES]
    index = _INDEX
    tasks: list[dict[str, Any]] = []
    prepared: list[audit.Prepared] = []
    owners: list[str] = []  # the task of each audit row
    for item in items:
        task_id = item.built.task["id"]
        tasks.append(item.built.task)
        objects = item.built.objects
        for table, row in objects.rows if objects else ():
            per_table[index[table.name]].append({"_task": task_id, "r": row})
        prepared += item.audit_rows
        owners += [task_id] * len(item.audit_rows)
    return {
        "tasks": _json(tasks),
        **audit.pg_columns(prepared, tasks=owners, stem="audit"),
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


def _item(plan: IntakePlan, repo_id: str | None, redactor: audit.Redacts | None) -> _Item:
    built = plan.build(repo_id=repo_id)
    return _Item(built, audit.prepare(built.audit, redactor))


def _alone(item: _Item) -> bool:
    """A task that creates its Repo is written alone: two new Repos with one slug in one statement
    would fail each other."""
    return item.built.objects is not None and item.built.objects.new_repo


def _stored(engine: Engine, plan: IntakePlan, item: _Item) -> tuple[dict[str, Any], CwomIds | None]:
    objects = item.built.objects
    if objects is not None and objects.new_repo:
        REPOS.put(engine, plan.task.target.repo, objects.ids.repo_id)
    return item.built.task, objects.ids if objects else None


def write(
    engine: Engine, plan: IntakePlan, *, redactor: audit.Redacts | None = None, fail_after_cwom: bool = False
) -> tuple[dict[str, Any], CwomIds | None] | None:
    """Store the task (its columns come back); None when its idempotency key is already taken
    (nothing was written)."""
    slug = plan.task.target.repo
    for attempt in range(1, _RETRIES + 1):
        item = _item(plan, REPOS.get(engine, slug) if plan.create_cwom else None, redactor)
        try:
            if fail_after_cwom:
                _execute(engine, [item], fail_after_cwom=True)
            if _alone(item):
                created = item.built.task["id"] in _execute(engine, [item])
            else:
                created = _group(engine).submit(item)
        except IntegrityError as exc:
            # A Repo created meanwhile by another intake, or a cached Repo id gone stale.
            REPOS.forget(engine, slug)
            if attempt == _RETRIES or not plan.create_cwom:
                raise RuntimeError(f"intake could not be stored after {attempt} attempts") from exc
            continue
        return _stored(engine, plan, item) if created else None
    raise AssertionError("unreachable")  # pragma: no cover


class AsyncWriter:
    """The same writer for coroutines: the HTTP intake path of one server process (one event loop).

    It owns one asyncio connection (psycopg's, in autocommit) and an `AsyncGroupCommit` over it, so
    a request is validated, planned and stored without leaving the event loop: no thread-pool hop
    per request, no pool checkout (and its liveness ping) per statement, no thread hand-offs in the
    group commit. The statement, the Repo cache and the retry rules are those of `write`. One
    connection is enough: group commit runs one statement at a time anyway. Like the pool's
    pre-ping, a connection idle for `idle_ping_s` is checked before use and replaced if the server
    dropped it (a restart); one that breaks under a statement fails that statement's tasks (never
    retried blindly: the commit may have happened) and is replaced for the next one
    (`control_tower.pg_async.AsyncConnection`, shared with the webhook's delivery store).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn = AsyncConnection(engine, APPLICATION_NAME)
        self._group: AsyncGroupCommit[_Item, bool] = AsyncGroupCommit(self._write_group, batch_max=BATCH_MAX)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        return await self._conn.get()

    async def aclose(self) -> None:
        """Close the connection (the app's shutdown)."""
        await self._conn.aclose()

    async def _execute(self, items: list[_Item]) -> set[str]:
        conn = await self._connection()
        cur = await conn.execute(statement(), _params(items))
        row = await cur.fetchone()
        if row is None:  # pragma: no cover - the statement always returns one row
            raise RuntimeError("intake statement returned no row")
        return set(row[0])

    async def _write_group(self, items: Sequence[_Item]) -> list[bool]:
        created = await self._execute(list(items))
        return [item.built.task["id"] in created for item in items]

    async def _repo_id(self, slug: str) -> str | None:
        found = REPOS.cached(self.engine, slug)
        if found is None:
            conn = await self._connection()
            cur = await conn.execute(f"SELECT id FROM {RepoRow.__tablename__} WHERE slug = %s", (slug,))
            row = await cur.fetchone()
            if row is not None:
                found = str(row[0])
                REPOS.put(self.engine, slug, found)
        return found

    async def write(
        self, plan: IntakePlan, *, redactor: audit.Redacts | None = None
    ) -> tuple[dict[str, Any], CwomIds | None] | None:
        """Store the task; None when its idempotency key is already taken (nothing was written)."""
        slug = plan.task.target.repo
        for attempt in range(1, _RETRIES + 1):
            item = _item(plan, await self._repo_id(slug) if plan.create_cwom else None, redactor)
            try:
                if _alone(item):
                    created = item.built.task["id"] in await self._execute([item])
                else:
                    created = await self._group.submit(item)
            except psycopg.IntegrityError as exc:
                REPOS.forget(self.engine, slug)
                if attempt == _RETRIES or not plan.create_cwom:
                    raise RuntimeError(f"intake could not be stored after {attempt} attempts") from exc
                continue
            return _stored(self.engine, plan, item) if created else None
        raise AssertionError("unreachable")  # pragma: no cover
