"""The run queue's hot paths on PostgreSQL: a claim, and a group of transitions, each ONE statement.

Each statement runs in autocommit, so it is one transaction and one round trip, and it carries
everything the change owes: the runs' update, the tasks' mirrored status, the wake-ups and the audit
rows (`audit.pg_chain_ctes`), so the audit chain head is locked inside the server only, for the audit
inserts and the commit, with no Python and no network in between.

A claim's audit rows depend on what the claim found (which runs, which attempt), so they are written
from a template: the row's canonical JSON is prepared in Python (ids, redaction, canonical form) with
`Hole`s where the statement's own values go, and split around them; the statement joins the literal
pieces and SQL expressions that render each value as `json.dumps` would (`to_json` escapes as it does,
and an integer's text is its JSON). Redaction never touches a hole: the holes inside `before` and
`after` are integers, the others (ids, trace id) are not redacted by the Python path either.

A transition's audit row is known in Python already; the statement writes it only if its fenced
update matched (the gate), so a worker that lost its lease writes nothing at all.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from control_tower.tables import TaskRow
from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import RUN_TO_TASK, RunStatus
from cwom.tables import ArtifactRow, RunRow
from worker import step_rows
from worker.artifacts import created_entry
from worker.run_steps import RunStepRow

_RUNS = RunRow.__tablename__
_TASKS = TaskRow.__tablename__
_STEPS = RunStepRow.__tablename__
_ARTIFACTS = ArtifactRow.__tablename__
_STEP_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in step_rows.UPDATED)
_STATUS_CHANGED = "status_changed"


@dataclass(frozen=True)
class Hole:
    """A value of an audit row that only the statement writing it knows."""

    name: str

    def __str__(self) -> str:
        # NUL cannot occur in a stored string, so its JSON escape marks nothing but a hole.
        return f"\x00{self.name}\x00"


_HOLE_RE = re.compile(r'"\\u0000(\w+)\\u0000"')
Pieces = list[str | Hole]


def split_holes(text: str, expected: dict[str, int]) -> Pieces:
    """Canonical JSON cut around its holes: literal text and `Hole`s, alternating, literal first."""
    pieces: Pieces = []
    seen: dict[str, int] = {}
    last = 0
    for match in _HOLE_RE.finditer(text):
        pieces += [text[last : match.start()], Hole(match.group(1))]
        seen[match.group(1)] = seen.get(match.group(1), 0) + 1
        last = match.end()
    pieces.append(text[last:])
    if seen != expected:  # pragma: no cover - a value cannot hold NUL; guard the invariant anyway
        raise ValueError(f"audit template holes {seen} != {expected}")
    return pieces


class _Sql:
    """Builds a statement's text and its parameters together (literal pieces become parameters)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def param(self, value: Any, cast: str = "text") -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"CAST(%({name})s AS {cast})"

    def concat(self, pieces: Pieces, holes: dict[str, str]) -> str:
        parts = [holes[p.name] if isinstance(p, Hole) else self.param(p) for p in pieces if p != ""]
        return "(" + " || ".join(parts) + ")"


# -- claim --------------------------------------------------------------------------------------------

# SQL rendering the canonical JSON of each hole's value, over the claimed row `taken`.
_CLAIM_HOLES = {
    "id": "to_json(taken.audit_id)::text",
    "run": "to_json(taken.id::text)::text",
    "trace": "coalesce(to_json(taken.trace_id::text)::text, 'null')",
    "attempt": "taken.attempt::text",
    "prev": "(taken.attempt - 1)::text",
    "ts": "to_json(CAST(%(ts)s AS text))::text",
}
# Claim rows come after a statement's transition rows in the chain.
_CLAIM_ORDER = 1_000_000


@dataclass(frozen=True)
class ClaimedRow:
    """What a claim returns for one run it took."""

    run_id: str
    task_id: str | None
    attempt: int
    trace_id: str | None


@dataclass(frozen=True)
class _Part:
    """A statement's CTEs for one kind of change, the jsonb array of its audit rows, and the
    parameters that never change."""

    ctes: str
    audit_rows: str
    params: dict[str, Any]


@lru_cache(maxsize=64)
def _claim_part(worker_id: str, redactor: Any) -> _Part:
    """The claim CTEs for one worker and its audit template (built once per worker: every value that
    changes, the timestamp included, is a hole, so the statement's text never changes and PostgreSQL
    keeps its plan).

    Parameters per call: now, until, limit, ids (one audit id per run it may take), ts, and
    exclude_tasks (tasks the same statement also changes: a row is updated once per statement).
    """
    sql = _Sql()
    actor = Actor("worker", worker_id)
    before: dict[str, Any] = {"status": RunStatus.QUEUED.value, "attempt": Hole("prev")}
    after: dict[str, Any] = {
        "status": RunStatus.RUNNING.value,
        "attempt": Hole("attempt"),
        "locked_by": worker_id,
    }
    if redactor is not None:
        # Holes pass through redaction untouched (they are neither text nor containers).
        before, after = redactor.redact_json(before), redactor.redact_json(after)
    fields = audit.hashed_fields(
        id=str(Hole("id")),
        seq=0,
        ts=utcnow(),
        actor_kind=actor.kind,
        actor_id=actor.id,
        action=_STATUS_CHANGED,
        entity_kind="run",
        entity_id=str(Hole("run")),
        before=before,
        after=after,
        note=None,
        trace_id=str(Hole("trace")),
    )
    fields["seq"], fields["ts"] = str(Hole("seq")), str(Hole("ts"))
    holes = {"id": 1, "run": 1, "trace": 1, "attempt": 1, "prev": 1, "seq": 1, "ts": 1}
    whole = split_holes(audit.canonical(fields), holes)
    cut = whole.index(Hole("seq"))
    prefix, suffix = whole[:cut], whole[cut + 1 :]
    before_sql = sql.concat(split_holes(audit.canonical(before), {"prev": 1}), _CLAIM_HOLES)
    after_sql = sql.concat(split_holes(audit.canonical(after), {"attempt": 1}), _CLAIM_HOLES)
    rows = (
        "(SELECT coalesce(jsonb_agg(jsonb_build_object("  # noqa: S608 - values are parameters
        f"'n', {_CLAIM_ORDER} + taken.n, 'task', 'claim', 'id', taken.audit_id, 'ts', CAST(%(ts)s AS text),"
        f" 'actor_kind', {sql.param(actor.kind)}, 'actor_id', {sql.param(actor.id)},"
        f" 'action', {sql.param(_STATUS_CHANGED)}, 'entity_kind', {sql.param('run')}, 'entity_id', taken.id,"
        f" 'before', CAST({before_sql} AS jsonb), 'after', CAST({after_sql} AS jsonb),"
        " 'note', NULL, 'trace_id', taken.trace_id,"
        f" 'prefix', {sql.concat(prefix, _CLAIM_HOLES)}, 'suffix', {sql.concat(suffix, _CLAIM_HOLES)}"
        ")), '[]'::jsonb) FROM taken)"
    )
    ctes = f"""
picked AS (
    SELECT id FROM {_RUNS}
    WHERE status = 'queued' AND available_at <= %(now)s
      AND (task_id IS NULL OR NOT task_id = ANY(CAST(%(exclude_tasks)s AS text[])))
    ORDER BY priority, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE {_RUNS} r
    SET status = 'running', locked_by = %(worker)s, lease_expires_at = %(until)s, attempt = r.attempt + 1,
        started_at = %(now)s, updated_at = %(now)s, version = r.version + 1
    FROM picked WHERE r.id = picked.id
    RETURNING r.id, r.task_id, r.attempt, r.trace_id, r.priority, r.created_at
),
numbered AS (
    SELECT claimed.*, (row_number() OVER (ORDER BY priority, created_at, id))::int AS n FROM claimed
),
taken AS (SELECT numbered.*, (CAST(%(ids)s AS text[]))[numbered.n] AS audit_id FROM numbered),
claim_mirrored AS (
    UPDATE {_TASKS} t SET status = %(claim_task_status)s, updated_at = %(now)s
    FROM taken WHERE t.id = taken.task_id RETURNING t.id
)"""  # noqa: S608 - table names are ours
    fixed = {**sql.params, "worker": worker_id, "claim_task_status": RUN_TO_TASK[RunStatus.RUNNING].value}
    return _Part(ctes, rows, fixed)


_CLAIM_RESULT = (
    "(SELECT coalesce(jsonb_agg(jsonb_build_array(taken.id, taken.task_id, taken.attempt, taken.trace_id)"
    " ORDER BY taken.n), '[]'::jsonb) FROM taken) AS claims,"
    " (SELECT count(*) FROM claim_mirrored) AS claim_mirrored"
)


def _cache_key(redactor: audit.Redacts | None) -> Hashable:
    """A redactor as a cache key (by identity, as objects hash): statements are cached per redactor."""
    return cast(Hashable, redactor)


def _assemble(ctes: Sequence[str], audit_rows: str, gate: str, results: Sequence[str]) -> str:
    """WITH the parts' CTEs and the audit chain's; SELECT the results in order, the audit last (its
    scalar subquery takes the chain head's lock, so the lock is taken after every other change)."""
    chain = audit.pg_chain_ctes(audit_rows, gate=gate)
    # One line: psycopg caches the conversion of statements up to 4 kB, and the text is shorter.
    return _one_line(
        "WITH RECURSIVE"  # noqa: S608 - every part is this module's own text
        + ",".join([*ctes, chain])
        + "\nSELECT "
        + ", ".join([*results, "(SELECT count(*) FROM ins) AS audited"])
    )


def _one_line(statement: str) -> str:
    """The statement with each run of white space made one space (no literal holds two)."""
    return " ".join(statement.split())


def _claim_params(limit: int, now: datetime, lease: timedelta, exclude_tasks: list[str]) -> dict[str, Any]:
    return {
        "now": now,
        "until": now + lease,
        "limit": limit,
        "ids": [new_id() for _ in range(limit)],
        "ts": utcnow().isoformat(timespec="microseconds"),
        "exclude_tasks": exclude_tasks,
    }


@lru_cache(maxsize=64)
def _claim_statement(worker_id: str, redactor: Any) -> str:
    part = _claim_part(worker_id, redactor)
    return _assemble([part.ctes], part.audit_rows, "TRUE", [_CLAIM_RESULT])


def _claimed(rows: list[list[Any]]) -> list[ClaimedRow]:
    return [ClaimedRow(run_id, task_id, attempt, trace) for run_id, task_id, attempt, trace in rows]


def claim(
    link: Link,
    *,
    worker_id: str,
    limit: int,
    now: datetime,
    lease: timedelta,
    redactor: audit.Redacts | None,
) -> list[ClaimedRow]:
    """Claim up to `limit` due runs (priority, then age) for `worker_id`, in one statement."""
    key = _cache_key(redactor)
    part = _claim_part(worker_id, key)
    params = {**part.params, **_claim_params(limit, now, lease, [])}
    result = link.execute(_claim_statement(worker_id, key), params)
    claimed = _claimed(result.claims)
    if result.audited != len(claimed):  # pragma: no cover - the statement writes all or fails
        raise RuntimeError(f"claim audited {result.audited} of {len(claimed)} runs")
    return claimed


# -- what an executor reads for a claim ---------------------------------------------------------------

# The run, its task and its doctrines (as one jsonb array), in one statement: the executor's load, sent
# in autocommit on a kept connection (no BEGIN, no ROLLBACK at the pool's return, no checkout).
LOAD = _one_line(
    f"""
SELECT r.issue_id, r.telemetry, r.created_at, t.body, t.policy_version,
    (SELECT coalesce(jsonb_agg(jsonb_build_array(d.content, d.namespace) ORDER BY d.namespace, d.id),
                     '[]'::jsonb)
     FROM cwom_run_doctrine_refs rd JOIN cwom_doctrine_refs d ON d.id = rd.doctrine_ref_id
     WHERE rd.run_id = r.id) AS doctrines
FROM {_RUNS} r LEFT JOIN {_TASKS} t ON t.id = r.task_id
WHERE r.id = %(run_id)s
"""  # noqa: S608 - table names are ours
)


class Link:
    """How a queue sends its statements: one pooled psycopg connection in autocommit.

    While held (a Worker is running), the connection stays checked out, so a statement costs no pool
    checkout and no ping round trip; it is given back, or dropped when it broke, on release. Not
    held, each statement checks a connection out and gives it back. Errors are raised as SQLAlchemy's
    (`OperationalError` for a lost server...), as the rest of the code expects.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._holders = 0
        self._conn: PoolProxiedConnection | None = None
        self._generic = False  # the kept connection plans our statements once (reset on release)

    def hold(self) -> None:
        """Keep a connection between statements until `release()`."""
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        """Give the kept connection back to the pool."""
        with self._lock:
            self._holders = max(0, self._holders - 1)
            if not self._holders:
                self._drop(broken=False)

    def execute(self, statement: str, params: dict[str, Any]) -> Any:
        """Run one statement in its own transaction; its single result row (columns by name)."""
        with self._lock:
            fresh = self._conn is None
            if self._conn is None:
                self._conn = self.engine.raw_connection()
            conn = self._conn
            driver = conn.driver_connection
            assert isinstance(driver, psycopg.Connection)
            try:
                driver.autocommit = True
                if fresh and self._holders:
                    # The statements' plans do not depend on their values (the rows arrive as one
                    # jsonb array): plan each once per connection, not at every execution. They read
                    # rows by key or walk the claim index in order; a bitmap scan is never right for
                    # them, yet without fresh statistics (a burst after ANALYZE saw an empty queue) the
                    # planner takes one for `status = 'queued'` and fetches and sorts every queued run
                    # for each claim.
                    driver.execute("SET plan_cache_mode = force_generic_plan")
                    driver.execute("SET enable_bitmapscan = off")
                    self._generic = True
                with driver.cursor(row_factory=namedtuple_row) as cur:
                    row = cur.execute(statement, params).fetchone()
            except psycopg.Error as exc:
                broken = driver.broken or driver.closed
                self._drop(broken=broken)
                raise DBAPIError.instance(
                    None, None, exc, psycopg.Error, connection_invalidated=broken
                ) from exc
            except BaseException:
                self._drop(broken=False)
                raise
            if not self._holders:
                self._drop(broken=False)
            return row

    def _drop(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        generic, self._generic = self._generic, False
        if conn is None:
            return
        if broken:
            conn.invalidate()
            return
        driver = conn.driver_connection
        if isinstance(driver, psycopg.Connection) and not driver.closed:
            try:
                if generic:
                    driver.execute("RESET plan_cache_mode")
                    driver.execute("RESET enable_bitmapscan")
                driver.autocommit = False  # as the pool handed it out
            except psycopg.Error:
                conn.invalidate()
                return
        conn.close()


# -- transitions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One fenced transition of a run this worker holds, as the group statement takes it."""

    run_id: str
    task_id: str | None
    trace_id: str | None
    attempt: int
    worker_id: str
    to: RunStatus
    error_code: str | None
    error_message: str | None
    outputs: list[Any] | None
    telemetry: dict[str, Any] | None
    note: str | None
    steps: tuple[list[dict[str, Any]], str | None] | None = None
    artifacts: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Refill:
    """Runs to claim in the same statement, for the slots its transitions free."""

    worker_id: str
    limit: int
    lease: timedelta


@dataclass(frozen=True)
class Applied:
    """The statement's verdict per change (written, left to the general path, or else fenced out)
    and the runs it claimed."""

    written: set[int]
    general: set[int]
    claimed: list[ClaimedRow]


_TERMINAL = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED})


def audit_entry(change: Change) -> audit.Entry:
    """The audit row a transition writes (the same as the general path's, for a run that had no
    error code of its own, which the statement checks)."""
    released = change.to in (RunStatus.WAITING, RunStatus.QUEUED)
    after: dict[str, Any] = {
        "status": change.to.value,
        "attempt": change.attempt,
        "locked_by": None if released else change.worker_id,
    }
    if change.error_code:
        after["error_code"] = change.error_code
    return audit.Entry(
        actor=Actor("worker", change.worker_id),
        action=_STATUS_CHANGED,
        entity_kind="run",
        entity_id=change.run_id,
        before={"status": RunStatus.RUNNING.value, "attempt": change.attempt, "locked_by": change.worker_id},
        after=after,
        note=change.note,
        trace_id=change.trace_id,
    )


# The fence (id, attempt, locked_by, running) is re-checked by PostgreSQL after it waits for a row
# lock, so a concurrent reap or cancel makes the change match nothing. The audit row was built for the
# run's trace id and task, and for a run without an error code of its own unless the change sets one:
# a run that differs is not written here but handed back (`general`).
_TRANSITION_CTES = f"""
chg AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(changes)s AS jsonb)) AS chg(
        n int, run text, task text, trace text, attempt int, worker text, status text, task_status text,
        set_error bool, error_code text, error_message text, outputs jsonb, telemetry jsonb,
        terminal bool, release bool, requeue bool, steps jsonb, current_step text, artifacts jsonb)
),
taken_keys AS (
    SELECT DISTINCT chg.n FROM chg CROSS JOIN LATERAL jsonb_array_elements(chg.artifacts) AS a(v)
    JOIN {_ARTIFACTS} x ON x.idempotency_key = a.v->>'idempotency_key'
    WHERE chg.artifacts IS NOT NULL
),
u AS (
    UPDATE {_RUNS} r SET
        status = chg.status, updated_at = %(now)s, version = r.version + 1,
        error_code = CASE WHEN chg.set_error THEN chg.error_code ELSE r.error_code END,
        error_message = CASE WHEN chg.set_error THEN chg.error_message ELSE r.error_message END,
        outputs = coalesce(chg.outputs, r.outputs),
        telemetry = CASE WHEN chg.telemetry IS NULL THEN r.telemetry
                         ELSE coalesce(r.telemetry, '{{}}'::jsonb) || chg.telemetry END,
        lease_expires_at = CASE WHEN chg.terminal OR chg.release THEN NULL ELSE r.lease_expires_at END,
        ended_at = CASE WHEN chg.terminal THEN %(now)s ELSE r.ended_at END,
        locked_by = CASE WHEN chg.release THEN NULL ELSE r.locked_by END,
        available_at = CASE WHEN chg.requeue THEN %(now)s ELSE r.available_at END,
        max_attempts = CASE WHEN chg.requeue THEN r.max_attempts + 1 ELSE r.max_attempts END,
        current_step = coalesce(chg.current_step, r.current_step)
    FROM chg
    WHERE r.id = chg.run AND r.attempt = chg.attempt AND r.locked_by = chg.worker AND r.status = 'running'
      AND r.trace_id IS NOT DISTINCT FROM chg.trace AND r.task_id IS NOT DISTINCT FROM chg.task
      AND (chg.set_error OR coalesce(r.error_code, '') = '')
      AND chg.n NOT IN (SELECT n FROM taken_keys)
    RETURNING chg.n, r.id, r.task_id
),
general AS (
    SELECT chg.n FROM chg JOIN {_RUNS} r
      ON r.id = chg.run AND r.attempt = chg.attempt AND r.locked_by = chg.worker AND r.status = 'running'
    WHERE (SELECT count(*) FROM u) < (SELECT count(*) FROM chg)
      AND (NOT (r.trace_id IS NOT DISTINCT FROM chg.trace AND r.task_id IS NOT DISTINCT FROM chg.task
                AND (chg.set_error OR coalesce(r.error_code, '') = ''))
           OR chg.n IN (SELECT n FROM taken_keys))
),
final_steps AS (
    INSERT INTO {_STEPS} (id, run_id, attempt, n, step_id, type, status, started_at, ended_at, output,
                          error_code, error_message)
    SELECT s.id, u.id, chg.attempt, s.n, s.step_id, s.type, s.status, s.started_at, s.ended_at, s.output,
           s.error_code, s.error_message
    FROM u JOIN chg ON chg.n = u.n CROSS JOIN LATERAL jsonb_to_recordset(chg.steps) AS s(
        id text, n int, step_id text, type text, status text, started_at timestamptz,
        ended_at timestamptz, output jsonb, error_code text, error_message text)
    WHERE chg.steps IS NOT NULL
    ON CONFLICT (run_id, attempt, n) DO UPDATE SET {_STEP_UPDATES}
    RETURNING 1
),
new_artifacts AS (
    INSERT INTO {_ARTIFACTS} (id, run_id, issue_id, type, title, uri, digest, verification, idempotency_key,
                              trace_id, created_at, updated_at)
    SELECT a.id, u.id, a.issue_id, a.type, a.title, a.uri, a.digest, a.verification, a.idempotency_key,
           a.trace_id, a.created_at, a.updated_at
    FROM u JOIN chg ON chg.n = u.n CROSS JOIN LATERAL jsonb_to_recordset(chg.artifacts) AS a(
        id text, issue_id text, type text, title text, uri text, digest text, verification jsonb,
        idempotency_key text, trace_id text, created_at timestamptz, updated_at timestamptz)
    WHERE chg.artifacts IS NOT NULL
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING 1
),
moved_tasks AS (
    UPDATE {_TASKS} t SET status = chg.task_status, updated_at = %(now)s,
        error_code = CASE WHEN chg.set_error THEN chg.error_code ELSE t.error_code END,
        error_message = CASE WHEN chg.set_error THEN chg.error_message ELSE t.error_message END
    FROM u JOIN chg ON chg.n = u.n WHERE t.id = u.task_id
    RETURNING t.id
),
woken AS (SELECT pg_notify(%(channel)s, u.id) FROM u JOIN chg ON chg.n = u.n WHERE chg.requeue)"""  # noqa: S608
_TRANSITION_RESULT = (
    "(SELECT coalesce(array_agg(n), '{}') FROM u) AS written,"
    " (SELECT coalesce(array_agg(n), '{}') FROM general) AS general,"
    " (SELECT count(*) FROM moved_tasks) AS moved_tasks, (SELECT count(*) FROM woken) AS woken,"
    " (SELECT count(*) FROM final_steps) AS steps_written, (SELECT count(*) FROM new_artifacts) AS artifacts"
)
_TRANSITION_GATE = "r.task IN (SELECT n::text FROM u)"


@cache
def _transition_statement() -> str:
    return _assemble([_TRANSITION_CTES], "%(audit)s", _TRANSITION_GATE, [_TRANSITION_RESULT])


@lru_cache(maxsize=64)
def _refill_statement(worker_id: str, redactor: Any) -> str:
    """Transitions and a claim in one statement: one audit chain append for both."""
    part = _claim_part(worker_id, redactor)
    rows = f"(CAST(%(audit)s AS jsonb) || {part.audit_rows})"
    gate = f"{_TRANSITION_GATE} OR r.task = 'claim'"
    return _assemble([_TRANSITION_CTES, part.ctes], rows, gate, [_TRANSITION_RESULT, _CLAIM_RESULT])


def artifact_outputs(outputs: list[Any] | None, ids: Sequence[str]) -> list[Any] | None:
    """A run's outputs: those given, then one entry per artifact written with the transition."""
    if not ids:
        return outputs
    return [*(outputs or []), *({"kind": "artifact", "id": i} for i in ids)]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def transitions(
    link: Link,
    changes: Sequence[Change],
    *,
    now: datetime,
    channel: str,
    redactor: audit.Redacts | None,
    refill: Refill | None = None,
) -> Applied:
    """Apply fenced transitions of distinct runs (and distinct tasks) in one statement, and claim up
    to `refill.limit` runs in it too.

    Raises when the statement fails, and then nothing of it was written.
    """
    # Each change's artifact rows, then its own, all gated on its update (`task` = its number).
    entries: list[audit.Entry] = []
    tasks: list[str] = []
    for n, change in enumerate(changes):
        for values in change.artifacts or []:
            entries.append(created_entry(values))
            tasks.append(str(n))
        entries.append(audit_entry(change))
        tasks.append(str(n))
    prepared = audit.prepare(entries, redactor)
    rows = []
    for n, change in enumerate(changes):
        row: dict[str, Any] = {
            "n": n,
            "run": change.run_id,
            "task": change.task_id,
            "trace": change.trace_id,
            "attempt": change.attempt,
            "worker": change.worker_id,
            "status": change.to.value,
            "task_status": RUN_TO_TASK[change.to].value,
            "set_error": change.error_code is not None,
            "error_code": change.error_code,
            "error_message": change.error_message,
            "terminal": change.to in _TERMINAL,
            "release": change.to in (RunStatus.WAITING, RunStatus.QUEUED),
            "requeue": change.to is RunStatus.QUEUED,
        }
        outputs = artifact_outputs(change.outputs, [str(v["id"]) for v in change.artifacts or []])
        if outputs is not None:
            row["outputs"] = outputs
        if change.telemetry:
            row["telemetry"] = change.telemetry
        if change.steps is not None:
            row["steps"] = [
                {**step, "started_at": _iso(step["started_at"]), "ended_at": _iso(step["ended_at"])}
                for step in change.steps[0]
            ]
            row["current_step"] = change.steps[1]
        if change.artifacts:
            row["artifacts"] = [
                {**values, "created_at": _iso(values["created_at"]), "updated_at": _iso(values["updated_at"])}
                for values in change.artifacts
            ]
        rows.append(row)
    params: dict[str, Any] = {
        # json.dumps, the serializer SQLAlchemy uses for these columns on the general path: a value
        # it refuses is refused here too (and fails only its own change, see RunQueue).
        "changes": json.dumps(rows),
        "audit": audit.pg_payload(prepared, tasks=tasks),
        "now": now,
        "channel": channel,
    }
    if refill is not None and refill.limit > 0:
        key = _cache_key(redactor)
        part = _claim_part(refill.worker_id, key)
        tasks = [c.task_id for c in changes if c.task_id is not None]
        params.update(part.params, **_claim_params(refill.limit, now, refill.lease, tasks))
        statement = _refill_statement(refill.worker_id, key)
    else:
        statement = _transition_statement()
    result = link.execute(statement, params)
    written = set(result.written)
    claimed = _claimed(result.claims) if refill is not None and refill.limit > 0 else []
    artifacts = sum(len(changes[n].artifacts or []) for n in written)
    if result.artifacts != artifacts:  # pragma: no cover - the update excludes a change whose key exists
        raise RuntimeError(f"wrote {result.artifacts} of {artifacts} artifacts")
    if result.audited != len(written) + artifacts + len(claimed):  # pragma: no cover - all or nothing
        raise RuntimeError(f"audited {result.audited} rows for {len(written)} changes, {len(claimed)} claims")
    return Applied(written=written, general=set(result.general), claimed=claimed)
