"""cwom_runs: the queue's two indexes are partial on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 11:00:00

`ix_cwom_runs_claim` (status, priority, created_at) now holds only queued runs and `ix_cwom_runs_lease`
(status, lease_expires_at) only running ones. Both began with `status`, so without fresh statistics
(a table just filled, autovacuum behind) the planner could answer the claim's `status = 'queued'`
through the lease index, fetch every queued run and sort them all for each claim: milliseconds per
claim, growing with the backlog. A partial index is the only index that can serve its query, and it
returns the queued runs in claim order. A run's update also adds an entry only to the partial index
whose rows it joins: a claim one (lease), a completion none (was two). SQLite keeps full indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(*, partial: bool) -> None:
    claim = sa.text("status = 'queued'") if partial else None
    lease = sa.text("status = 'running'") if partial else None
    with op.batch_alter_table("cwom_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_cwom_runs_claim")
        batch_op.drop_index("ix_cwom_runs_lease")
        batch_op.create_index(
            "ix_cwom_runs_claim", ["status", "priority", "created_at"], unique=False, postgresql_where=claim
        )
        batch_op.create_index(
            "ix_cwom_runs_lease", ["status", "lease_expires_at"], unique=False, postgresql_where=lease
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _recreate(partial=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _recreate(partial=False)
