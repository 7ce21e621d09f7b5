"""github_deliveries.payload: lz4 compression (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:45:00

A delivery's payload (~10 kB of JSON) is compressed inline when stored. With PostgreSQL's default,
pglz, that compression was about half of the database's CPU per stored delivery: inserting bursts of
deliveries 32 to a statement, 330-390 µs of backend CPU per row with pglz, 155-185 µs with lz4 (same
rows, same statement). lz4 is a column setting (PostgreSQL 14+ built with lz4, as Debian's and the
official images are): rows stored before keep their compression and read as before. A server without
lz4 keeps pglz. SQLite has no such setting.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_lz4() -> bool:
    found = (
        op.get_bind()
        .execute(
            text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        )
        .scalar()
    )
    return bool(found)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _has_lz4():
        op.execute("ALTER TABLE github_deliveries ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _has_lz4():
        op.execute("ALTER TABLE github_deliveries ALTER COLUMN payload SET COMPRESSION default")
