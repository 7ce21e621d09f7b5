"""Workspaces made from the per-remote mirror: always the remote's current commit, real and self-contained."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.fakes.git_remote import make_bare_repo
from worker import checkout as co

FILES: dict[str, bytes | str] = {"README.md": "# app\n", "src/app.py": "print('hello')\n"}
GIT = [
    "git",
    "-c",
    "user.name=Pusher",
    "-c",
    "user.email=pusher@example.invalid",
    "-c",
    "core.hooksPath=/dev/null",
]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """The bare remote `acme/app` under tmp_path/remote; its clone for pushing is tmp_path/remote/.work."""
    make_bare_repo(tmp_path / "remote", "acme/app", FILES)
    return tmp_path / "remote"


def base(remote: Path) -> str:
    return f"file://{remote}"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def push_change(
    remote: Path, name: str, text: str, *, branch: str = "main", force_from: str | None = None
) -> str:
    """Commit `name` = `text` on `branch` of the remote (optionally rewriting it from `force_from`)."""
    work = remote / ".work" / "acme/app"
    if force_from is not None:
        git(work, "checkout", "-q", "-B", branch, force_from)
    else:
        git(work, "checkout", "-q", "-B", branch)
    (work / name).write_text(text)
    git(work, "add", "--all")
    git(work, "commit", "-q", "-m", f"change {name}")
    git(work, "push", "-q", "--force", str(remote / "acme/app.git"), f"HEAD:refs/heads/{branch}")
    return git(work, "rev-parse", "HEAD")


def remote_head(remote: Path, ref: str = "refs/heads/main") -> str:
    return git(remote / "acme/app.git", "rev-parse", ref)


def test_checkout_is_a_real_self_contained_repository(remote: Path, tmp_path: Path) -> None:
    result = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "run1")
    ws = result.path
    assert result.commit == remote_head(remote)
    assert (ws / "src/app.py").read_text() == "print('hello')\n"
    assert git(ws, "rev-parse", "HEAD") == result.commit
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(ws, "status", "--porcelain") == ""
    assert git(ws, "remote", "get-url", "origin") == f"{base(remote)}/acme/app.git"
    # Nothing in it points at the mirror: no alternates, and fsck passes with the mirror gone.
    assert not (ws / ".git/objects/info/alternates").exists()
    mirror = co.Mirror(tmp_path / "ws" / co.MIRRORS, result.url).path
    assert mirror.is_dir()
    subprocess.run(["rm", "-rf", str(mirror)], check=True)
    git(ws, "fsck", "--strict", "--no-dangling")
    assert git(ws, "log", "--format=%s") == "initial commit"


def test_a_new_commit_on_the_remote_reaches_the_next_checkout(remote: Path, tmp_path: Path) -> None:
    first = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    pushed = push_change(remote, "new.txt", "new\n")
    second = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "b")
    assert first.commit != pushed and second.commit == pushed
    assert (second.path / "new.txt").read_text() == "new\n"
    assert not (first.path / "new.txt").exists()


def test_a_rewritten_branch_is_followed_not_served_stale(remote: Path, tmp_path: Path) -> None:
    root = remote_head(remote)
    push_change(remote, "one.txt", "1\n")
    co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    rewritten = push_change(remote, "two.txt", "2\n", force_from=root)
    again = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "b")
    assert again.commit == rewritten
    assert (again.path / "two.txt").exists() and not (again.path / "one.txt").exists()


def test_tags_and_commit_ids_check_out_detached(remote: Path, tmp_path: Path) -> None:
    work = remote / ".work" / "acme/app"
    first = remote_head(remote)
    git(work, "tag", "light", first)
    git(work, "tag", "-a", "-m", "annotated", "v1", first)
    git(work, "push", "-q", str(remote / "acme/app.git"), "refs/tags/light", "refs/tags/v1")
    later = push_change(remote, "later.txt", "later\n")
    for n, ref in enumerate(["light", "v1", first, first[:10], later]):
        result = co.clone(base(remote), "acme/app", ref, tmp_path / "ws" / str(n))
        expected = later if ref == later else first
        assert result.commit == expected, ref
        assert git(result.path, "rev-parse", "HEAD") == expected
        assert (result.path / ".git/HEAD").read_text().strip() == expected  # detached
        assert git(result.path, "status", "--porcelain") == ""


def test_a_commit_pushed_after_the_mirror_was_made_is_fetched(remote: Path, tmp_path: Path) -> None:
    co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    pushed = push_change(remote, "side.txt", "side\n", branch="side")
    result = co.clone(base(remote), "acme/app", pushed, tmp_path / "ws" / "b")
    assert result.commit == pushed and (result.path / "side.txt").exists()


def test_missing_refs_and_commits_fail_cleanly(remote: Path, tmp_path: Path) -> None:
    for n, ref in enumerate(["no-such-branch", "0123456789abcdef0123456789abcdef01234567"]):
        dest = tmp_path / "ws" / str(n)
        with pytest.raises(co.CheckoutFailed) as info:
            co.clone(base(remote), "acme/app", ref, dest)
        assert info.value.code == "CHECKOUT_FAILED"
        assert not dest.exists()
    with pytest.raises(co.CheckoutFailed):
        co.clone(base(remote), "acme/missing", "main", tmp_path / "ws" / "x")


def test_a_broken_mirror_is_rebuilt(remote: Path, tmp_path: Path) -> None:
    first = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    mirror = co.Mirror(tmp_path / "ws" / co.MIRRORS, first.url).path
    for pack in (mirror / "objects/pack").iterdir():
        pack.write_bytes(b"garbage")  # the mirror claims the refs but its objects are unreadable
    again = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "b")
    assert again.commit == first.commit and (again.path / "README.md").read_text() == "# app\n"
    git(again.path, "fsck", "--strict", "--no-dangling")


def test_a_repack_of_the_mirror_leaves_workspaces_intact(remote: Path, tmp_path: Path) -> None:
    first = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    mirror = co.Mirror(tmp_path / "ws" / co.MIRRORS, first.url).path
    for n in range(3):
        push_change(remote, f"f{n}.txt", f"{n}\n")
        co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / f"b{n}")
    assert len(list((mirror / "objects/pack").glob("*.pack"))) == 4  # one pack per fetch, none loose
    git(mirror, "repack", "-a", "-d", "-q")
    git(mirror, "prune", "--expire=now")
    assert len(list((mirror / "objects/pack").glob("*.pack"))) == 1
    for ws in [first.path, *(tmp_path / "ws" / f"b{n}" for n in range(3))]:
        git(ws, "fsck", "--strict", "--no-dangling")
    last = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "c")
    assert last.commit == remote_head(remote)


def test_concurrent_checkouts_while_the_remote_moves(remote: Path, tmp_path: Path) -> None:
    """Readers link packs under a shared lock while fetches (under the exclusive lock) add new ones."""
    pushed: list[str] = [remote_head(remote)]
    results: list[co.Checkout] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def checkouts(worker: int) -> None:
        try:
            for n in range(6):
                result = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / f"{worker}-{n}")
                with lock:
                    results.append(result)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=checkouts, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for n in range(5):
        pushed.append(push_change(remote, "counter.txt", f"{n}\n"))
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 24
    for result in results:
        assert result.commit in pushed
        assert git(result.path, "rev-parse", "HEAD") == result.commit
        assert git(result.path, "status", "--porcelain") == ""
        index = pushed.index(result.commit)
        counter = result.path / "counter.txt"
        assert (counter.read_text() if counter.exists() else None) == (f"{index - 1}\n" if index else None)
    final = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "final")
    assert final.commit == pushed[-1]


def _no_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """git cannot be found: a diff that still works was told without it."""
    empty = tmp_path / "no-git-here"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize(
    "change",
    [
        "same size, at once",  # in the checkout's clock tick: caught by the racy content hash
        "same size, later",
        "mode",
        "mtime set back",
        "new file",
        "new empty dir",
        "deleted",
        "replaced by a symlink",
        "ignored file",
    ],
)
def test_the_checkout_snapshot_never_hides_a_change(
    change: str, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever changes after the checkout sends the diff to git, which decides; only an untouched
    workspace is answered from the snapshot (git is not even on the PATH for that one)."""
    (remote / ".work" / "acme/app" / ".gitignore").write_text("*.log\n")
    push_change(remote, ".gitignore", "*.log\n")
    out = co.clone(base(remote), "acme/app", "main", tmp_path / "ws")
    ws, snap = out.path, out.snapshot
    assert snap is not None and "src/app.py" in snap.entries and ".git" not in snap.entries
    app = ws / "src" / "app.py"
    if change == "same size, at once":
        app.write_text("print('HELLO')\n")
    elif change == "same size, later":
        threading.Event().wait(0.01)
        app.write_text("print('HELLO')\n")
    elif change == "mode":
        app.chmod(0o755)
    elif change == "mtime set back":
        before = app.stat()
        app.write_text("print('hallo')\n")
        import os

        os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "new file":
        (ws / "new.txt").write_text("x")
    elif change == "new empty dir":
        (ws / "empty").mkdir()
    elif change == "deleted":
        (ws / "README.md").unlink()
    elif change == "replaced by a symlink":
        app.unlink()
        app.symlink_to("../README.md")
    elif change == "ignored file":
        (ws / "debug.log").write_text("x")
    assert not co.unchanged_since(ws, snap)
    diff = co.workspace_diff(ws, snapshot=snap)
    expected = {
        "same size, at once": ["src/app.py"],
        "same size, later": ["src/app.py"],
        "mode": ["src/app.py"],
        "mtime set back": ["src/app.py"],
        "new file": ["new.txt"],
        "new empty dir": [],
        "deleted": ["README.md"],
        "replaced by a symlink": ["src/app.py"],
        "ignored file": [],
    }[change]
    assert diff.paths == expected
    _no_git(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError):
        co.workspace_diff(ws, snapshot=snap)


def test_an_untouched_workspace_is_answered_without_git(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = co.clone(base(remote), "acme/app", "main", tmp_path / "ws")
    assert out.snapshot is not None
    _no_git(monkeypatch, tmp_path)
    assert co.workspace_diff(out.path, snapshot=out.snapshot) == co.Diff("", [], False)
    # Without the snapshot (or past its size limit) git is asked, here in vain.
    with pytest.raises(FileNotFoundError):
        co.workspace_diff(out.path)
    assert co.take_snapshot(out.path, limit=1) is None
