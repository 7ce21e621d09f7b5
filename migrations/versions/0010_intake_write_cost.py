"""intake write cost: a PL/pgSQL chain step, no CWOM indexes that nothing queries

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 14:00:00

The audit chain's step function (`audit_chain_step`, migration 0005) becomes PL/pgSQL. As a LANGUAGE
sql function used as an aggregate's transition function it is never inlined: every statement parsed,
analysed and planned its body again, and every call ran it through an executor of its own (fmgr_sql,
~6% of the intake statement's backend CPU). PL/pgSQL keeps the compiled body and its plan for the
session and evaluates the expression on its simple-expression path. Same expression, same hashes.

Indexes that no query uses, each a btree insert per row (and, on `cwom_runs`, per non-HOT update):
`trace_id` of every CWOM object table (a trace is read from the audit log, whose (trace_id, seq) index
stays), `cwom_runs.repo_id` and `cwom_runs.task_id` (runs are listed by issue and status; a run's task
is read from the run), and the second-column index of every link table (links are read from their
left side, through the primary key; the objects they point to are never deleted, so no foreign-key
action scans them). Intake writes four objects, a run and three links per task: 9 index inserts fewer
of 21. The foreign keys themselves stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OBJECTS = (
    "cwom_repos",
    "cwom_issues",
    "cwom_context_packets",
    "cwom_constraint_snapshots",
    "cwom_doctrine_refs",
    "cwom_runs",
    "cwom_artifacts",
)
# (table, column) of every index dropped, in the form `index=True` named them.
_DROPPED = (
    *((table, "trace_id") for table in _OBJECTS),
    ("cwom_runs", "repo_id"),
    ("cwom_runs", "task_id"),
    ("cwom_issue_context_packets", "context_packet_id"),
    ("cwom_issue_doctrine_refs", "doctrine_ref_id"),
    ("cwom_issue_constraint_snapshots", "constraint_snapshot_id"),
    ("cwom_run_context_packets", "context_packet_id"),
    ("cwom_run_doctrine_refs", "doctrine_ref_id"),
    ("cwom_context_packet_doctrine_refs", "doctrine_ref_id"),
)

_STEP_BODY = (
    "encode(sha256(convert_to(coalesce(state, head) || prefix || seq::text || suffix, 'UTF8')), 'hex')"
)
_STEP = (
    "CREATE OR REPLACE FUNCTION audit_chain_step(state text, head text, prefix text, seq bigint, suffix text)"
)


def upgrade() -> None:
    for table, column in _DROPPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_{column}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"{_STEP} RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$ BEGIN RETURN {_STEP_BODY}; END $$"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"{_STEP} RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {_STEP_BODY} $$")
    for table, column in reversed(_DROPPED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f"ix_{table}_{column}", [column], unique=False)
