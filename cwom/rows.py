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


def insert_ignore(session: Session, table: Table, values: dict[str, Any], *, conflict: list[str]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on either dialect; True when the row was inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    else:  # pragma: no cover - only the two supported dialects reach here
        raise RuntimeError(f"unsupported dialect {dialect}")
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    key = next(iter(table.primary_key.columns))
    return session.execute(stmt.returning(key)).first() is not None
