"""Run artifacts (trace folder, patch) as CWOM Artifacts: one per (run, key), audited, digest kept current."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import ObjectKind
from cwom.rows import insert_ignore
from cwom.tables import ArtifactRow

WORKER = Actor("system", "control-tower-worker")
_ARTIFACTS = ArtifactRow.__table__
_COLUMNS = [attr.key for attr in inspect(ArtifactRow).column_attrs]


def _snapshot(values: dict[str, Any]) -> dict[str, Any]:
    """What `snapshot()` gives for the row `values` inserted (every column given)."""
    return {k: values[k].isoformat() if isinstance(values[k], datetime) else values[k] for k in _COLUMNS}


def artifact_values(
    *,
    run_id: str,
    issue_id: str | None,
    key: str,
    type: str,
    title: str,
    uri: str,
    digest: str,
    trace_id: str | None,
) -> dict[str, Any]:
    """Every column of the new row of the run's `key` artifact (its id made here)."""
    now = utcnow()
    return {
        "id": new_id(),
        "run_id": run_id,
        "issue_id": issue_id,
        "type": type,
        "title": title,
        "uri": uri,
        "digest": digest,
        "verification": {},
        "idempotency_key": f"{run_id}:{key}",
        "trace_id": trace_id,
        "created_at": now,
        "updated_at": now,
    }


def created_entry(values: dict[str, Any]) -> audit.Entry:
    """The audit row of a new artifact row `values` (what `record_artifact` records for one)."""
    return audit.Entry(
        actor=WORKER,
        action="created",
        entity_kind=ObjectKind.ARTIFACT,
        entity_id=str(values["id"]),
        before=None,
        after=_snapshot(values),
        note=None,
        trace_id=values["trace_id"],
    )


def record_artifact(session: Session, **fields: Any) -> str:
    """Insert the run's `key` artifact, or update its uri/digest (a later attempt); returns its id.

    `fields` are `artifact_values`'s keyword arguments."""
    return record_values(session, artifact_values(**fields))


def record_values(session: Session, values: dict[str, Any]) -> str:
    """`record_artifact` for the row `artifact_values` made."""
    now, uri, digest, trace_id = values["updated_at"], values["uri"], values["digest"], values["trace_id"]
    # Into the table, not through the ORM: an ORM INSERT … RETURNING of the whole row cost ~1 ms of
    # Python per artifact. Every column is given, so the new row is `values` and its snapshot (the
    # audit row's `after`) is built from them, in the columns' order, as `snapshot()` of the row gives.
    created = insert_ignore(session, _ARTIFACTS, values, conflict=["idempotency_key"])
    if created is not None:
        audit.record_entries(session, [created_entry(values)])
        return str(created)
    row = session.execute(
        select(ArtifactRow).where(ArtifactRow.idempotency_key == values["idempotency_key"])
    ).scalar_one()
    if (row.uri, row.digest) != (uri, digest):
        before = {"uri": row.uri, "digest": row.digest}
        row.uri, row.digest, row.updated_at = uri, digest, now
        audit.record(
            session,
            actor=WORKER,
            action="updated",
            entity_kind=ObjectKind.ARTIFACT,
            entity_id=row.id,
            before=before,
            after={"uri": uri, "digest": digest},
            trace_id=trace_id,
        )
    return str(row.id)
