"""audit_log: seq is the primary key; no index on id

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:45:00

`audit_log` had two unique indexes, the primary key on `id` and `uq_audit_log_seq`. Every read of the
log goes by seq (pages and histories order and resume by it, the verifier reads seq ranges) or by one
of the named filter indexes; nothing looks a row up by its id. So seq becomes the primary key and the
index on id goes: one btree insert (and WAL record, ~95 bytes) fewer for each of a task's nine audit
rows. The id stays a ULID made by the monotonic generator, and it is covered by the row's hash, so a
row added or altered behind the writer's back still breaks `/audit/verify`.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_log_seq", type_="unique")
        batch_op.drop_constraint("pk_audit_log", type_="primary")
        batch_op.create_primary_key("pk_audit_log", ["seq"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint("pk_audit_log", type_="primary")
        batch_op.create_primary_key("pk_audit_log", ["id"])
        batch_op.create_unique_constraint("uq_audit_log_seq", ["seq"])
