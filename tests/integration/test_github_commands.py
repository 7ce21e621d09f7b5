"""`/tower` commands carried out by the worker against the GitHub double, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.auth import TokenAuth
from control_tower.github.client import GitHubClient
from control_tower.github.ingest import receive_delivery
from control_tower.github.retry import RetryPolicy
from control_tower.github.tables import CommandRow
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from cwom.audit import AuditRow
from cwom.tables import RunRow
from tests.conftest import make_settings
from tests.fakes.github_server import FakeGitHub, running_fake_github
from tests.fakes.github_webhooks import issue_comment_payload
from worker.github.commands import CommandProcessor, Outcome
from worker.queue import RunQueue

REPO = "acme/app"
PAT = "ghp_commandprocessortesttoken0001"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with running_fake_github(pat=PAT) as gh:
        gh.add_repo(REPO)
        gh.set_permission(REPO, "alice", "write")
        gh.set_permission(REPO, "rita", "read")
        yield gh


@pytest.fixture
def gh_settings(db_url: str, tmp_path: Path, fake: FakeGitHub) -> Settings:
    return make_settings(db_url, tmp_path, github_api_url=fake.base_url)


@pytest.fixture
def processor(factory: sessionmaker[Session], fake: FakeGitHub, gh_settings: Settings) -> CommandProcessor:
    client = GitHubClient(
        auth=TokenAuth(PAT),
        base_url=fake.base_url,
        bot_login="control-tower[bot]",
        retry=RetryPolicy(max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    queue = RunQueue(factory, lease_seconds=30, max_attempts=3)
    return CommandProcessor(factory=factory, client=client, queue=queue, settings=gh_settings, worker_id="w1")


counter = iter(range(100, 10_000))


def comment(factory: sessionmaker[Session], settings: Settings, body: str, sender: str = "alice") -> None:
    payload = issue_comment_payload(REPO, 9, body, sender=sender, comment_id=next(counter))
    receive_delivery(
        factory,
        delivery_id=f"d-{next(counter)}",
        event="issue_comment",
        hook_id=None,
        payload=payload,
        raw=json.dumps(payload).encode(),
        config=settings.policy_config(),
        label_prefix="tower:",
        bot_login="control-tower[bot]",
        max_attempts=3,
    )


def next_reply(processor: CommandProcessor) -> Outcome | None:
    """The outcome of the next command, past the "queued" announcements each new run queues."""
    while True:
        out = processor.run_once()
        if out is None or out.reply not in ("queued", "skipped: the run already reports its own status"):
            return out


def newest_run(factory: sessionmaker[Session]) -> RunRow:
    with factory() as session:
        return session.execute(select(RunRow).order_by(RunRow.id.desc()).limit(1)).scalar_one()


def test_status_cancel_and_replies(
    factory: sessionmaker[Session], gh_settings: Settings, fake: FakeGitHub, processor: CommandProcessor
) -> None:
    assert next_reply(processor) is None
    comment(factory, gh_settings, "/tower run ops make fmt")
    comment(factory, gh_settings, "/tower status")
    out = next_reply(processor)
    assert out is not None and out.status == "done"
    run = newest_run(factory)
    assert f"Run `{run.id}` (ops) is **queued**" in out.reply
    comment(factory, gh_settings, "/tower cancel")
    assert next_reply(processor).status == "done"  # type: ignore[union-attr]
    assert newest_run(factory).status == "cancelled"
    replies = [c["body"] for c in fake.comments(REPO, 9) if "control-tower:run=" not in c["body"]]
    assert len(replies) == 2 and "cancelled by @alice" in replies[1]
    # Approving a run that is not waiting is answered with the reason, not a crash.
    comment(factory, gh_settings, "/tower approve ship it")
    assert "RUN_NOT_WAITING" in next_reply(processor).reply  # type: ignore[union-attr]


def test_reader_is_refused_and_audited(
    factory: sessionmaker[Session], gh_settings: Settings, fake: FakeGitHub, processor: CommandProcessor
) -> None:
    comment(factory, gh_settings, "/tower run ops ls")
    comment(factory, gh_settings, "/tower cancel", sender="rita")
    out = next_reply(processor)
    assert out is not None and out.status == "refused"
    assert "PERMISSION_DENIED" in out.reply and "read" in out.reply
    assert newest_run(factory).status == "queued"
    with factory() as session:
        denied = session.execute(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.action == "policy_denied", AuditRow.entity_kind == "github_command")
        ).scalar_one()
    assert denied == 1


def test_permission_api_failure_fails_closed(
    factory: sessionmaker[Session], gh_settings: Settings, fake: FakeGitHub, processor: CommandProcessor
) -> None:
    from tests.fakes.github_server import server_error

    comment(factory, gh_settings, "/tower run ops ls")
    comment(factory, gh_settings, "/tower cancel")
    fake.inject("GET", r"/repos/acme/app/collaborators/.*/permission", *[server_error(502)] * 10)
    out = next_reply(processor)
    assert out is not None and out.status == "refused"
    assert newest_run(factory).status == "queued"


def test_retry_and_help_and_refusal(
    factory: sessionmaker[Session], gh_settings: Settings, fake: FakeGitHub, processor: CommandProcessor
) -> None:
    comment(factory, gh_settings, "/tower run ops ls")
    first = newest_run(factory)
    comment(factory, gh_settings, "/tower retry")
    out = next_reply(processor)
    assert out is not None and "Retrying as run" in out.reply
    assert newest_run(factory).id != first.id
    comment(factory, gh_settings, "/tower dance")
    assert "UNKNOWN_COMMAND" in next_reply(processor).reply  # type: ignore[union-attr]
    comment(factory, gh_settings, "/tower run deploy now")
    assert "INVALID_OPERATION" in next_reply(processor).reply  # type: ignore[union-attr]
    # Every command is answered exactly once, even if processed again.
    with factory() as session:
        assert (
            session.execute(
                select(func.count())
                .select_from(CommandRow)
                .where(CommandRow.status == "done", CommandRow.kind != "announce")
            ).scalar_one()
            == 3
        )
        assert session.execute(select(func.count()).select_from(TaskRow)).scalar_one() == 2
    assert len([c for c in fake.comments(REPO, 9) if "control-tower:run=" not in c["body"]]) == 3
    # The run started by the comment got its one status comment ("queued") from its announcement.
    assert len([c for c in fake.comments(REPO, 9) if "control-tower:run=" in c["body"]]) == 1
