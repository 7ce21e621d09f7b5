"""Everything the worker says or pushes to GitHub, each idempotent across retries and crashes.

- authorisation: the sender's live permission must reach the configured level (fail closed);
- doctrine: `.github/control-tower.yml` from the default branch becomes a DoctrineRef of the run;
- one status comment per run, found again by its hidden marker and edited in place;
- changes are committed and pushed outside the sandbox to `tower/<run-id>`, and one draft PR is
  found or opened for that branch;
- every write-back is an Artifact (worker.artifacts, one per run and key) with its audit row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_tower.github.client import GitHubClient, PullRef, permission_at_least
from control_tower.github.doctrine import DOCTRINE_PATH, RepoDoctrine
from control_tower.github.errors import GitHubError
from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id
from cwom.enums import ObjectKind
from cwom.rows import insert_ignore, snapshot
from cwom.tables import DoctrineRefRow, run_doctrine_refs
from policy.errors import ControlTowerError, PolicyCode, PolicyError
from worker.github.context import GitHubContext

BOT = Actor("system", "control-tower")
WORKFLOWS = ".github/workflows/"


class PushFailed(ControlTowerError):
    """The branch could not be pushed."""

    code = "PUSH_FAILED"


@dataclass(frozen=True)
class Published:
    """What publishing a run's changes produced."""

    branch: str
    commit: str
    pull: PullRef


def authorize(client: GitHubClient, ctx: GitHubContext, *, minimum: str) -> str:
    """The sender's permission, or PolicyError PERMISSION_DENIED; any API failure denies (fail closed)."""
    try:
        permission = client.get_permission(ctx.owner, ctx.name, ctx.sender)
    except GitHubError as exc:
        raise PolicyError(
            PolicyCode.PERMISSION_DENIED,
            "requested_by",
            f"could not confirm @{ctx.sender}'s permission on {ctx.repo} ({exc.code}); refusing",
        ) from exc
    if not permission_at_least(permission, minimum):
        raise PolicyError(
            PolicyCode.PERMISSION_DENIED,
            "requested_by",
            f"@{ctx.sender} has {permission} permission on {ctx.repo}; {minimum} is required",
        )
    return permission


def record_doctrine(
    session: Session,
    *,
    run_id: str,
    ctx: GitHubContext,
    doctrine: RepoDoctrine,
    branch: str,
    trace_id: str | None,
) -> str:
    """Store the doctrine as a DoctrineRef (found again by hash) and link it to the run."""
    existing = session.execute(
        select(DoctrineRefRow.id).where(
            DoctrineRefRow.namespace == ctx.repo, DoctrineRefRow.hash == doctrine.content_hash
        )
    ).scalar()
    ref_id = str(existing) if existing is not None else new_id()
    if existing is None:
        row = DoctrineRefRow(
            id=ref_id,
            namespace=ctx.repo,
            name=DOCTRINE_PATH,
            version=str(doctrine.version),
            hash=doctrine.content_hash,
            uri=f"github://{ctx.repo}/{branch}/{DOCTRINE_PATH}",
            content=doctrine.model_dump(mode="json"),
            trace_id=trace_id,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=BOT,
            action="created",
            entity_kind=ObjectKind.DOCTRINE_REF,
            entity_id=ref_id,
            after=snapshot(row),
            trace_id=trace_id,
        )
    linked = insert_ignore(
        session,
        run_doctrine_refs,
        {"run_id": run_id, "doctrine_ref_id": ref_id},
        conflict=["run_id", "doctrine_ref_id"],
    )
    if linked is not None:
        audit.record(
            session,
            actor=BOT,
            action="linked",
            entity_kind=ObjectKind.RUN,
            entity_id=run_id,
            after={"kind": "doctrine_ref", "id": ref_id, "via": run_doctrine_refs.name},
            trace_id=trace_id,
        )
    return ref_id


def changed_paths(workspace: Path) -> list[str]:
    """Every path the run changed in its checkout (tracked and untracked), computed outside the sandbox."""
    out = _git(workspace, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    paths: list[str] = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if status[0] in "RC":  # renames carry the source path as the next entry
            paths.append(entries[i])
            i += 1
    return sorted(set(paths))


def check_paths(paths: list[str], doctrine: RepoDoctrine | None) -> None:
    """Refuse workflow changes unless the doctrine allows them, and paths outside the doctrine's list."""
    if doctrine is not None:
        refused = doctrine.disallowed_paths(paths)
    else:
        refused = sorted(p for p in paths if p.startswith(WORKFLOWS))
    if refused:
        raise PolicyError(
            PolicyCode.PATH_NOT_ALLOWED, "diff", f"changes to {', '.join(refused[:10])} are not allowed"
        )


def publish(
    client: GitHubClient,
    ctx: GitHubContext,
    *,
    workspace: Path,
    run_id: str,
    base_branch: str,
    title: str,
    body: str,
    author_name: str,
    author_email: str,
    push_url: str,
    commit_date: str,
    before_pull: Callable[[], None] = lambda: None,
) -> Published:
    """Commit to `tower/<run-id>`, push it outside the sandbox (hooks off), open one draft PR."""
    branch = f"tower/{run_id}"
    safe = [
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        f"user.name={author_name}",
        "-c",
        f"user.email={author_email}",
        "-c",
        "commit.gpgsign=false",
    ]
    _git(workspace, *safe, "checkout", "-B", branch)
    _git(workspace, *safe, "add", "--all")
    # The run's own timestamp keeps the commit id the same when a retried attempt commits the same tree.
    env = {"GIT_AUTHOR_DATE": commit_date, "GIT_COMMITTER_DATE": commit_date}
    _git(workspace, *safe, "commit", "--no-verify", "-m", f"{title}\n\nControl Tower run {run_id}", env=env)
    commit = _git(workspace, "rev-parse", "HEAD").strip()
    try:
        _git(workspace, *safe, "push", "--force", push_url, f"HEAD:refs/heads/{branch}")
    except subprocess.CalledProcessError as exc:
        raise PushFailed(message=f"push to {branch} failed (exit {exc.returncode})") from exc
    before_pull()
    pull = client.find_or_create_pull(ctx.owner, ctx.name, branch, base_branch, title, body, draft=True)
    return Published(branch, commit, pull)


def _git(workspace: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    return subprocess.run(
        ["git", *args], cwd=workspace, check=True, capture_output=True, text=True, env=full_env
    ).stdout
