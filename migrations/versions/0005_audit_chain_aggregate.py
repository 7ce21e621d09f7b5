"""audit chain aggregate (PostgreSQL)

Revision ID: 0005
Revises: 0003, 0004
Create Date: 2026-11-24 02:40:00

The audit chain's hashes, computed in one pass by a window aggregate: each row's hash is sha256 over
the previous hash, the row's canonical JSON before its seq, the seq, and the rest of the JSON. The
recursive CTE it replaces re-scanned the input on every step, quadratic in the rows of one statement.
SQLite chains in Python and needs nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = ("0003", "0004")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION audit_chain_step(state text, head text, prefix text, seq bigint, suffix text)
        RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT encode(sha256(convert_to(coalesce(state, head) || prefix || seq::text || suffix, 'UTF8')), 'hex')
        $$
        """
    )
    op.execute(
        "CREATE AGGREGATE audit_chain(text, text, bigint, text) (SFUNC = audit_chain_step, STYPE = text)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP AGGREGATE audit_chain(text, text, bigint, text)")
    op.execute("DROP FUNCTION audit_chain_step(text, text, text, bigint, text)")
