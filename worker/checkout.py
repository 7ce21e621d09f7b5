"""Per-run workspaces: a fresh checkout of the task's ref from a local mirror, and the diff of a run."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import re
import shutil
import stat as stat_mod
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from policy.errors import ControlTowerError

_SHA = re.compile(r"[0-9a-f]{7,40}")
_BAD_REF = re.compile(r"(^-)|\.\.|[\x00-\x20~^:?*\[\\]|@\{|(\.lock$)|(/$)")
# Hooks and external drivers must never run on content a sandboxed step wrote.
SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "diff.external=")
MAX_DIFF_BYTES = 10 << 20
MIRRORS = ".mirrors"
# A workspace lives for one run: fsync buys nothing and costs a third of the checkout.
_FAST = ("-c", "core.fsync=none")


class CheckoutFailed(ControlTowerError):
    """The repository could not be cloned at the requested ref."""

    code = "CHECKOUT_FAILED"
    http_status = 502


@dataclass(frozen=True)
class Checkout:
    """A run's workspace and the commit it starts from."""

    path: Path
    url: str
    ref: str
    commit: str
    # What the checkout wrote, to tell without git that a run changed nothing (`workspace_diff`).
    snapshot: Snapshot | None = None


def clone_url(base_url: str, repo: str) -> str:
    """`{GIT_BASE_URL}/{owner}/{repo}.git`."""
    owner, name = repo.split("/", 1)
    if name in (".", "..") or owner in (".", ".."):
        raise CheckoutFailed(message=f"not a repository name: {repo!r}", field="target.repo")
    return f"{base_url.rstrip('/')}/{owner}/{name}.git"


_GIT_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def git_env() -> dict[str, str]:
    """The environment git runs with on the worker: no prompts, no user or system config."""
    env = {k: v for k in _GIT_ENV_KEEP if (v := os.environ.get(k)) is not None}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"})
    return env


def workspace_path(root: Path, run_id: str) -> Path:
    """`{WORKSPACE_ROOT}/{run_id}`."""
    return Path(root) / run_id


def remove_workspace(path: Path) -> None:
    """Delete a workspace, including files a sandboxed step made read-only."""

    def _retry(func: object, p: str, _exc: object) -> None:
        os.chmod(os.path.dirname(p) or ".", 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.unlink(p)

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=_retry)


TRASH = ".trash"


class Reclaimer:
    """Deletes finished workspaces off the runs' path: each is renamed into `{root}/.trash` at once (its
    path is free again, and nothing is left where a run looks), and one background thread deletes it.

    Deleting a workspace (its files, its `.git`, the hard links to the mirror's packs) took ~2 ms, and
    tens of ms when the disk was busy, in the executor thread after the run's last statement, keeping
    the slot from its next run. Whatever a crash leaves in the trash is deleted by the next process
    that discards a workspace under the same root.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._swept: set[Path] = set()

    def discard(self, path: Path) -> None:
        """Remove the workspace at `path` from its place now; its files are deleted in the background."""
        trash = path.parent / TRASH
        target = trash / f"{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if trash not in self._swept:
                trash.mkdir(exist_ok=True)
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError:
            remove_workspace(path)  # cannot rename (odd permissions, a mount point): delete in place
            return
        with self._lock:
            leftovers = [] if trash in self._swept else _abandoned(trash)
            self._swept.add(trash)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ct-workspace-reclaim", daemon=True)
                self._thread.start()
        for item in [*leftovers, target]:
            self._queue.put(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                remove_workspace(item)
            except OSError:
                pass  # gone already, or undeletable: a retry would hit the same error


def _abandoned(trash: Path) -> list[Path]:
    """Trash entries whose process is gone (each is named `{run}-{pid}-{random}`)."""
    found = []
    for entry in trash.iterdir():
        owner = entry.name.rsplit("-", 2)[-2] if entry.name.count("-") >= 2 else ""
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            found.append(entry)
    return found


def clone(base_url: str, repo: str, ref: str, dest: Path, *, mirrors: Path | None = None) -> Checkout:
    """A fresh workspace of `repo` at `ref` (branch, tag or commit) in `dest`, from the local mirror.

    The remote is asked where `ref` points now (`git ls-remote`, one round trip); the mirror is fetched
    only when it lacks that commit, so a workspace never starts from a stale commit. `mirrors` defaults
    to `{dest.parent}/.mirrors`.
    """
    if _BAD_REF.search(ref):
        raise CheckoutFailed(message=f"not a usable ref: {ref!r}", field="target.ref")
    url = clone_url(base_url, repo)
    remove_workspace(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mirror = Mirror(mirrors if mirrors is not None else dest.parent / MIRRORS, url)
    if _SHA.fullmatch(ref):
        branch, listed_as, want = None, None, ref  # a commit id never moves: a mirror that has it is current
    else:
        branch, listed_as, want = _ls_remote(url, repo, ref)
    try:
        commit = mirror.checkout(dest, want, branch=branch, listed_as=listed_as)
    except CheckoutFailed:
        remove_workspace(dest)
        raise
    return Checkout(path=dest, url=url, ref=ref, commit=commit, snapshot=take_snapshot(dest))


def _ls_remote(url: str, repo: str, ref: str) -> tuple[str | None, str, str]:
    """(branch or None for a tag, full ref name, commit) of `ref` on the remote now; a branch wins."""
    heads, tags = f"refs/heads/{ref}", f"refs/tags/{ref}"
    try:
        out = _run(["git", "ls-remote", url, heads, tags])
    except subprocess.CalledProcessError as exc:
        raise CheckoutFailed(message=f"git ls-remote of {repo} failed: {_stderr(exc)}") from exc
    found: dict[str, str] = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    if heads in found:
        return ref, heads, found[heads]
    # An annotated tag is listed with its peeled commit as `<tag>^{}`.
    tag = found.get(tags + "^{}") or found.get(tags)
    if tag is not None:
        return None, tags, tag
    raise CheckoutFailed(message=f"git clone of {repo}@{ref} failed: no branch or tag {ref!r} on the remote")


def _run(argv: list[str], *, cwd: Path | None = None) -> bytes:
    # No preexec_fn: the child is spawned with vfork, not a copy of the worker's whole address space.
    return subprocess.run(argv, cwd=cwd, env=git_env(), check=True, capture_output=True).stdout


def _stderr(exc: subprocess.CalledProcessError) -> str:
    return bytes(exc.stderr or b"").decode("utf-8", "replace").strip()[-500:]


class Mirror:
    """A bare mirror of one remote under the workspace root, and the workspaces made from it.

    - One mirror per clone URL (`{root}/{sha256(url)[:16]}.git`), holding the remote's branches and tags.
      It is only ever fetched into: `git fetch --prune` with `transfer.unpackLimit=1`, so everything it
      holds is in pack files, which git never modifies (a repack writes new ones and deletes the old).
    - A workspace gets hard links to those packs in its own `.git/objects/pack`, a HEAD, a config with
      the real remote as `origin`, and one `git checkout`. It is a self-contained repository: nothing in
      it refers to the mirror, a later repack of the mirror cannot break it, and its `.git` holds nothing
      the sandbox could write back into the mirror (the sandbox mounts `.git` read-only anyway).
    - Locking (`{mirror}.lock`, flock): linking holds it shared, fetching and rebuilding exclusive, so
      concurrent runs and worker processes never link a pack a fetch or repack is deleting. Automatic
      gc runs inside the fetch (`gc.autoDetach=false`), under the exclusive lock.
    """

    def __init__(self, root: Path, url: str) -> None:
        self.url = url
        self.path = root / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".git")
        self.lock_path = root / (self.path.name + ".lock")

    def checkout(self, dest: Path, want: str, *, branch: str | None, listed_as: str | None) -> str:
        """Materialise `want` in `dest` (fetching first when the mirror lacks it); the commit checked out.

        `branch` is the branch to check out (else HEAD is detached); `listed_as` the ref the remote
        listed `want` under a moment ago (None for a commit id the task named).
        """
        if self._materialise(want, dest, branch):
            return _head(dest)
        remove_workspace(dest)
        with self._locked(fcntl.LOCK_EX):
            want = self._refresh(want, listed_as)
        if self._materialise(want, dest, branch):
            return _head(dest)
        # The mirror has the commit, yet a checkout from it failed: its objects are damaged.
        remove_workspace(dest)
        with self._locked(fcntl.LOCK_EX):
            self._rebuild()
            want = self._refresh(want, listed_as)
        self._materialise(want, dest, branch, quiet=False)
        return _head(dest)

    def _refresh(self, want: str, listed_as: str | None) -> str:
        """Fetch so that the mirror holds `want` (under the exclusive lock); the commit to check out.

        A ref that moved again between the listing and the fetch gives its newer commit. When the
        remote listed the commit but the fetch fails, or still lacks it, the mirror is what is broken:
        it is rebuilt once.
        """
        if self._has(want):
            return want
        try:
            self._fetch()
        except CheckoutFailed:
            if listed_as is None:
                raise
            self._rebuild()
        if self._has(want):
            return want
        moved = self._resolve(listed_as) if listed_as is not None else None
        if moved is not None:
            return moved
        raise CheckoutFailed(message=f"git clone of {self.url}@{want} failed: no such commit on the remote")

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

    def _materialise(self, want: str, dest: Path, branch: str | None, *, quiet: bool = True) -> bool:
        """Link the mirror's packs into a new `.git` in `dest` and check `want` out; False if it fails."""
        git_dir = dest / ".git"
        for sub in ("objects/pack", "objects/info", "refs/heads", "refs/tags"):
            (git_dir / sub).mkdir(parents=True, exist_ok=True)
        with self._locked(fcntl.LOCK_SH):
            if not self.path.is_dir():
                return False
            _link_objects(self.path / "objects", git_dir / "objects")
        (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch or 'main'}\n")
        (git_dir / "config").write_text(_workspace_config(self.url))
        args = ["-B", branch, want] if branch is not None else ["--detach", want]
        try:
            _run(["git", *SAFE, *_FAST, "checkout", "-q", *args, "--"], cwd=dest)
        except subprocess.CalledProcessError as exc:
            if quiet:
                return False
            raise CheckoutFailed(message=f"git checkout of {want} failed: {_stderr(exc)}") from exc
        return True

    def _has(self, want: str) -> bool:
        return self._resolve(want) is not None

    def _resolve(self, name: str) -> str | None:
        """The commit `name` (a commit id, possibly abbreviated, or a ref) names in the mirror, or None."""
        if not self.path.is_dir():
            return None
        done = subprocess.run(
            ["git", "--git-dir", str(self.path), "rev-parse", "-q", "--verify", f"{name}^{{commit}}"],
            env=git_env(),
            capture_output=True,
            check=False,
        )
        return done.stdout.decode().strip() if done.returncode == 0 else None

    def _fetch(self) -> None:
        """Bring every branch and tag of the remote into the mirror (made on first use). Exclusive lock."""
        if not self.path.is_dir():
            self._create()
        try:
            _run(
                [
                    "git",
                    "--git-dir",
                    str(self.path),
                    "fetch",
                    "-q",
                    "--prune",
                    "--no-tags",
                    "--no-write-fetch-head",
                    self.url,
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise CheckoutFailed(message=f"git fetch of {self.url} failed: {_stderr(exc)}") from exc

    def _create(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.new-{uuid.uuid4().hex[:8]}")
        _run(["git", "init", "-q", "--bare", str(tmp)])
        for key, value in MIRROR_CONFIG:
            _run(["git", "--git-dir", str(tmp), "config", key, value])
        tmp.rename(self.path)

    def _rebuild(self) -> None:
        if self.path.is_dir():
            old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            self.path.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        self._fetch()


# Every fetched object lands in a pack (never loose), and automatic gc runs inside the fetch, under its lock.
MIRROR_CONFIG = (
    ("transfer.unpackLimit", "1"),
    ("fetch.unpackLimit", "1"),
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    ("core.hooksPath", "/dev/null"),
)


def _link_objects(src: Path, dst: Path) -> None:
    """Hard-link the mirror's packs (and any loose object) into a workspace's object store."""
    for entry in os.scandir(src / "pack"):
        if not entry.name.startswith("tmp_") and entry.is_file(follow_symlinks=False):
            _link(entry.path, dst / "pack" / entry.name)
    for entry in os.scandir(src):
        if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
            (dst / entry.name).mkdir(exist_ok=True)
            for obj in os.scandir(entry.path):
                _link(obj.path, dst / entry.name / obj.name)


def _link(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dst)  # the workspace root spans file systems: copy instead


def _workspace_config(url: str) -> str:
    return (
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
        "\tlogallrefupdates = true\n"
        f'[remote "origin"]\n\turl = {_config_value(url)}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
    )


def _config_value(value: str) -> str:
    """A git config value, quoted so that no character of a URL changes its meaning."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(c in value for c in "\n\r\0"):
        raise CheckoutFailed(message="the clone URL holds a line break")
    return f'"{escaped}"'


def _head(dest: Path) -> str:
    """The commit a fresh workspace has checked out (HEAD is detached or names a branch just written)."""
    head = (dest / ".git" / "HEAD").read_text().strip()
    if head.startswith("ref: "):
        head = (dest / ".git" / head[5:]).read_text().strip()
    return head


def _git(workspace: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *SAFE, *args], cwd=workspace, env=git_env(), check=True, capture_output=True
    ).stdout


@dataclass(frozen=True)
class Diff:
    """What a step changed in the checkout: the patch and the paths it touches."""

    patch: str
    paths: list[str]
    truncated: bool


# -- a workspace that nothing changed, told without git ------------------------------------------------

# Linux's CLOCK_REALTIME_COARSE: the clock file timestamps come from (a tick, 4 ms at HZ=250, apart).
_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)
MAX_SNAPSHOT_ENTRIES = 5000  # past this, a walk in Python costs more than `git status` does in C
MAX_RACY_BYTES = 8 << 20  # racy content hashed at most (git status would hash those files too)
Stat = tuple[int, int, int, int]  # inode, mode, size, ctime (ns)


@dataclass(frozen=True)
class Snapshot:
    """Every path of a fresh checkout (`.git` aside) with its inode, mode, size and change time.

    A later change to a path (content, mode, a rename over it, a hard link) sets its ctime to the time
    of the change, which userspace cannot set back. The snapshot is taken at `taken` (the coarse clock,
    read after the walk), before anything else touches the workspace, so a change made later has a
    ctime >= `taken`: a path whose recorded ctime is older and still the same was not changed. Paths
    whose ctime is not older (written in `taken`'s clock tick) are "racy", as git calls them: their
    content (or link target) is hashed, and compared too.
    """

    entries: dict[str, Stat]
    racy: dict[str, bytes]
    taken: int


def _walk_stats(root: Path, limit: int) -> dict[str, tuple[Stat, str]] | None:
    """(stat, kind) of every path under `root` but the top-level `.git`; None past `limit` paths."""
    found: dict[str, tuple[Stat, str]] = {}
    stack = [("", str(root))]
    while stack:
        prefix, where = stack.pop()
        with os.scandir(where) as entries:
            for entry in entries:
                if not prefix and entry.name == ".git":
                    continue
                st = entry.stat(follow_symlinks=False)
                rel = prefix + entry.name
                kind = "d" if stat_mod.S_ISDIR(st.st_mode) else "l" if stat_mod.S_ISLNK(st.st_mode) else "f"
                found[rel] = ((st.st_ino, st.st_mode, st.st_size, st.st_ctime_ns), kind)
                if kind == "d":
                    stack.append((rel + "/", entry.path))
                if len(found) > limit:
                    return None
    return found


def _content_digest(path: Path, kind: str) -> bytes:
    if kind == "l":
        return hashlib.sha256(os.fsencode(os.readlink(path))).digest()
    if kind == "d":
        return b""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def take_snapshot(workspace: Path, *, limit: int = MAX_SNAPSHOT_ENTRIES) -> Snapshot | None:
    """The snapshot of a workspace nothing has touched since its checkout (None: too big, no clock)."""
    try:
        walked = _walk_stats(workspace, limit)
        taken = time.clock_gettime_ns(_COARSE)
    except OSError:
        return None
    if walked is None:
        return None
    racy_paths = [(rel, kind) for rel, (st, kind) in walked.items() if st[3] >= taken]
    if sum(walked[rel][0][2] for rel, _ in racy_paths) > MAX_RACY_BYTES:
        return None
    try:
        racy = {rel: _content_digest(workspace / rel, kind) for rel, kind in racy_paths}
    except OSError:
        return None
    return Snapshot({rel: st for rel, (st, _) in walked.items()}, racy, taken)


def unchanged_since(workspace: Path, snapshot: Snapshot) -> bool:
    """Whether the workspace holds exactly what the snapshot saw (False whenever in doubt)."""
    try:
        walked = _walk_stats(workspace, len(snapshot.entries))
        if walked is None or len(walked) != len(snapshot.entries):
            return False
        for rel, (st, kind) in walked.items():
            if snapshot.entries.get(rel) != st:
                return False
            if rel in snapshot.racy and _content_digest(workspace / rel, kind) != snapshot.racy[rel]:
                return False
    except OSError:
        return False
    return True


def workspace_diff(
    workspace: Path, *, max_bytes: int = MAX_DIFF_BYTES, snapshot: Snapshot | None = None
) -> Diff:
    """The binary diff of the workspace against HEAD, untracked files included (run outside the sandbox).

    With the checkout's `snapshot`, a workspace nothing changed is told so without running git (a
    change of any kind, even one git would not report, such as an ignored file, goes to git).
    """
    if snapshot is not None and unchanged_since(workspace, snapshot):
        return Diff("", [], False)
    status = _git(workspace, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    paths = sorted({e[3:].decode("utf-8", "surrogateescape") for e in status.split(b"\0") if len(e) > 3})
    if not paths:
        return Diff("", [], False)
    # Intent-to-add records untracked paths in the index without their content, so `git diff` shows them.
    _git(workspace, "add", "--intent-to-add", "--all", "--", ".")
    patch = _git(
        workspace, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames"
    )
    truncated = len(patch) > max_bytes
    text = patch[:max_bytes].decode("utf-8", "surrogateescape")
    if truncated:
        text += f"\n# diff truncated at {max_bytes} bytes of {len(patch)}\n"
    return Diff(text, paths, truncated)
