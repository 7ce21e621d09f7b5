"""What the executor does on GitHub around a run: authorise, read doctrine, report status, publish.

Used only for runs whose task came from GitHub (`metadata.github`). Every call is idempotent, so a
retried attempt (crash, lost lease) repeats them without duplicating a reaction, a comment or a PR.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.client import GitHubClient
from control_tower.github.doctrine import DoctrineError, RepoDoctrine, tighten
from control_tower.github.errors import GitHubError
from control_tower.logs import get_logger
from control_tower.settings import Settings
from cwom import audit
from cwom.audit import Actor
from cwom.enums import ArtifactType
from policy import PolicyError, TaskCreateV1, evaluate
from policy.errors import ControlTowerError
from worker.artifacts import record_artifact
from worker.github.context import GitHubContext
from worker.github.status import StatusView, render_status
from worker.github.writeback import authorize, changed_paths, check_paths, publish, record_doctrine

log = get_logger(__name__)


@dataclass(frozen=True)
class PublishSpec:
    """Commit, push and open one draft PR for what the run changed (GitHub runs only)."""

    id: str = "publish"
    type: str = "publish"


def failpoint(name: str) -> None:
    """Crash here when CONTROL_TOWER_FAILPOINTS names this point (crash-recovery tests only)."""
    if name in os.environ.get("CONTROL_TOWER_FAILPOINTS", "").split(","):
        log.warning("failpoint", name=name)
        os._exit(137)


class GitHubHooks:
    """GitHub side effects of runs, for one worker process."""

    def __init__(self, *, client: GitHubClient, settings: Settings, factory: sessionmaker[Session]) -> None:
        self.client = client
        self.settings = settings
        self.factory = factory

    def context(self, task: dict[str, Any]) -> GitHubContext | None:
        """The GitHub thread of a task, if it came from GitHub."""
        return GitHubContext.from_task(task)

    def trace_url(self, run_id: str) -> str:
        return f"{self.settings.public_base_url.rstrip('/')}/runs/{run_id}/trace"

    def start(
        self,
        *,
        ctx: GitHubContext,
        run_id: str,
        task: dict[str, Any],
        trace_id: str | None,
        session_scope: Any,
    ) -> RepoDoctrine | None:
        """👀, permission check, doctrine; raises ControlTowerError with the code the run fails with."""
        self._react(ctx)
        try:
            authorize(self.client, ctx, minimum=self.settings.github_min_permission)
        except PolicyError as denied:
            with self.factory() as session, session.begin():
                audit.record(
                    session,
                    actor=Actor("human", ctx.sender),
                    action="policy_denied",
                    entity_kind="run",
                    entity_id=run_id,
                    after={"code": denied.code, "message": denied.message},
                    trace_id=trace_id,
                )
            raise
        try:
            doctrine = self.client.get_doctrine(ctx.owner, ctx.name)
            branch = self.client.get_default_branch(ctx.owner, ctx.name)
        except DoctrineError:
            raise
        except GitHubError as exc:
            raise ControlTowerError(
                "DOCTRINE_UNAVAILABLE", f"could not read the repository's doctrine: {exc.code}"
            ) from exc
        if doctrine is not None:
            with session_scope() as session:
                record_doctrine(
                    session, run_id=run_id, ctx=ctx, doctrine=doctrine, branch=branch, trace_id=trace_id
                )
            # The doctrine can only narrow what the operator allows: evaluate again under it.
            evaluate(TaskCreateV1.model_validate(task), tighten(self.settings.policy_config(), doctrine))
        return doctrine

    def status(
        self, *, ctx: GitHubContext, view: StatusView, issue_id: str | None, trace_id: str | None
    ) -> None:
        """Create or edit the run's one status comment; never fails the run (logged instead)."""
        try:
            comment_id = self.client.upsert_status_comment(
                ctx.owner, ctx.name, ctx.issue_number, view.run_id, render_status(view)
            )
        except GitHubError as exc:
            log.warning("github.status_comment_failed", run_id=view.run_id, code=exc.code)
            return
        uri = f"https://github.com/{ctx.repo}/issues/{ctx.issue_number}#issuecomment-{comment_id}"
        with self.factory() as session, session.begin():
            record_artifact(
                session,
                run_id=view.run_id,
                issue_id=issue_id,
                key="status-comment",
                type=ArtifactType.COMMENT.value,
                title="status comment",
                uri=uri,
                digest=f"github-comment:{comment_id}",
                trace_id=trace_id,
            )

    def publish(
        self, *, ctx: GitHubContext, step_ctx: Any, doctrine: RepoDoctrine | None, title: str, body: str
    ) -> dict[str, Any]:
        """Push the run's changes to `tower/<run-id>` and open (or find) its one draft PR."""
        workspace = step_ctx.workspace
        if workspace is None:
            return {"changed": False}
        paths = changed_paths(workspace)
        if not paths:
            return {"changed": False}
        check_paths(paths, doctrine)
        run_id = step_ctx.claim.run_id
        base = str((step_ctx.task.get("target") or {}).get("ref") or "main")
        result = publish(
            self.client,
            ctx,
            workspace=workspace,
            run_id=run_id,
            base_branch=base,
            title=title,
            body=body,
            author_name=self.settings.github_bot_login,
            author_email=f"{self.settings.github_bot_login.replace('[bot]', '')}@users.noreply.github.com",
            push_url=f"{self.settings.git_base_url.rstrip('/')}/{ctx.repo}.git",
            commit_date=step_ctx.publish_info.get("commit_date") or "2000-01-01T00:00:00Z",
            before_pull=lambda: failpoint("after_push"),
        )
        step_ctx.artifacts.append(
            {
                "key": "commit",
                "type": ArtifactType.COMMIT.value,
                "title": result.branch,
                "uri": f"{self.settings.git_base_url.rstrip('/')}/{ctx.repo}/commit/{result.commit}",
                "digest": f"git:{result.commit}",
            }
        )
        step_ctx.artifacts.append(
            {
                "key": "pr",
                "type": ArtifactType.PR.value,
                "title": title,
                "uri": result.pull.html_url,
                "digest": f"pr:{result.pull.number}",
            }
        )
        step_ctx.publish_info["pull_url"] = result.pull.html_url
        return {
            "changed": True,
            "paths": paths[:200],
            "branch": result.branch,
            "commit": result.commit,
            "pull_number": result.pull.number,
            "pull_url": result.pull.html_url,
            "pull_created": result.pull.created,
        }

    def _react(self, ctx: GitHubContext) -> None:
        try:
            if ctx.comment_id is not None:
                self.client.add_reaction(ctx.owner, ctx.name, comment_id=ctx.comment_id, content="eyes")
            else:
                self.client.add_reaction(ctx.owner, ctx.name, issue_number=ctx.issue_number, content="eyes")
        except GitHubError as exc:
            log.warning("github.reaction_failed", repo=ctx.repo, code=exc.code)
