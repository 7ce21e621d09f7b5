"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 21:33:13.335608
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(
        sa.table(
            "audit_head",
            sa.column("id", sa.Integer()),
            sa.column("seq", sa.BigInteger()),
            sa.column("hash", sa.String()),
        ),
        [{"id": 1, "seq": 0, "hash": "0" * 64}],
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_kind", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column(
            "before",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "after",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_log_seq")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_action_seq", ["action", "seq"], unique=False)
        batch_op.create_index("ix_audit_log_actor", ["actor_kind", "actor_id", "seq"], unique=False)
        batch_op.create_index("ix_audit_log_entity_seq", ["entity_kind", "entity_id", "seq"], unique=False)
        batch_op.create_index("ix_audit_log_entity_ts", ["entity_kind", "entity_id", "ts"], unique=False)
        batch_op.create_index("ix_audit_log_trace_seq", ["trace_id", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_ts"), ["ts"], unique=False)

    op.create_table(
        "cwom_constraint_snapshots",
        sa.Column("time_budget_seconds", sa.Integer(), nullable=False),
        sa.Column("allow_network", sa.Boolean(), nullable=False),
        sa.Column("allow_secrets", sa.Boolean(), nullable=False),
        sa.Column(
            "tool_limits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("policy_version", sa.String(length=80), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_constraint_snapshots")),
    )
    with op.batch_alter_table("cwom_constraint_snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_constraint_snapshots_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_doctrine_refs",
        sa.Column("namespace", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("hash", sa.String(length=100), nullable=False),
        sa.Column("uri", sa.String(length=1000), nullable=True),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_doctrine_refs")),
    )
    with op.batch_alter_table("cwom_doctrine_refs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_doctrine_refs_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_repos",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=255), nullable=False),
        sa.Column("source_system", sa.String(length=64), nullable=False),
        sa.Column("source_external_id", sa.String(length=200), nullable=True),
        sa.Column("default_branch", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_repos")),
        sa.UniqueConstraint("slug", name=op.f("uq_cwom_repos_slug")),
    )
    with op.batch_alter_table("cwom_repos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_repos_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "intake_refusals",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.String(length=80), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("requested_by_kind", sa.String(length=16), nullable=False),
        sa.Column("requested_by_id", sa.String(length=200), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_refusals")),
    )
    with op.batch_alter_table("intake_refusals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_intake_refusals_code"), ["code"], unique=False)
        batch_op.create_index(batch_op.f("ix_intake_refusals_received_at"), ["received_at"], unique=False)

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("requested_by_kind", sa.String(length=16), nullable=False),
        sa.Column("requested_by_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("policy_version", sa.String(length=80), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("cwom_issue_id", sa.String(length=26), nullable=True),
        sa.Column("run_id", sa.String(length=26), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tasks_idempotency_key")),
        sa.UniqueConstraint("run_id", name=op.f("uq_tasks_run_id")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_status_id", ["status", "id"], unique=False)

    op.create_table(
        "cwom_issues",
        sa.Column("repo_id", sa.String(length=26), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "acceptance",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("external_ref", sa.String(length=300), nullable=True),
        sa.Column(
            "provenance",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"], ["cwom_repos.id"], name=op.f("fk_cwom_issues_repo_id_cwom_repos")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_issues")),
    )
    with op.batch_alter_table("cwom_issues", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_issues_repo_id"), ["repo_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_issues_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_issues_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_context_packets",
        sa.Column("issue_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "assumptions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["cwom_issues.id"], name=op.f("fk_cwom_context_packets_issue_id_cwom_issues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_context_packets")),
    )
    with op.batch_alter_table("cwom_context_packets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_context_packets_issue_id"), ["issue_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_context_packets_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_issue_constraint_snapshots",
        sa.Column("issue_id", sa.String(length=26), nullable=False),
        sa.Column("constraint_snapshot_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["constraint_snapshot_id"],
            ["cwom_constraint_snapshots.id"],
            name=op.f("fk_cwom_issue_constraint_snapshots_constraint_snapshot_id_cwom_constraint_snapshots"),
        ),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["cwom_issues.id"],
            name=op.f("fk_cwom_issue_constraint_snapshots_issue_id_cwom_issues"),
        ),
        sa.PrimaryKeyConstraint(
            "issue_id", "constraint_snapshot_id", name=op.f("pk_cwom_issue_constraint_snapshots")
        ),
    )
    with op.batch_alter_table("cwom_issue_constraint_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_issue_constraint_snapshots_constraint_snapshot_id"),
            ["constraint_snapshot_id"],
            unique=False,
        )

    op.create_table(
        "cwom_issue_doctrine_refs",
        sa.Column("issue_id", sa.String(length=26), nullable=False),
        sa.Column("doctrine_ref_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["doctrine_ref_id"],
            ["cwom_doctrine_refs.id"],
            name=op.f("fk_cwom_issue_doctrine_refs_doctrine_ref_id_cwom_doctrine_refs"),
        ),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["cwom_issues.id"], name=op.f("fk_cwom_issue_doctrine_refs_issue_id_cwom_issues")
        ),
        sa.PrimaryKeyConstraint("issue_id", "doctrine_ref_id", name=op.f("pk_cwom_issue_doctrine_refs")),
    )
    with op.batch_alter_table("cwom_issue_doctrine_refs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_issue_doctrine_refs_doctrine_ref_id"), ["doctrine_ref_id"], unique=False
        )

    op.create_table(
        "cwom_runs",
        sa.Column("issue_id", sa.String(length=26), nullable=False),
        sa.Column("repo_id", sa.String(length=26), nullable=False),
        sa.Column("task_id", sa.String(length=26), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column(
            "executor",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "outputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "telemetry",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "cost",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_step", sa.String(length=100), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["cwom_issues.id"], name=op.f("fk_cwom_runs_issue_id_cwom_issues")
        ),
        sa.ForeignKeyConstraint(["repo_id"], ["cwom_repos.id"], name=op.f("fk_cwom_runs_repo_id_cwom_repos")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_runs")),
    )
    with op.batch_alter_table("cwom_runs", schema=None) as batch_op:
        batch_op.create_index("ix_cwom_runs_claim", ["status", "priority", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_runs_issue_id"), ["issue_id"], unique=False)
        batch_op.create_index("ix_cwom_runs_lease", ["status", "lease_expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_runs_repo_id"), ["repo_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_runs_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_runs_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_artifacts",
        sa.Column("run_id", sa.String(length=26), nullable=False),
        sa.Column("issue_id", sa.String(length=26), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("uri", sa.String(length=2000), nullable=True),
        sa.Column("digest", sa.String(length=100), nullable=True),
        sa.Column(
            "verification",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["cwom_issues.id"], name=op.f("fk_cwom_artifacts_issue_id_cwom_issues")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["cwom_runs.id"], name=op.f("fk_cwom_artifacts_run_id_cwom_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cwom_artifacts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_cwom_artifacts_idempotency_key")),
    )
    with op.batch_alter_table("cwom_artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cwom_artifacts_issue_id"), ["issue_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_artifacts_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cwom_artifacts_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "cwom_context_packet_doctrine_refs",
        sa.Column("context_packet_id", sa.String(length=26), nullable=False),
        sa.Column("doctrine_ref_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["context_packet_id"],
            ["cwom_context_packets.id"],
            name=op.f("fk_cwom_context_packet_doctrine_refs_context_packet_id_cwom_context_packets"),
        ),
        sa.ForeignKeyConstraint(
            ["doctrine_ref_id"],
            ["cwom_doctrine_refs.id"],
            name=op.f("fk_cwom_context_packet_doctrine_refs_doctrine_ref_id_cwom_doctrine_refs"),
        ),
        sa.PrimaryKeyConstraint(
            "context_packet_id", "doctrine_ref_id", name=op.f("pk_cwom_context_packet_doctrine_refs")
        ),
    )
    with op.batch_alter_table("cwom_context_packet_doctrine_refs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_context_packet_doctrine_refs_doctrine_ref_id"),
            ["doctrine_ref_id"],
            unique=False,
        )

    op.create_table(
        "cwom_issue_context_packets",
        sa.Column("issue_id", sa.String(length=26), nullable=False),
        sa.Column("context_packet_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["context_packet_id"],
            ["cwom_context_packets.id"],
            name=op.f("fk_cwom_issue_context_packets_context_packet_id_cwom_context_packets"),
        ),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["cwom_issues.id"], name=op.f("fk_cwom_issue_context_packets_issue_id_cwom_issues")
        ),
        sa.PrimaryKeyConstraint("issue_id", "context_packet_id", name=op.f("pk_cwom_issue_context_packets")),
    )
    with op.batch_alter_table("cwom_issue_context_packets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_issue_context_packets_context_packet_id"), ["context_packet_id"], unique=False
        )

    op.create_table(
        "cwom_run_context_packets",
        sa.Column("run_id", sa.String(length=26), nullable=False),
        sa.Column("context_packet_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["context_packet_id"],
            ["cwom_context_packets.id"],
            name=op.f("fk_cwom_run_context_packets_context_packet_id_cwom_context_packets"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["cwom_runs.id"], name=op.f("fk_cwom_run_context_packets_run_id_cwom_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "context_packet_id", name=op.f("pk_cwom_run_context_packets")),
    )
    with op.batch_alter_table("cwom_run_context_packets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_run_context_packets_context_packet_id"), ["context_packet_id"], unique=False
        )

    op.create_table(
        "cwom_run_doctrine_refs",
        sa.Column("run_id", sa.String(length=26), nullable=False),
        sa.Column("doctrine_ref_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["doctrine_ref_id"],
            ["cwom_doctrine_refs.id"],
            name=op.f("fk_cwom_run_doctrine_refs_doctrine_ref_id_cwom_doctrine_refs"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["cwom_runs.id"], name=op.f("fk_cwom_run_doctrine_refs_run_id_cwom_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "doctrine_ref_id", name=op.f("pk_cwom_run_doctrine_refs")),
    )
    with op.batch_alter_table("cwom_run_doctrine_refs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cwom_run_doctrine_refs_doctrine_ref_id"), ["doctrine_ref_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cwom_run_doctrine_refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_run_doctrine_refs_doctrine_ref_id"))

    op.drop_table("cwom_run_doctrine_refs")
    with op.batch_alter_table("cwom_run_context_packets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_run_context_packets_context_packet_id"))

    op.drop_table("cwom_run_context_packets")
    with op.batch_alter_table("cwom_issue_context_packets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_issue_context_packets_context_packet_id"))

    op.drop_table("cwom_issue_context_packets")
    with op.batch_alter_table("cwom_context_packet_doctrine_refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_context_packet_doctrine_refs_doctrine_ref_id"))

    op.drop_table("cwom_context_packet_doctrine_refs")
    with op.batch_alter_table("cwom_artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_artifacts_trace_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_artifacts_run_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_artifacts_issue_id"))

    op.drop_table("cwom_artifacts")
    with op.batch_alter_table("cwom_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_runs_trace_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_runs_task_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_runs_repo_id"))
        batch_op.drop_index("ix_cwom_runs_lease")
        batch_op.drop_index(batch_op.f("ix_cwom_runs_issue_id"))
        batch_op.drop_index("ix_cwom_runs_claim")

    op.drop_table("cwom_runs")
    with op.batch_alter_table("cwom_issue_doctrine_refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_issue_doctrine_refs_doctrine_ref_id"))

    op.drop_table("cwom_issue_doctrine_refs")
    with op.batch_alter_table("cwom_issue_constraint_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_issue_constraint_snapshots_constraint_snapshot_id"))

    op.drop_table("cwom_issue_constraint_snapshots")
    with op.batch_alter_table("cwom_context_packets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_context_packets_trace_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_context_packets_issue_id"))

    op.drop_table("cwom_context_packets")
    with op.batch_alter_table("cwom_issues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_issues_trace_id"))
        batch_op.drop_index(batch_op.f("ix_cwom_issues_status"))
        batch_op.drop_index(batch_op.f("ix_cwom_issues_repo_id"))

    op.drop_table("cwom_issues")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_id")

    op.drop_table("tasks")
    with op.batch_alter_table("intake_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intake_refusals_received_at"))
        batch_op.drop_index(batch_op.f("ix_intake_refusals_code"))

    op.drop_table("intake_refusals")
    with op.batch_alter_table("cwom_repos", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_repos_trace_id"))

    op.drop_table("cwom_repos")
    with op.batch_alter_table("cwom_doctrine_refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_doctrine_refs_trace_id"))

    op.drop_table("cwom_doctrine_refs")
    with op.batch_alter_table("cwom_constraint_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cwom_constraint_snapshots_trace_id"))

    op.drop_table("cwom_constraint_snapshots")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_ts"))
        batch_op.drop_index("ix_audit_log_trace_seq")
        batch_op.drop_index("ix_audit_log_entity_ts")
        batch_op.drop_index("ix_audit_log_entity_seq")
        batch_op.drop_index("ix_audit_log_actor")
        batch_op.drop_index("ix_audit_log_action_seq")

    op.drop_table("audit_log")
    op.drop_table("audit_head")
