"""audit_log: before/after as json on PostgreSQL

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 16:40:00

The audit log stores `before`/`after` and gives them back; no query looks inside them, and the hash is
over their canonical JSON text, which the verifier rebuilds from what it reads (`after::text` parsed
and re-encoded with sorted keys), whichever the type. As jsonb, every audit row of a task cost the
server a jsonb tree built from the parameter (pg_parse_json with semantic actions, key sorting) and a
binary form larger than the text for these small objects (a JEntry per key and per value). As json
the text is validated once and stored as it came. SQLite stores JSON as text already.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("before", "after")


def _retype(kind: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    changes = ", ".join(f'ALTER COLUMN "{c}" TYPE {kind} USING "{c}"::{kind}' for c in _COLUMNS)
    op.execute(f"ALTER TABLE audit_log {changes}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
