"""audit_log: one entity index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:00:00

`ix_audit_log_entity_seq` (entity_kind, entity_id, seq) duplicated the composite the audit log must
have, `ix_audit_log_entity_ts` (entity_kind, entity_id, ts): one object has few audit rows, so every
entity query (its page newest first, its history oldest first, an entity in a time range) reads them
through the composite and orders them by seq in memory. One index fewer is one btree insert fewer for
each of the nine audit rows of every task.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_entity_seq")


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_entity_seq", ["entity_kind", "entity_id", "seq"], unique=False)
