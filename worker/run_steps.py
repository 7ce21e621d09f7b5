"""The `run_steps` table: one row per step execution (run, attempt, ordinal), and its few operations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cwom.base import Base, ULIDStr, new_id, utcnow
from cwom.rows import insert_ignore, snapshot


class StepStatus(StrEnum):
    """Where one step execution stands."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"


class RunStepRow(Base):
    """One execution of one playbook step in one attempt of a run."""

    __tablename__ = "run_steps"

    id: Mapped[str] = mapped_column(ULIDStr, primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("cwom_runs.id"))
    n: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.PENDING.value)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("run_id", "attempt", "n", name="uq_run_steps_run_attempt_n"),
        Index("ix_run_steps_run_id", "run_id", "n"),
    )


def begin_step(session: Session, *, run_id: str, attempt: int, n: int, step_id: str, type: str) -> str:
    """Mark a step running in this attempt (inserted once; a repeat call restarts the same row)."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "run_id": run_id,
        "n": n,
        "step_id": step_id,
        "type": type,
        "attempt": attempt,
        "status": StepStatus.RUNNING.value,
        "started_at": now,
        "output": {},
    }
    created = insert_ignore(session, RunStepRow, values, conflict=["run_id", "attempt", "n"])
    if created is not None:
        return str(created.id)
    row_id = session.execute(
        update(RunStepRow)
        .where(RunStepRow.run_id == run_id, RunStepRow.attempt == attempt, RunStepRow.n == n)
        .values(
            status=StepStatus.RUNNING.value,
            started_at=now,
            ended_at=None,
            error_code=None,
            error_message=None,
        )
        .returning(RunStepRow.id)
    ).scalar_one()
    return str(row_id)


def end_step(
    session: Session,
    *,
    run_id: str,
    attempt: int,
    n: int,
    step_id: str,
    type: str,
    status: StepStatus,
    output: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    started: bool = True,
) -> None:
    """Record how a step ended (inserting the row for a step that never started, e.g. skipped)."""
    now = utcnow()
    if not started:
        insert_ignore(
            session,
            RunStepRow,
            {
                "id": new_id(),
                "run_id": run_id,
                "n": n,
                "step_id": step_id,
                "type": type,
                "attempt": attempt,
                "status": status.value,
                "started_at": None,
                "output": {},
            },
            conflict=["run_id", "attempt", "n"],
        )
    ended = None if status is StepStatus.WAITING else now
    session.execute(
        update(RunStepRow)
        .where(RunStepRow.run_id == run_id, RunStepRow.attempt == attempt, RunStepRow.n == n)
        .values(
            status=status.value,
            ended_at=ended,
            output=output or {},
            error_code=error_code,
            error_message=error_message,
        )
    )


def completed_step_ids(session: Session, run_id: str, *, before_attempt: int) -> set[str]:
    """Step ids already completed by an earlier attempt of the run (a resumed run skips them)."""
    rows = session.execute(
        select(RunStepRow.step_id).where(
            RunStepRow.run_id == run_id,
            RunStepRow.attempt < before_attempt,
            RunStepRow.status == StepStatus.COMPLETED.value,
        )
    ).scalars()
    return set(rows)


def list_steps(session: Session, run_id: str) -> list[dict[str, Any]]:
    """Every step row of a run, oldest attempt first, in step order."""
    rows = session.execute(
        select(RunStepRow).where(RunStepRow.run_id == run_id).order_by(RunStepRow.attempt, RunStepRow.n)
    ).scalars()
    return [snapshot(row) for row in rows]
