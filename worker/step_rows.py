"""The executor's step bookkeeping, batched: the latest state of each step row, written as one upsert.

A step's `run_steps` row is inserted when the step begins and updated when it ends. The executor
writes them behind (see `RunExecutor._flush`), so several changes are often pending at once: a quick
step's begin and end, or a long step's end beside the next step's begin. Keeping only each row's
latest full state turns those into one multi-row `INSERT … ON CONFLICT (run_id, attempt, n) DO
UPDATE`, plus one UPDATE of the run's `current_step`, instead of an INSERT, an UPDATE and an ORM
load of the run per change. What ends up stored is the same: the begin time is kept in memory for
the end's row, and a step that never began (skipped) has no `started_at`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cwom.base import new_id, utcnow
from cwom.tables import RunRow
from worker.run_steps import RunStepRow, StepStatus

_STEPS = RunStepRow.__table__
_CONFLICT = ["run_id", "attempt", "n"]
UPDATED = ("step_id", "type", "status", "started_at", "ended_at", "output", "error_code", "error_message")


class StepRows:
    """Pending step-row changes of one attempt of a run, made by the thread that runs it."""

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, Any]] = {}
        self._started: dict[int, datetime] = {}
        self._current: str | None = None

    def begin(self, n: int, step_id: str, type: str) -> None:
        """Step `n` is running from now; the run's current step becomes it."""
        now = utcnow()
        self._started[n] = now
        self._rows[n] = self._row(n, step_id, type, StepStatus.RUNNING, now, None, {}, None, None)
        self._current = step_id

    def end(
        self,
        n: int,
        step_id: str,
        type: str,
        status: StepStatus,
        *,
        output: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        started: bool = True,
    ) -> None:
        """How step `n` ended (`started=False`: it never ran, e.g. skipped); a waiting step has no end."""
        ended = None if status is StepStatus.WAITING else utcnow()
        began = self._started.get(n) if started else None
        self._rows[n] = self._row(
            n, step_id, type, status, began, ended, output or {}, error_code, error_message
        )

    def pending(self) -> bool:
        """Whether anything is left to write."""
        return bool(self._rows) or self._current is not None

    def restore(self, rows: list[dict[str, Any]], current: str | None) -> None:
        """Put back what an earlier `take` returned and was not written; changes made since win."""
        merged = {row["n"]: row for row in rows}
        merged.update(self._rows)
        self._rows = dict(sorted(merged.items()))
        if self._current is None:
            self._current = current

    def take(self) -> tuple[list[dict[str, Any]], str | None]:
        """The rows and current step to write now, leaving nothing pending."""
        rows, current = list(self._rows.values()), self._current
        self._rows, self._current = {}, None
        return rows, current

    @staticmethod
    def _row(
        n: int,
        step_id: str,
        type: str,
        status: StepStatus,
        started_at: datetime | None,
        ended_at: datetime | None,
        output: dict[str, Any],
        error_code: str | None,
        error_message: str | None,
    ) -> dict[str, Any]:
        return {
            "id": new_id(),
            "n": n,
            "step_id": step_id,
            "type": type,
            "status": status.value,
            "started_at": started_at,
            "ended_at": ended_at,
            "output": output,
            "error_code": error_code,
            "error_message": error_message,
        }


def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_STEPS)
    return stmt.on_conflict_do_update(index_elements=_CONFLICT, set_={c: stmt.excluded[c] for c in UPDATED})


# Built once, so SQLAlchemy compiles each once; rows go as executemany parameters.
_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
_RUNS = RunRow.__table__
_CURRENT = (
    update(_RUNS)  # type: ignore[arg-type]
    .where(_RUNS.c.id == bindparam("run_id"))
    .values(current_step=bindparam("current_step"), updated_at=bindparam("updated_at"))
)


def write_step_rows(
    session: Session, *, run_id: str, attempt: int, rows: list[dict[str, Any]], current: str | None
) -> None:
    """Upsert `rows` of one attempt and move the run's current step (in the caller's fenced transaction)."""
    connection = session.connection()
    if rows:
        connection.execute(
            _UPSERT[connection.dialect.name], [{**row, "run_id": run_id, "attempt": attempt} for row in rows]
        )
    if current is not None:
        connection.execute(_CURRENT, {"run_id": run_id, "current_step": current, "updated_at": utcnow()})


# PostgreSQL: the same writes, fenced, as ONE autocommit statement (one round trip, one transaction):
# `owned` locks the run's row only if this claim still holds it (PostgreSQL re-checks the condition
# after waiting for the lock), and both writes join it, so a claim that lost its lease writes nothing
# and the caller learns so from `owned = 0`. Used for the write that stands alone (before a long step),
# in place of BEGIN, SELECT ... FOR UPDATE, the upsert, the UPDATE and COMMIT from the ORM.
_STEPS_T = RunStepRow.__tablename__
_RUNS_T = RunRow.__tablename__
PG_FENCED_WRITE = " ".join(
    f"""
WITH owned AS (
    SELECT id FROM {_RUNS_T}
    WHERE id = %(run)s AND attempt = %(attempt)s AND locked_by = %(worker)s AND status = 'running'
    FOR UPDATE
),
steps AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb)) AS s(
        id text, n int, step_id text, type text, status text, started_at timestamptz,
        ended_at timestamptz, output jsonb, error_code text, error_message text)
),
up AS (
    INSERT INTO {_STEPS_T} (id, run_id, attempt, n, step_id, type, status, started_at, ended_at, output,
                            error_code, error_message)
    SELECT steps.id, owned.id, %(attempt)s, steps.n, steps.step_id, steps.type, steps.status,
           steps.started_at, steps.ended_at, steps.output, steps.error_code, steps.error_message
    FROM steps CROSS JOIN owned
    ON CONFLICT (run_id, attempt, n) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in UPDATED)}
    RETURNING 1
),
cur AS (
    UPDATE {_RUNS_T} r SET current_step = CAST(%(current)s AS text), updated_at = %(now)s
    FROM owned WHERE r.id = owned.id AND CAST(%(current)s AS text) IS NOT NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM owned) AS owned, (SELECT count(*) FROM up) AS written,
       (SELECT count(*) FROM cur) AS moved
""".split()  # noqa: S608 - table and column names are this module's own
)


def pg_fenced_params(
    *, run_id: str, attempt: int, worker_id: str, rows: list[dict[str, Any]], current: str | None
) -> dict[str, Any]:
    """The parameters of PG_FENCED_WRITE (rows as one jsonb array; timestamps in ISO 8601)."""
    return {
        "run": run_id,
        "attempt": attempt,
        "worker": worker_id,
        "rows": json.dumps(
            [
                {
                    **row,
                    "started_at": _iso(row["started_at"]),
                    "ended_at": _iso(row["ended_at"]),
                }
                for row in rows
            ]
        ),
        "current": current,
        "now": utcnow(),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
