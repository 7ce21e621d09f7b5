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


def test_checkouts_share_a_listing_only_when_they_asked_before_it_started(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `git ls-remote` answers every checkout that asked before it began, never one that asked later."""
    listings = co.Listings()
    monkeypatch.setattr(co, "LISTINGS", listings)
    real = co._list_refs
    listed, release = threading.Event(), threading.Event()

    def held_first(url: str, repo: str, patterns: list[str]) -> dict[str, str]:
        found = real(url, repo, patterns)
        if not listed.is_set():  # the first listing has its answer, and is held before it returns
            listed.set()
            release.wait(10)
        return found

    monkeypatch.setattr(co, "_list_refs", held_first)
    url = co.clone_url(base(remote), "acme/app")
    before = remote_head(remote)
    results: dict[str, co.Checkout] = {}

    def checkout(name: str) -> None:
        results[name] = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / name)

    first = threading.Thread(target=checkout, args=("first",))
    first.start()
    assert listed.wait(10)
    pushed = push_change(remote, "late.txt", "late\n")  # after the first listing ran, before the others ask
    later = [threading.Thread(target=checkout, args=(name,)) for name in ("second", "third")]
    for thread in later:
        thread.start()
    for _ in range(500):
        if listings.waiting(url) == 2:
            break
        threading.Event().wait(0.01)
    assert listings.waiting(url) == 2  # both wait for the next listing, not for the one in flight
    release.set()
    for thread in [first, *later]:
        thread.join(10)
    assert results["first"].commit == before
    assert results["second"].commit == results["third"].commit == pushed
    assert (results["third"].path / "late.txt").read_text() == "late\n"
    assert listings.runs == 2  # one for the first, one shared by the two that asked while it ran
    # A lone checkout lists at once, and a listing's failure fails the checkouts it answered.
    assert co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "alone").commit == pushed
    assert listings.runs == 3
    with pytest.raises(co.CheckoutFailed):
        co.clone(base(remote), "acme/missing", "main", tmp_path / "ws" / "missing")


def _tree_view(ws: Path) -> dict[str, tuple[int, bytes]]:
    """Every path of a work tree (`.git` aside): its mode and its content or link target."""
    found: dict[str, tuple[int, bytes]] = {}
    for path in sorted(ws.rglob("*")):
        rel = path.relative_to(ws).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        st = path.lstat()
        if path.is_symlink():
            data = str(path.readlink()).encode()
        elif path.is_dir():
            data = b""
        else:
            data = path.read_bytes()
        found[rel] = (st.st_mode, data)
    return found


def test_a_commit_checked_out_again_is_written_without_git_exactly_as_git_wrote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: dict[str, bytes | str] = {
        "README.md": "# app\n",
        "bin/run.sh": "#!/bin/sh\necho run\n",
        "deep/a/b/c.txt": "c\n",
        "crlf.txt": "one\ntwo\n",
        ".gitattributes": "crlf.txt text eol=crlf\n",
        "empty.txt": "",
    }
    make_bare_repo(tmp_path / "remote", "acme/app", files)
    remote = tmp_path / "remote"
    work = remote / ".work" / "acme/app"
    (work / "bin/run.sh").chmod(0o755)
    (work / "link").symlink_to("deep/a/b/c.txt")
    git(work, "add", "--all")
    git(work, "commit", "-q", "-m", "modes and a link")
    git(work, "push", "-q", str(remote / "acme/app.git"), "HEAD:refs/heads/main")
    commit = remote_head(remote)
    trees = co.Trees()
    monkeypatch.setattr(co, "TREES", trees)
    by_git = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "git")
    assert trees.hits == 0
    # The same commit again, named by its id so that nothing else needs git either: no git can be found.
    real_path = __import__("os").environ["PATH"]
    empty = tmp_path / "no-git"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    detached = co.clone(base(remote), "acme/app", commit, tmp_path / "ws" / "detached")
    monkeypatch.setenv("PATH", real_path)
    branch = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "branch")
    assert trees.hits == 2
    assert by_git.commit == detached.commit == branch.commit == commit
    assert (detached.path / "crlf.txt").read_bytes() == b"one\r\ntwo\r\n"  # git's conversion, kept
    assert _tree_view(detached.path) == _tree_view(by_git.path) == _tree_view(branch.path)
    assert (detached.path / ".git/HEAD").read_text().strip() == commit
    assert git(branch.path, "symbolic-ref", "HEAD") == "refs/heads/main"
    for result in (detached, branch):
        ws = result.path
        assert git(ws, "rev-parse", "HEAD") == commit
        assert git(ws, "ls-files", "-s") == git(by_git.path, "ls-files", "-s")
        # The index's stat data are the new files' own: nothing differs, even without a refresh.
        assert git(ws, "diff-files", "--name-only") == ""
        assert git(ws, "status", "--porcelain") == ""
        git(ws, "fsck", "--strict", "--no-dangling")
    # A change of the same size right after the checkout (the same clock tick) is still seen by git.
    (branch.path / "deep/a/b/c.txt").write_text("d\n")
    assert git(branch.path, "status", "--porcelain") == "M deep/a/b/c.txt"
    (branch.path / "bin/run.sh").chmod(0o644)
    assert "bin/run.sh" in git(branch.path, "diff", "--name-only")


def test_a_kept_work_tree_is_used_only_with_the_packs_it_came_from(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = co.Trees()
    monkeypatch.setattr(co, "TREES", trees)
    first = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "a")
    co.clone(base(remote), "acme/app", first.commit, tmp_path / "ws" / "b")
    assert trees.hits == 1
    # A fetch adds a pack: the old commit is checked out by git again (and kept anew).
    push_change(remote, "side.txt", "side\n", branch="side")
    co.clone(base(remote), "acme/app", "side", tmp_path / "ws" / "c")
    again = co.clone(base(remote), "acme/app", first.commit, tmp_path / "ws" / "d")
    assert trees.hits == 1 and again.commit == first.commit
    co.clone(base(remote), "acme/app", first.commit, tmp_path / "ws" / "e")
    assert trees.hits == 2
    # Packs rewritten in place (their size and mtime change): git is asked, and finds them broken.
    mirror = co.Mirror(tmp_path / "ws" / co.MIRRORS, first.url).path
    for pack in (mirror / "objects/pack").iterdir():
        pack.write_bytes(b"garbage")
    again = co.clone(base(remote), "acme/app", "main", tmp_path / "ws" / "f")
    assert trees.hits == 2 and again.commit == first.commit
    assert git(again.path, "status", "--porcelain") == ""
