"""REST for runs and artifacts under /cwom (the worker's own run endpoints live at /runs)."""

from __future__ import annotations

from fastapi import APIRouter

from control_tower.api.actor import ActorDep
from control_tower.api.deps import SessionDep
from control_tower.api.routes_cwom import _E, Limit, before_id, next_cursor
from control_tower.task_status import mirror_run_status
from cwom import reads, service_objects, service_runs
from cwom.base import utcnow
from cwom.enums import ObjectKind, RunStatus
from cwom.schemas import ArtifactCreate, ArtifactOut, Page, RunCreate, RunOut, RunUpdate
from cwom.service import get_object
from cwom.tables import ArtifactRow, RunRow

router = APIRouter(prefix="/cwom", tags=["cwom"])


@router.post("/runs", status_code=201, response_model=RunOut, responses=_E)
def create_run(body: RunCreate, session: SessionDep, actor: ActorDep) -> RunOut:
    """Record a planned run of an issue (the worker never takes it: work is queued through intake)."""
    with session.begin():
        row = service_runs.create_run(session, body=body, actor=actor)
        return reads.runs_out(session, [row])[0]


@router.get("/runs", response_model=Page[RunOut])
def list_runs(
    session: SessionDep,
    issue_id: str | None = None,
    status: RunStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[RunOut]:
    """Runs, newest first, by issue and/or status."""
    filters = {"issue_id": issue_id, "status": status.value if status else None}
    rows, last = reads.keyset(session, RunRow, filters=filters, limit=limit, before_id=before_id(cursor))
    return Page(items=reads.runs_out(session, rows), next_cursor=next_cursor(last))


@router.get("/runs/{run_id}", response_model=RunOut, responses=_E)
def get_run(run_id: str, session: SessionDep) -> RunOut:
    """One run with its links."""
    return reads.runs_out(session, [get_object(session, ObjectKind.RUN, run_id)])[0]


@router.patch("/runs/{run_id}", response_model=RunOut, responses=_E)
def patch_run(run_id: str, body: RunUpdate, session: SessionDep, actor: ActorDep) -> RunOut:
    """An operator's status change: only cancelling an unfinished run (409 INVALID_TRANSITION otherwise)."""
    with session.begin():
        row = service_runs.transition_run(
            session, run_id=run_id, status=body.status, actor=actor, note=body.note
        )
        mirror_run_status(session, [row.task_id] if row.task_id else [], RunStatus(row.status), utcnow())
        return reads.runs_out(session, [row])[0]


@router.post("/artifacts", status_code=201, response_model=ArtifactOut, responses=_E)
def create_artifact(body: ArtifactCreate, session: SessionDep, actor: ActorDep) -> ArtifactOut:
    """Record an output of a run."""
    with session.begin():
        row = service_objects.create_artifact(session, body=body, actor=actor)
    return reads.artifacts_out([row])[0]


@router.get("/artifacts", response_model=Page[ArtifactOut])
def list_artifacts(
    session: SessionDep,
    run_id: str | None = None,
    issue_id: str | None = None,
    type: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[ArtifactOut]:
    """Artifacts, newest first, by run, issue and/or type."""
    filters = {"run_id": run_id, "issue_id": issue_id, "type": type}
    rows, last = reads.keyset(session, ArtifactRow, filters=filters, limit=limit, before_id=before_id(cursor))
    return Page(items=reads.artifacts_out(rows), next_cursor=next_cursor(last))


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut, responses=_E)
def get_artifact(artifact_id: str, session: SessionDep) -> ArtifactOut:
    """One artifact."""
    return reads.artifacts_out([get_object(session, ObjectKind.ARTIFACT, artifact_id)])[0]
