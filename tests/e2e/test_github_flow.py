"""GitHub end to end through processes: `control-tower serve` (API + worker) against the GitHub double.

Deliveries are signed as GitHub signs them; the remote is a bare git repository on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.git_remote import make_bare_repo, run_git
from tests.fakes.github_server import FakeGitHub, rate_limited_429, running_fake_github, server_error
from tests.fakes.github_webhooks import issue_comment_payload, issues_labeled_payload, signed_delivery
from tests.support.github import delivery_outcome
from tests.support.processes import serve_process, wait_for

pytestmark = pytest.mark.slow
SECRET = "e2e-webhook-secret-0123456789"
PAT = "ghp_e2eflowtesttoken000000000000000001"
REPO = "acme/widgets"


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    root = tmp_path / "remotes"
    make_bare_repo(root, REPO, {"README.md": "# widgets\n", "fmt.sh": "echo formatted > FORMATTED.txt\n"})
    return root


@pytest.fixture
def fake(remote_root: Path) -> Iterator[FakeGitHub]:
    with running_fake_github(pat=PAT) as gh:
        gh.add_repo(REPO, git_dir=remote_root / f"{REPO}.git")
        gh.set_permission(REPO, "alice", "write")
        gh.set_permission(REPO, "rita", "read")
        yield gh


@contextmanager
def serve(db_url: str, tmp_path: Path, fake: FakeGitHub, remote_root: Path, **extra: str) -> Iterator[str]:
    env = {
        "DATABASE_URL": db_url,
        "JCT_ALLOWED_REPO_PREFIXES": "acme",
        "TRACE_ROOT": str(tmp_path / "traces"),
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "GIT_BASE_URL": f"file://{remote_root}",
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_TOKEN": PAT,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "WORKER_POLL_INTERVAL": "0.1",
        "WORKER_LEASE_SECONDS": "3",
        "SANDBOX": "auto",
        **extra,
    }
    with serve_process(tmp_path, env) as base:
        yield base


def status_comments(fake: FakeGitHub, issue: int) -> list[dict[str, Any]]:
    return [c for c in fake.comments(REPO, issue) if "control-tower:run=" in c["body"]]


def send(base: str, event: str, payload: dict[str, Any], delivery_id: str | None = None) -> httpx.Response:
    return signed_delivery(event, payload, SECRET, delivery_id=delivery_id).post(f"{base}/github/webhook")


def outcome(base: str, response: httpx.Response) -> dict[str, Any]:
    return delivery_outcome(lambda path: httpx.get(f"{base}{path}"), response)


def test_labelled_issue_and_ops_command_end_to_end(
    db_url: str, tmp_path: Path, fake: FakeGitHub, remote_root: Path
) -> None:
    with serve(db_url, tmp_path, fake, remote_root) as base:
        # A labelled issue: one status comment, edited in place until the result.
        labelled = issues_labeled_payload(REPO, 1, "tower:ops", body="Format it\n\n```sh\nls\n```\n")
        assert send(base, "issues", labelled).status_code == 202
        done = wait_for(lambda: [c for c in status_comments(fake, 1) if "**done**" in c["body"]])
        assert len(status_comments(fake, 1)) == 1
        edits = fake.calls_to("PATCH", r"/repos/acme/widgets/issues/comments/\d+")
        assert edits, "the status comment was edited in place"
        assert "Trace:" in done[0]["body"]
        assert any(r["target"] == ("issue", 1) and r["content"] == "eyes" for r in fake.reactions(REPO))

        # An ops command that changes files: branch pushed to the bare repo and one draft PR,
        # delivered three times under one id and once more under another id.
        payload = issue_comment_payload(REPO, 2, "/tower run ops sh fmt.sh", comment_id=5001)
        first = send(base, "issue_comment", payload, delivery_id="dup-1")
        assert send(base, "issue_comment", payload, delivery_id="dup-1").status_code == 200
        assert send(base, "issue_comment", payload, delivery_id="dup-1").status_code == 200
        run_id = outcome(base, first)["tasks"][0]["run_id"]
        second = send(base, "issue_comment", payload, delivery_id="dup-2")
        assert outcome(base, second)["tasks"][0]["duplicate"] is True
        wait_for(lambda: [c for c in status_comments(fake, 2) if "**done**" in c["body"]])
        pulls = fake.pulls(REPO)
        assert len(pulls) == 1 and pulls[0]["draft"] is True
        assert pulls[0]["head"]["ref"] == f"tower/{run_id}"
        assert "Closes #2" in pulls[0]["body"]
        tree = run_git(remote_root / f"{REPO}.git", "ls-tree", "--name-only", f"tower/{run_id}")
        assert tree is not None and b"FORMATTED.txt" in tree
        assert len(status_comments(fake, 2)) == 1
        assert pulls[0]["html_url"] in status_comments(fake, 2)[0]["body"]
        run = httpx.get(f"{base}/runs/{run_id}").json()
        assert run["status"] == "done"
        assert {a["type"] for a in run["artifacts"]} >= {"pr", "commit", "patch", "trace", "comment"}

        # A reader: refused in the thread, nothing executed.
        reader = issue_comment_payload(REPO, 3, "/tower run ops sh fmt.sh", comment_id=5002, sender="rita")
        refused_run = outcome(base, send(base, "issue_comment", reader))["tasks"][0]["run_id"]
        refusal = wait_for(lambda: [c for c in status_comments(fake, 3) if "PERMISSION_DENIED" in c["body"]])
        assert "rita" in refusal[0]["body"]
        detail = httpx.get(f"{base}/runs/{refused_run}").json()
        assert detail["status"] == "failed" and detail["error"]["code"] == "PERMISSION_DENIED"
        assert detail["steps"] == []
        assert len(fake.pulls(REPO)) == 1

        # Bots, quoted and fenced commands, edited comments: nothing at all.
        for body, kwargs in [
            ("/tower run ops ls", {"sender": "renovate[bot]", "sender_type": "Bot"}),
            ("> /tower run ops ls", {}),
            ("```\n/tower run ops ls\n```", {}),
            ("/tower run ops ls", {"action": "edited", "previous_body": "x"}),
        ]:
            resp = send(
                base, "issue_comment", issue_comment_payload(REPO, 4, body, comment_id=6000, **kwargs)
            )
            assert resp.json()["status"] == "ignored"
        bad = signed_delivery("issues", labelled, "not-the-secret-000000")
        assert bad.post(f"{base}/github/webhook").status_code == 401
        time.sleep(1)
        assert fake.comments(REPO, 4) == []


def test_github_outage_and_rate_limits_do_not_duplicate(
    db_url: str, tmp_path: Path, fake: FakeGitHub, remote_root: Path
) -> None:
    fake.inject(
        "*",
        r"/repos/acme/widgets/.*",
        server_error(502),
        server_error(502),
        rate_limited_429(1),
        server_error(503),
        rate_limited_429(1),
    )
    with serve(db_url, tmp_path, fake, remote_root) as base:
        payload = issue_comment_payload(REPO, 7, "/tower run ops sh fmt.sh", comment_id=7001)
        assert send(base, "issue_comment", payload).status_code == 202
        wait_for(lambda: [c for c in status_comments(fake, 7) if "**done**" in c["body"]], timeout=90)
    assert len(status_comments(fake, 7)) == 1
    assert len(fake.pulls(REPO)) == 1


def test_crash_after_push_before_pr_then_retry(
    db_url: str, tmp_path: Path, fake: FakeGitHub, remote_root: Path
) -> None:
    payload = issue_comment_payload(REPO, 8, "/tower run ops sh fmt.sh", comment_id=8001)
    with serve(db_url, tmp_path, fake, remote_root, CONTROL_TOWER_FAILPOINTS="after_push") as base:
        run_id = outcome(base, send(base, "issue_comment", payload))["tasks"][0]["run_id"]
        # The worker dies right after pushing (the whole server process exits with it).
        wait_for(lambda: run_git(remote_root / f"{REPO}.git", "rev-parse", f"tower/{run_id}"))
    assert fake.pulls(REPO) == []
    with serve(db_url, tmp_path, fake, remote_root) as base:
        wait_for(lambda: httpx.get(f"{base}/runs/{run_id}").json()["status"] == "done", timeout=90)
    assert len(fake.pulls(REPO)) == 1
    assert len(status_comments(fake, 8)) == 1
