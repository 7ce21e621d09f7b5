"""Carry out `/tower` commands (and owed replies) queued by the webhook, after a live permission check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.github.client import GitHubClient
from control_tower.github.errors import GitHubError
from control_tower.github.tables import CommandRow
from control_tower.logs import get_logger
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from cwom import audit
from cwom.audit import Actor
from cwom.base import utcnow
from cwom.tables import RunRow
from policy import PolicyError, TaskCreateV1
from policy.errors import ControlTowerError
from worker.github.context import GitHubContext
from worker.github.status import StatusView, render_status
from worker.github.writeback import authorize

log = get_logger(__name__)
HELP = (
    "Commands: `/tower run <code_change|docs|analysis|ops> [text]`, `/tower status`, `/tower cancel`, "
    "`/tower approve [note]`, `/tower reject [note]`, `/tower retry`."
)


class RunControls(Protocol):
    """The queue operations commands drive (implemented by worker.queue.RunQueue)."""

    def cancel(self, run_id: str, *, actor: Actor, note: str | None) -> Any: ...

    def resume(self, run_id: str, *, decision: Any, actor: Actor, note: str | None) -> Any: ...


@dataclass(frozen=True)
class Outcome:
    """What a command did, and the reply posted for it."""

    status: str
    reply: str


class CommandProcessor:
    """Claims pending command rows (lease-based, like runs) and answers each in its thread."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        client: GitHubClient,
        queue: RunControls,
        settings: Settings,
        worker_id: str,
        lease_seconds: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.factory = factory
        self.client = client
        self.queue = queue
        self.settings = settings
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def claim(self) -> CommandRow | None:
        """One pending (or abandoned) command, leased to this worker."""
        now = self.clock()
        with self.factory() as session, session.begin():
            stmt = (
                select(CommandRow)
                .where(
                    or_(
                        CommandRow.status == "pending",
                        (CommandRow.status == "running") & (CommandRow.lease_expires_at < now),
                    ),
                    CommandRow.attempts < 5,
                )
                .order_by(CommandRow.created_at)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = session.execute(stmt).scalar()
            if row is None:
                return None
            row.status, row.locked_by = "running", self.worker_id
            row.lease_expires_at, row.attempts = now + self.lease, row.attempts + 1
            return row

    def run_once(self) -> Outcome | None:
        """Claim and carry out one command; None when there is nothing to do."""
        row = self.claim()
        if row is None:
            return None
        try:
            outcome = self.process(row)
        except GitHubError as exc:
            # GitHub is down or limiting us: leave it for a later attempt (the lease lapses).
            log.warning("github_command_deferred", command_id=row.id, code=exc.code)
            return Outcome("deferred", exc.code)
        self._finish(row, outcome)
        return outcome

    def process(self, row: CommandRow) -> Outcome:
        """Check permission, act, reply (the reply is posted at most once per command)."""
        owner, name = row.repo.split("/", 1)
        if row.kind == "announce":
            return self._announce(row, owner, name)
        if row.kind in ("help", "refusal"):
            text = f"{row.text}\n\n{HELP}" if row.kind == "help" else f"Refused: {row.text}"
            self.client.post_comment(owner, name, row.issue_number, text, dedupe_key=f"cmd:{row.id}")
            return Outcome("done", text)
        ctx = GitHubContext(
            row.repo, row.issue_number, row.sender, "comment", row.comment_id, row.installation_id
        )
        try:
            authorize(self.client, ctx, minimum=self.settings.github_min_permission)
        except PolicyError as denied:
            self._audit(row, "policy_denied", {"code": denied.code, "message": denied.message})
            reply = f"@{row.sender} `/tower {row.kind}` refused: **{denied.code}**: {denied.message}"
            self.client.post_comment(owner, name, row.issue_number, reply, dedupe_key=f"cmd:{row.id}")
            return Outcome("refused", reply)
        reply = self._act(row)
        self.client.post_comment(owner, name, row.issue_number, reply, dedupe_key=f"cmd:{row.id}")
        return Outcome("done", reply)

    def _announce(self, row: CommandRow, owner: str, name: str) -> Outcome:
        """The run's status comment in its first state, unless the run has already moved on."""
        with self.factory() as session:
            run = session.get(RunRow, row.text)
            task = session.get(TaskRow, run.task_id) if run is not None and run.task_id else None
        if run is None or run.status != "queued":
            return Outcome("done", "skipped: the run already reports its own status")
        view = StatusView(
            run_id=run.id,
            status="queued",
            operation=task.operation if task is not None else "",
            trace_url=f"{self.settings.public_base_url.rstrip('/')}/runs/{run.id}/trace",
        )
        self.client.upsert_status_comment(owner, name, row.issue_number, run.id, render_status(view))
        return Outcome("done", "queued")

    def _act(self, row: CommandRow) -> str:
        task, run = self._newest(row)
        if task is None or run is None:
            return f"@{row.sender} there is no Control Tower run on this issue yet."
        actor = Actor("human", row.sender)
        note = row.text or None
        try:
            if row.kind == "status":
                detail = f" ({run.error_code}: {run.error_message})" if run.error_code else ""
                step = f", step `{run.current_step}`" if run.current_step else ""
                return f"Run `{run.id}` ({task.operation}) is **{run.status}**{step}{detail}."
            if row.kind == "cancel":
                self.queue.cancel(run.id, actor=actor, note=note)
                return f"Run `{run.id}` cancelled by @{row.sender}."
            if row.kind in ("approve", "reject"):
                decision = "approve" if row.kind == "approve" else "reject"
                self.queue.resume(run.id, decision=decision, actor=actor, note=note)
                return f"Run `{run.id}` {decision}d by @{row.sender}."
            if row.kind == "retry":
                return self._retry(row, task)
        except ControlTowerError as exc:
            return f"`/tower {row.kind}` could not be done: **{exc.code}**: {exc.message}"
        return HELP

    def _retry(self, row: CommandRow, task: TaskRow) -> str:
        body = dict(task.body)
        body["idempotency_key"] = row.semantic_key
        body["requested_by"] = {"kind": "human", "id": row.sender, "label": "github"}
        accepted = intake.submit(
            self.factory,
            task=TaskCreateV1.model_validate(body),
            config=self.settings.policy_config(),
            source="github",
            max_attempts=self.settings.worker_max_attempts,
        )
        return f"Retrying as run `{accepted.task.run_id}`."

    def _newest(self, row: CommandRow) -> tuple[TaskRow | None, RunRow | None]:
        prefix = f"gh:{row.repo}#{row.issue_number}:"
        with self.factory() as session:
            task = session.execute(
                select(TaskRow)
                .where(
                    TaskRow.idempotency_key.startswith(prefix, autoescape=True), TaskRow.run_id.is_not(None)
                )
                .order_by(TaskRow.id.desc())
                .limit(1)
            ).scalar()
            run = session.get(RunRow, task.run_id) if task is not None and task.run_id else None
            return task, run

    def _finish(self, row: CommandRow, outcome: Outcome) -> None:
        with self.factory() as session, session.begin():
            session.execute(
                update(CommandRow)
                .where(CommandRow.id == row.id, CommandRow.locked_by == self.worker_id)
                .values(status=outcome.status, result={"reply": outcome.reply}, lease_expires_at=None)
            )
            audit.record(
                session,
                actor=Actor("system", "control-tower"),
                action="status_changed",
                entity_kind="github_command",
                entity_id=row.id,
                after={"status": outcome.status},
            )

    def _audit(self, row: CommandRow, action: str, after: dict[str, Any]) -> None:
        with self.factory() as session, session.begin():
            audit.record(
                session,
                actor=Actor("human", row.sender),
                action=action,
                entity_kind="github_command",
                entity_id=row.id,
                after=after,
            )
