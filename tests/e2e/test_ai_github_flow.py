"""AI runs end to end through `control-tower serve` (API + worker as a process): a labelled issue, the
scripted Anthropic server (the real SDK over HTTP), the sandbox, the GitHub double and a bare git remote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropic, Reply, running_fake_anthropic, text, tool_use
from tests.fakes.git_remote import make_bare_repo, run_git
from tests.fakes.github_server import FakeGitHub, running_fake_github
from tests.fakes.github_webhooks import issues_labeled_payload, signed_delivery
from tests.support.github import delivery_outcome
from tests.support.processes import serve_process, wait_for
from worker.sandbox import probe_sandbox

pytestmark = pytest.mark.slow
SECRET = "e2e-ai-webhook-secret-0123456789"
PAT = "ghp_e2eaiflowtesttoken00000000000000001"
API_KEY = "sk-ant-api03-e2e-ai-flow-key-never-leaks-987654321"
REPO = "acme/answer"
PLAN = {
    "steps": ["return 42 from answer()", "run the tests"],
    "files": ["app.py"],
    "risks": [{"risk": "callers expecting 41", "severity": "low"}],
}
DOCTRINE = "verify: sh test.sh\n"


@pytest.fixture(autouse=True)
def _sandbox_works() -> None:
    if not probe_sandbox("auto").available:
        pytest.skip("no sandbox tier works on this host; AI runs refuse to start without one")


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    root = tmp_path / "remotes"
    make_bare_repo(
        root,
        REPO,
        {
            "README.md": "# answer\n",
            "app.py": "def answer():\n    return 41\n",
            "test_app.py": "from app import answer\n\nassert answer() == 42, answer()\nprint('1 passed')\n",
            "test.sh": "python3 test_app.py\n",
            ".github/control-tower.yml": DOCTRINE,
        },
    )
    return root


@pytest.fixture
def github(remote_root: Path) -> Iterator[FakeGitHub]:
    with running_fake_github(pat=PAT) as gh:
        gh.add_repo(REPO, git_dir=remote_root / f"{REPO}.git")
        gh.set_permission(REPO, "alice", "write")
        yield gh


@pytest.fixture
def claude() -> Iterator[FakeAnthropic]:
    with running_fake_anthropic() as server:
        yield server


@contextmanager
def serve(
    db_url: str, tmp_path: Path, github: FakeGitHub, claude: FakeAnthropic, remote_root: Path
) -> Iterator[str]:
    env = {
        "DATABASE_URL": db_url,
        "JCT_ALLOWED_REPO_PREFIXES": "acme",
        "TRACE_ROOT": str(tmp_path / "traces"),
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "GIT_BASE_URL": f"file://{remote_root}",
        "GITHUB_API_URL": github.base_url,
        "GITHUB_TOKEN": PAT,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "WORKER_POLL_INTERVAL": "0.1",
        "WORKER_LEASE_SECONDS": "5",
        "AI_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": claude.url,
    }
    with serve_process(tmp_path, env) as base:
        yield base


def status_comments(github: FakeGitHub, issue: int) -> list[dict[str, Any]]:
    return [c for c in github.comments(REPO, issue) if "control-tower:run=" in c["body"]]


def label(base: str, issue: int, operation: str, title: str) -> str:
    payload = issues_labeled_payload(REPO, issue, f"tower:{operation}", title=title, body=title)
    response = signed_delivery("issues", payload, SECRET).post(f"{base}/github/webhook")
    outcome = delivery_outcome(lambda path: httpx.get(f"{base}{path}"), response)
    return str(outcome["tasks"][0]["run_id"])


def coding_script() -> list[Reply]:
    return [
        Reply([text(json.dumps(PLAN))], input_tokens=300, output_tokens=80),
        Reply([tool_use("read_file", {"path": "app.py"}, "toolu_01")], input_tokens=1000),
        Reply(
            [
                tool_use(
                    "edit_file",
                    {"path": "app.py", "old_str": "return 41", "new_str": "return 42"},
                    "toolu_02",
                )
            ],
            input_tokens=1100,
        ),
        Reply([tool_use("bash", {"command": "sh test.sh"}, "toolu_03")], input_tokens=1200),
        Reply(
            [tool_use("finish", {"summary": "`answer()` now returns 42; the tests pass."}, "toolu_04")],
            input_tokens=1300,
            output_tokens=25,
        ),
    ]


def test_labelled_code_change_issue_becomes_a_draft_pr_and_a_docs_task_editing_python_does_not(
    db_url: str, tmp_path: Path, github: FakeGitHub, claude: FakeAnthropic, remote_root: Path
) -> None:
    claude.enqueue(*coding_script())
    with serve(db_url, tmp_path, github, claude, remote_root) as base:
        run_id = label(base, 1, "code_change", "Make answer() return 42")
        done = wait_for(lambda: [c for c in status_comments(github, 1) if "**done**" in c["body"]])
        assert len(status_comments(github, 1)) == 1
        body = done[0]["body"]
        assert "Tokens: 4,900 in / 165 out" in body

        pulls = github.pulls(REPO)
        assert len(pulls) == 1 and pulls[0]["draft"] is True
        assert pulls[0]["head"]["ref"] == f"tower/{run_id}" and pulls[0]["html_url"] in body
        assert "1. return 42 from answer()" in pulls[0]["body"]  # the plan is part of the description
        assert "now returns 42" in pulls[0]["body"]
        diff = run_git(remote_root / f"{REPO}.git", "diff", "main", f"tower/{run_id}")
        assert diff is not None
        assert b"-    return 41\n+    return 42" in diff and b"app.py" in diff
        changed = run_git(remote_root / f"{REPO}.git", "diff", "--name-only", "main", f"tower/{run_id}")
        assert changed == b"app.py\n"

        run = httpx.get(f"{base}/runs/{run_id}").json()
        assert run["status"] == "done"
        folder = tmp_path / "traces" / run_id
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        bash = next(e["data"] for e in events if e["type"] == "tool.result" and e["data"]["name"] == "bash")
        assert bash["exit_code"] == 0 and "1 passed" in bash["output"]
        for event in (e for e in events if e["type"] == "ai.response"):
            for key in (
                "provider",
                "model",
                "template_id",
                "template_version",
                "tokens_prompt",
                "tokens_output",
                "latency_ms",
                "retry_count",
                "stop_reason",
                "cost_usd",
            ):
                assert key in event["data"], key
        assert json.loads((folder / "manifest.json").read_text())["tokens"]["tokens_total"] == 5065
        trace = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())
        assert API_KEY not in trace

        # A docs task whose agent edits Python: refused before anything is pushed.
        claude.enqueue(
            # Verify passes (the tests want 42): it is the path policy that refuses the change.
            Reply(
                [
                    tool_use(
                        "edit_file",
                        {"path": "app.py", "old_str": "return 41", "new_str": "return 42"},
                        "toolu_d1",
                    )
                ]
            ),
            Reply([tool_use("finish", {"summary": "done"}, "toolu_d2")]),
        )
        docs_run = label(base, 2, "docs", "Document answer()")
        refused = wait_for(lambda: [c for c in status_comments(github, 2) if "PATH_NOT_ALLOWED" in c["body"]])
        assert "**failed**" in refused[0]["body"]
        assert len(github.pulls(REPO)) == 1
        assert run_git(remote_root / f"{REPO}.git", "rev-parse", "--verify", f"tower/{docs_run}") is None
        assert httpx.get(f"{base}/runs/{docs_run}").json()["error"]["code"] == "PATH_NOT_ALLOWED"
