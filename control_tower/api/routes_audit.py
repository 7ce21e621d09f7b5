"""The audit log over HTTP: filtered pages, one object's history, one trace, and chain verification.

`GET /audit/verify` answers 200 whether the chain holds or not: the request succeeded and the verdict is
the body (`ok`); a monitor alerts on `ok == false`, and the row named in `broken` is where to look.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import Row

from control_tower.api.deps import EngineDep, SessionDep
from control_tower.api.pagination import decode_cursor, encode_cursor
from cwom import audit_query
from cwom.audit_query import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])
Limit = Annotated[int, Query(ge=1, le=500)]


class AuditOut(BaseModel):
    """One audit row as clients see it."""

    id: str
    seq: int
    ts: datetime
    actor_kind: str
    actor_id: str
    action: str
    entity_kind: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str | None
    trace_id: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


class BrokenOut(BaseModel):
    seq: int
    id: str | None
    reason: str


class VerifyOut(BaseModel):
    ok: bool
    rows: int
    broken: BrokenOut | None = None


def _seq(cursor: str | None) -> int | None:
    return int(decode_cursor(cursor, 1)[0]) if cursor else None


def _page(rows: list[Row[Any]], limit: int) -> AuditPage:
    items = [AuditOut.model_validate(r, from_attributes=True) for r in rows]
    return AuditPage(items=items, next_cursor=encode_cursor(rows[-1].seq) if len(rows) == limit else None)


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep,
    entity_kind: str | None = None,
    entity_id: str | None = None,
    actor_kind: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    trace_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Audit rows newest first by seq; the cursor is a seq, so pages hold still while rows are appended."""
    filters = AuditFilter(entity_kind, entity_id, actor_kind, actor_id, action, trace_id, since, until)
    return _page(audit_query.page(session, filters=filters, limit=limit, before_seq=_seq(cursor)), limit)


@router.get("/entities/{kind}/{entity_id}", response_model=AuditPage)
def entity_history(
    kind: str, entity_id: str, session: SessionDep, limit: Limit = 100, cursor: str | None = None
) -> AuditPage:
    """The history of one object, oldest first."""
    filters = AuditFilter(entity_kind=kind, entity_id=entity_id)
    return _page(audit_query.history(session, filters=filters, limit=limit, after_seq=_seq(cursor)), limit)


@router.get("/traces/{trace_id}", response_model=AuditPage)
def trace(trace_id: str, session: SessionDep, limit: Limit = 100, cursor: str | None = None) -> AuditPage:
    """Everything one trace caused, oldest first."""
    filters = AuditFilter(trace_id=trace_id)
    return _page(audit_query.history(session, filters=filters, limit=limit, after_seq=_seq(cursor)), limit)


@router.get("/verify", response_model=VerifyOut, response_model_exclude_none=True)
def verify(engine: EngineDep) -> VerifyOut:
    """Recompute the whole hash chain: `{"ok": true, "rows": N}` or the first broken row."""
    return VerifyOut.model_validate(audit_query.verify(engine).to_dict())
