"""REST for repos, issues, context packets, constraint snapshots and doctrine refs under /cwom."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from control_tower.api.actor import ActorDep
from control_tower.api.deps import SessionDep
from control_tower.api.errors import error_body
from control_tower.api.pagination import decode_cursor, encode_cursor
from control_tower.api.schemas import ErrorResponse
from cwom import reads, service_objects
from cwom.enums import IssueStatus, ObjectKind
from cwom.errors import ImmutableObject
from cwom.schemas import (
    ConstraintSnapshotCreate,
    ConstraintSnapshotOut,
    ContextPacketCreate,
    ContextPacketOut,
    DoctrineRefCreate,
    DoctrineRefOut,
    IssueCreate,
    IssueOut,
    IssueUpdate,
    Page,
    RepoCreate,
    RepoOut,
)
from cwom.service import get_object
from cwom.tables import DoctrineRefRow, IssueRow, RepoRow

router = APIRouter(prefix="/cwom", tags=["cwom"])
Limit = Annotated[int, Query(ge=1, le=200)]
_E: dict[int | str, dict[str, object]] = {code: {"model": ErrorResponse} for code in (404, 405, 409, 422)}


def before_id(cursor: str | None) -> str | None:
    """The id a list cursor carries."""
    return str(decode_cursor(cursor, 1)[0]) if cursor else None


def next_cursor(last_id: str | None) -> str | None:
    """The cursor of the next page, if any."""
    return encode_cursor(last_id) if last_id is not None else None


@router.post("/repos", status_code=201, response_model=RepoOut, responses=_E)
def create_repo(body: RepoCreate, session: SessionDep, actor: ActorDep) -> RepoOut:
    """Register a repo (409 REPO_EXISTS for a known slug)."""
    with session.begin():
        row = service_objects.create_repo(session, body=body, actor=actor)
    return reads.repos_out([row])[0]


@router.get("/repos", response_model=Page[RepoOut])
def list_repos(
    session: SessionDep, slug: str | None = None, limit: Limit = 50, cursor: str | None = None
) -> Page[RepoOut]:
    """Repos, newest first."""
    rows, last = reads.keyset(
        session, RepoRow, filters={"slug": slug}, limit=limit, before_id=before_id(cursor)
    )
    return Page(items=reads.repos_out(rows), next_cursor=next_cursor(last))


@router.get("/repos/{repo_id}", response_model=RepoOut, responses=_E)
def get_repo(repo_id: str, session: SessionDep) -> RepoOut:
    """One repo."""
    return reads.repos_out([get_object(session, ObjectKind.REPO, repo_id)])[0]


@router.post("/issues", status_code=201, response_model=IssueOut, responses=_E)
def create_issue(body: IssueCreate, session: SessionDep, actor: ActorDep) -> IssueOut:
    """Open an issue; Refs in the body are checked (422 REF_NOT_FOUND) and linked."""
    with session.begin():
        row = service_objects.create_issue(session, body=body, actor=actor)
        return reads.issues_out(session, [row])[0]


@router.get("/issues", response_model=Page[IssueOut])
def list_issues(
    session: SessionDep,
    repo_id: str | None = None,
    status: IssueStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[IssueOut]:
    """Issues, newest first, by repo and/or status."""
    filters = {"repo_id": repo_id, "status": status.value if status else None}
    rows, last = reads.keyset(session, IssueRow, filters=filters, limit=limit, before_id=before_id(cursor))
    return Page(items=reads.issues_out(session, rows), next_cursor=next_cursor(last))


@router.get("/issues/{issue_id}", response_model=IssueOut, responses=_E)
def get_issue(issue_id: str, session: SessionDep) -> IssueOut:
    """One issue with its links."""
    return reads.issues_out(session, [get_object(session, ObjectKind.ISSUE, issue_id)])[0]


@router.patch("/issues/{issue_id}", response_model=IssueOut, responses=_E)
def patch_issue(issue_id: str, body: IssueUpdate, session: SessionDep, actor: ActorDep) -> IssueOut:
    """Change fields and/or status (ISSUE_TRANSITIONS; 409 INVALID_TRANSITION)."""
    with session.begin():
        row = service_objects.update_issue(session, issue_id=issue_id, body=body, actor=actor)
        return reads.issues_out(session, [row])[0]


@router.post("/context-packets", status_code=201, response_model=ContextPacketOut, responses=_E)
def create_context_packet(
    body: ContextPacketCreate, session: SessionDep, actor: ActorDep
) -> ContextPacketOut:
    """A new briefing version for an issue (immutable once created)."""
    with session.begin():
        row = service_objects.create_context_packet(session, body=body, actor=actor)
        return reads.context_packets_out(session, [row])[0]


@router.get("/context-packets/{packet_id}", response_model=ContextPacketOut, responses=_E)
def get_context_packet(packet_id: str, session: SessionDep) -> ContextPacketOut:
    """One context packet."""
    row = get_object(session, ObjectKind.CONTEXT_PACKET, packet_id)
    return reads.context_packets_out(session, [row])[0]


@router.post("/constraint-snapshots", status_code=201, response_model=ConstraintSnapshotOut, responses=_E)
def create_constraint_snapshot(
    body: ConstraintSnapshotCreate, session: SessionDep, actor: ActorDep
) -> ConstraintSnapshotOut:
    """A new operating envelope (immutable once created)."""
    with session.begin():
        row = service_objects.create_constraint_snapshot(session, body=body, actor=actor)
    return reads.constraint_snapshots_out([row])[0]


@router.get("/constraint-snapshots/{snapshot_id}", response_model=ConstraintSnapshotOut, responses=_E)
def get_constraint_snapshot(snapshot_id: str, session: SessionDep) -> ConstraintSnapshotOut:
    """One constraint snapshot."""
    return reads.constraint_snapshots_out([get_object(session, ObjectKind.CONSTRAINT_SNAPSHOT, snapshot_id)])[
        0
    ]


def _immutable(kind: str) -> JSONResponse:
    error = ImmutableObject()
    return JSONResponse(
        error_body(error.code, f"a {kind} is immutable; create a new one instead"),
        status_code=error.http_status,
        headers={"Allow": "GET"},
    )


@router.api_route(
    "/context-packets/{packet_id}", methods=["PUT", "PATCH", "DELETE"], responses=_E, include_in_schema=False
)
def modify_context_packet(packet_id: str) -> JSONResponse:
    """Always 405 IMMUTABLE_OBJECT."""
    return _immutable("context packet")


@router.api_route(
    "/constraint-snapshots/{snapshot_id}",
    methods=["PUT", "PATCH", "DELETE"],
    responses=_E,
    include_in_schema=False,
)
def modify_constraint_snapshot(snapshot_id: str) -> JSONResponse:
    """Always 405 IMMUTABLE_OBJECT."""
    return _immutable("constraint snapshot")


@router.post("/doctrine-refs", status_code=201, response_model=DoctrineRefOut, responses=_E)
def create_doctrine_ref(body: DoctrineRefCreate, session: SessionDep, actor: ActorDep) -> DoctrineRefOut:
    """Record a governing rule set."""
    with session.begin():
        row = service_objects.create_doctrine_ref(session, body=body, actor=actor)
    return reads.doctrine_refs_out([row])[0]


@router.get("/doctrine-refs", response_model=Page[DoctrineRefOut])
def list_doctrine_refs(
    session: SessionDep,
    namespace: str | None = None,
    name: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[DoctrineRefOut]:
    """Doctrine refs, newest first, by namespace and/or name."""
    filters = {"namespace": namespace, "name": name}
    rows, last = reads.keyset(
        session, DoctrineRefRow, filters=filters, limit=limit, before_id=before_id(cursor)
    )
    return Page(items=reads.doctrine_refs_out(rows), next_cursor=next_cursor(last))


@router.get("/doctrine-refs/{ref_id}", response_model=DoctrineRefOut, responses=_E)
def get_doctrine_ref(ref_id: str, session: SessionDep) -> DoctrineRefOut:
    """One doctrine ref."""
    return reads.doctrine_refs_out([get_object(session, ObjectKind.DOCTRINE_REF, ref_id)])[0]
