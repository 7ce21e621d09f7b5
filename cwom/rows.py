"""Small helpers over mapped rows: plain-dict snapshots and dialect-aware insert-or-ignore."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def snapshot(row: object) -> dict[str, Any]:
    """Column values of a mapped row as JSON-ready data (for audit before/after and API output)."""
    mapper = inspect(type(row))
    out: dict[str, Any] = {}
    for attr in mapper.column_attrs:
        value = getattr(row, attr.key)
        out[attr.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def insert_ignore(session: Session, target: Any, values: dict[str, Any], *, conflict: list[str]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING on either dialect.

    `target` is a mapped class (returns the new ORM object) or a Table (returns its primary key);
    None when the row already existed. RETURNING, not rowcount: drivers disagree on rowcount here.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(target).values(**values).on_conflict_do_nothing(index_elements=conflict)
    elif dialect == "sqlite":
        stmt = sqlite.insert(target).values(**values).on_conflict_do_nothing(index_elements=conflict)
    else:  # pragma: no cover - only the two supported dialects reach here
        raise RuntimeError(f"unsupported dialect {dialect}")
    if isinstance(target, Table):
        returned = next(iter(target.primary_key.columns))
        return session.execute(stmt.returning(returned)).scalar()
    return session.scalars(stmt.returning(target)).first()
