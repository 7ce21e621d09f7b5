"""HTTP routes for runs: GET /runs/{id}, POST .../resume, POST .../cancel, GET .../trace."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_tower.api.deps import SessionDep, SessionFactoryDep, SettingsDep
from control_tower.api.schemas import ErrorResponse
from cwom.audit import Actor
from cwom.tables import ArtifactRow, RunRow
from worker.queue import InvalidTransition, RunNotFound, RunQueue
from worker.run_steps import list_steps
from worker.trace import list_files

router = APIRouter(prefix="/runs", tags=["runs"])
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}}


def _queue(factory: SessionFactoryDep, settings: SettingsDep) -> RunQueue:
    return RunQueue(
        factory, lease_seconds=settings.worker_lease_seconds, max_attempts=settings.worker_max_attempts
    )


QueueDep = Annotated[RunQueue, Depends(_queue)]


class StepOut(BaseModel):
    """One step execution (a `run_steps` row)."""

    n: int
    step_id: str
    type: str
    attempt: int
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    output: dict[str, Any]
    error_code: str | None
    error_message: str | None


class ArtifactOut(BaseModel):
    """An Artifact the run produced (trace folder, patch, PR...)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    title: str
    uri: str | None
    digest: str | None
    created_at: datetime


class RunError(BaseModel):
    code: str
    message: str | None


class RunOut(BaseModel):
    """A run as an operator sees it."""

    id: str
    task_id: str | None
    issue_id: str
    trace_id: str | None
    status: str
    current_step: str | None
    attempt: int
    max_attempts: int
    locked_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_ms: float | None
    error: RunError | None
    approvals: list[dict[str, Any]]
    timings_ms: dict[str, Any]
    steps: list[StepOut]
    artifacts: list[ArtifactOut]


class ResumeIn(BaseModel):
    """An approval decision for a waiting run."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class CancelIn(BaseModel):
    """Who cancels, and why."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="api", min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class TraceFile(BaseModel):
    path: str
    size: int
    sha256: str


class TraceOut(BaseModel):
    """The files of a run's trace folder."""

    run_id: str
    sealed: bool
    files: list[TraceFile]


def run_view(session: Session, run_id: str) -> RunOut:
    """The run with its steps and artifacts; RUN_NOT_FOUND when there is none."""
    run = session.get(RunRow, run_id)
    if run is None:
        raise RunNotFound(message=f"no run {run_id[:40]}", field="run_id")
    artifacts = session.scalars(
        select(ArtifactRow)
        .where(ArtifactRow.run_id == run_id)
        .order_by(ArtifactRow.created_at, ArtifactRow.id)
    ).all()
    duration = None
    if run.started_at is not None and run.ended_at is not None:
        duration = round((run.ended_at - run.started_at).total_seconds() * 1000, 1)
    telemetry = run.telemetry if isinstance(run.telemetry, dict) else {}
    return RunOut(
        id=run.id,
        task_id=run.task_id,
        issue_id=run.issue_id,
        trace_id=run.trace_id,
        status=run.status,
        current_step=run.current_step,
        attempt=run.attempt,
        max_attempts=run.max_attempts,
        locked_by=run.locked_by,
        lease_expires_at=run.lease_expires_at,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        duration_ms=duration,
        error=RunError(code=run.error_code, message=run.error_message) if run.error_code else None,
        approvals=list(telemetry.get("approvals", [])),
        timings_ms=dict(telemetry.get("timings_ms", {})),
        steps=[StepOut.model_validate(s) for s in list_steps(session, run_id)],
        artifacts=[ArtifactOut.model_validate(a) for a in artifacts],
    )


@router.get("/{run_id}", response_model=RunOut, responses=_ERRORS)
def get_run(run_id: str, session: SessionDep) -> RunOut:
    """Status, current step, steps (every attempt), artifacts, error, timings."""
    return run_view(session, run_id)


@router.post("/{run_id}/resume", response_model=RunOut, responses=_ERRORS)
def resume_run(run_id: str, body: ResumeIn, queue: QueueDep, session: SessionDep) -> RunOut:
    """Answer a waiting run: approve puts it back in the queue, reject fails it (409 unless waiting)."""
    try:
        queue.resume(run_id, decision=body.decision, actor=Actor("human", body.by), note=body.note)
    except InvalidTransition as exc:
        raise InvalidTransition(message=exc.message, field=exc.field) from exc
    return run_view(session, run_id)


@router.post("/{run_id}/cancel", response_model=RunOut, responses=_ERRORS)
def cancel_run(run_id: str, queue: QueueDep, session: SessionDep, body: CancelIn | None = None) -> RunOut:
    """Cancel a queued, waiting or running run (its worker kills the sandbox's process tree)."""
    body = body or CancelIn()
    queue.cancel(run_id, actor=Actor("human", body.by), note=body.note)
    return run_view(session, run_id)


@router.get("/{run_id}/trace", response_model=TraceOut, responses=_ERRORS)
def get_trace(run_id: str, session: SessionDep, settings: SettingsDep) -> TraceOut:
    """Every file of the run's trace folder with size and sha256."""
    if session.get(RunRow, run_id) is None:
        raise RunNotFound(message=f"no run {run_id[:40]}", field="run_id")
    files = list_files(settings.trace_root, run_id)
    return TraceOut(
        run_id=run_id,
        sealed=any(f["path"] == "manifest.json" for f in files),
        files=[TraceFile.model_validate(f) for f in files],
    )


def install(app: FastAPI) -> None:
    """Add the runs routes to an app built by `create_app`."""
    app.include_router(router)
