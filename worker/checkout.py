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
import struct
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from policy.errors import ControlTowerError

_SHA = re.compile(r"[0-9a-f]{7,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
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
    found = LISTINGS.refs(url, repo, (heads, tags))
    if heads in found:
        return ref, heads, found[heads]
    # An annotated tag is listed with its peeled commit as `<tag>^{}`.
    tag = found.get(tags + "^{}") or found.get(tags)
    if tag is not None:
        return None, tags, tag
    raise CheckoutFailed(message=f"git clone of {repo}@{ref} failed: no branch or tag {ref!r} on the remote")


class _Listing:
    """One `git ls-remote` of a URL: the refs it asks for, and its answer once it has run."""

    def __init__(self) -> None:
        self.patterns: dict[str, None] = {}  # ordered, deduplicated
        self.asked = 0  # checkouts it answers
        self.done = False
        self.found: dict[str, str] = {}
        self.error: CheckoutFailed | None = None


class Listings:
    """`git ls-remote` shared by the checkouts of one process: at most one runs per URL at a time, and it
    answers every checkout that asked for refs of that URL before it started.

    A checkout must start from where its ref points at the time it asks (after its run was claimed),
    never from an older answer. A listing that began after a checkout asked was made at or after that
    time, so it serves: each checkout joins the next listing not yet started (which also asks for its
    refs), and waits for it. When none of that URL is running, the first to come runs it at once, so a
    lone checkout never waits; while one runs, those that ask meanwhile wait for it to end, and one of
    them then runs the next listing for all of them. A failure of a listing fails each checkout it served.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next: dict[str, _Listing] = {}  # per URL: the listing that checkouts join, not yet started
        self._running: set[str] = set()
        self.runs = 0  # git ls-remote processes run (for tests and benches)

    def refs(self, url: str, repo: str, patterns: tuple[str, ...]) -> dict[str, str]:
        """Ref name -> commit of every ref among `patterns` (and other checkouts' refs) on the remote,
        listed after this call began."""
        with self._cond:
            listing = self._next.setdefault(url, _Listing())
            listing.patterns.update(dict.fromkeys(patterns))
            listing.asked += 1
            while not listing.done and url in self._running:
                self._cond.wait()
            if listing.done:
                return _answer(listing)
            # Nothing of this URL runs: this checkout runs its listing (no one can join it any longer).
            del self._next[url]
            self._running.add(url)
            self.runs += 1
        try:
            listing.found = _list_refs(url, repo, list(listing.patterns))
        except CheckoutFailed as exc:
            listing.error = exc
        except Exception as exc:  # git could not be started...: the checkouts it served fail alike
            listing.error = CheckoutFailed(message=f"git ls-remote of {repo} failed: {exc}")
            raise
        finally:
            with self._cond:
                listing.done = True
                self._running.discard(url)
                self._cond.notify_all()
        return _answer(listing)

    def waiting(self, url: str) -> int:
        """How many checkouts wait for the next listing of `url` (not started yet)."""
        with self._cond:
            listing = self._next.get(url)
            return listing.asked if listing is not None else 0


def _answer(listing: _Listing) -> dict[str, str]:
    if listing.error is not None:
        raise CheckoutFailed(message=listing.error.message)
    return listing.found


def _list_refs(url: str, repo: str, patterns: list[str]) -> dict[str, str]:
    try:
        out = _run(["git", "ls-remote", url, *patterns])
    except subprocess.CalledProcessError as exc:
        raise CheckoutFailed(message=f"git ls-remote of {repo} failed: {_stderr(exc)}") from exc
    found: dict[str, str] = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    return found


LISTINGS = Listings()


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
        """Link the mirror's packs into a new `.git` in `dest` and check `want` out; False if it fails.

        The work tree and index come from `TREES` when a checkout in this process wrote `want` from
        the very same packs (no git process); otherwise `git checkout` writes them, and `TREES` keeps
        what it wrote.
        """
        git_dir = dest / ".git"
        for sub in ("objects/pack", "objects/info", "refs/heads", "refs/tags"):
            os.makedirs(git_dir / sub, exist_ok=True)
        with self._locked(fcntl.LOCK_SH):
            if not self.path.is_dir():
                return False
            packs = _link_objects(self.path / "objects", git_dir / "objects")
        (git_dir / "config").write_text(_workspace_config(self.url))
        key = (str(self.path), want)
        tree = TREES.get(key, packs)
        if tree is not None:
            tree.write(dest, branch)
            return True
        (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch or 'main'}\n")
        args = ["-B", branch, want] if branch is not None else ["--detach", want]
        try:
            _run(["git", *SAFE, *_FAST, "checkout", "-q", *args, "--"], cwd=dest)
        except subprocess.CalledProcessError as exc:
            if quiet:
                return False
            raise CheckoutFailed(message=f"git checkout of {want} failed: {_stderr(exc)}") from exc
        if packs is not None and _FULL_SHA.fullmatch(want):
            TREES.keep(key, packs, dest)
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


# -- work trees written without git ----------------------------------------------------------------

MAX_TREE_ENTRIES = 2000  # paths of a work tree kept in memory (bigger ones are always checked out by git)
MAX_TREE_BYTES = 4 << 20  # content of a work tree kept in memory
MAX_TREES = 8  # work trees kept (one per mirror and commit, the least recently used dropped)
_INDEX_ENTRY = struct.Struct(
    ">10I20sH"
)  # ctime s/ns, mtime s/ns, dev, ino, mode, uid, gid, size, sha1, flags


@dataclass(frozen=True)
class _Tree:
    """What `git checkout` wrote for one commit: every path of the work tree and the index.

    Writing it again gives what git would write: the same paths, modes, link targets and bytes (git's
    filters and line-ending conversions were applied by the checkout it was read from, under the same
    config), and the index with each entry's stat data taken from the new files. The index file's
    mtime is set one second back, so every entry is "racily clean" for git (a path whose stat still
    matches is compared by content), as entries written in the same clock tick as the index are.
    """

    commit: str
    packs: PackSet
    paths: tuple[tuple[str, str, int, bytes], ...]  # relative path, kind (d/f/l), mode, content or target
    index: bytes

    def write(self, dest: Path, branch: str | None) -> None:
        """Write the work tree, the index, the branch and HEAD into a workspace whose objects are linked."""
        root = str(dest)
        for rel, kind, mode, data in self.paths:
            path = os.path.join(root, rel)
            if kind == "d":
                os.mkdir(path, mode)
            elif kind == "l":
                os.symlink(data, path)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
        git_dir = dest / ".git"
        index = git_dir / "index"
        index.write_bytes(_restat_index(self.index, root))
        back = os.stat(index).st_mtime_ns - 1_000_000_000
        os.utime(index, ns=(back, back))
        if branch is not None:
            (git_dir / "refs" / "heads" / branch).parent.mkdir(parents=True, exist_ok=True)
            (git_dir / "refs" / "heads" / branch).write_text(self.commit + "\n")
            (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
        else:
            (git_dir / "HEAD").write_text(self.commit + "\n")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _index_entries(index: bytes) -> list[tuple[int, str]] | None:
    """(offset, path) of each entry of a version 2 or 3 index (None: another version, or unreadable)."""
    if len(index) < 32 or index[:4] != b"DIRC":
        return None
    version, count = struct.unpack_from(">II", index, 4)
    if version not in (2, 3):
        return None
    found = []
    at = 12
    for _ in range(count):
        if at + _INDEX_ENTRY.size > len(index) - 20:
            return None
        flags = _INDEX_ENTRY.unpack_from(index, at)[11]
        start = at + _INDEX_ENTRY.size + (2 if flags & 0x4000 else 0)
        end = index.find(b"\0", start)
        if end < 0 or flags & 0x3000:  # no terminator, or a merge stage (a checkout writes none)
            return None
        found.append((at, os.fsdecode(index[start:end])))
        at += (end - at + 8) & ~7  # the entry and its 1-8 NULs, to a multiple of 8
    return found


def _restat_index(index: bytes, root: str) -> bytes:
    """The index with each entry's stat data read from the files under `root`, and a new checksum."""
    out = bytearray(index[:-20])
    entries = _index_entries(index)
    assert entries is not None  # only indexes that parsed are kept
    for at, rel in entries:
        st = os.lstat(os.path.join(root, rel))
        old = _INDEX_ENTRY.unpack_from(index, at)
        _INDEX_ENTRY.pack_into(
            out,
            at,
            st.st_ctime_ns // 1_000_000_000 & 0xFFFFFFFF,
            st.st_ctime_ns % 1_000_000_000,
            st.st_mtime_ns // 1_000_000_000 & 0xFFFFFFFF,
            st.st_mtime_ns % 1_000_000_000,
            st.st_dev & 0xFFFFFFFF,
            st.st_ino & 0xFFFFFFFF,
            old[6],
            st.st_uid & 0xFFFFFFFF,
            st.st_gid & 0xFFFFFFFF,
            st.st_size & 0xFFFFFFFF,
            old[10],
            old[11],
        )
    out += hashlib.sha1(out).digest()  # noqa: S324 - the index's own checksum format
    return bytes(out)


class Trees:
    """Work trees that `git checkout` wrote in this process, by mirror and commit, to write again.

    One is used only for the same commit from the very same pack files (name, inode, size, mtime):
    a fetch, repack or rebuild of the mirror changes them, and the next checkout goes to git again.
    Only small trees are kept (`MAX_TREE_ENTRIES`, `MAX_TREE_BYTES`), and only `MAX_TREES` of them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: OrderedDict[tuple[str, str], _Tree] = OrderedDict()
        self.hits = 0  # workspaces written from a kept tree (for tests and benches)

    def get(self, key: tuple[str, str], packs: PackSet | None) -> _Tree | None:
        with self._lock:
            tree = self._trees.get(key)
            if tree is None or packs is None or tree.packs != packs:
                return None
            self._trees.move_to_end(key)
            self.hits += 1
            return tree

    def keep(self, key: tuple[str, str], packs: PackSet, dest: Path) -> None:
        """Keep what the checkout just wrote in `dest` (before anything else touched it)."""
        tree = _read_tree(dest, packs)
        with self._lock:
            if tree is None:
                self._trees.pop(key, None)
                return
            self._trees[key] = tree
            self._trees.move_to_end(key)
            while len(self._trees) > MAX_TREES:
                self._trees.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._trees.clear()


def _read_tree(dest: Path, packs: PackSet) -> _Tree | None:
    """The work tree and index of a fresh checkout, or None when too big or not plainly readable."""
    try:
        index = (dest / ".git" / "index").read_bytes()
        commit = _head(dest)
        if _index_entries(index) is None or not _FULL_SHA.fullmatch(commit):
            return None
        paths: list[tuple[str, str, int, bytes]] = []
        total = 0
        stack = [("", str(dest))]
        while stack:
            prefix, where = stack.pop()
            with os.scandir(where) as entries:
                listed = sorted(entries, key=lambda e: e.name)
            for entry in listed:
                if not prefix and entry.name == ".git":
                    continue
                st = entry.stat(follow_symlinks=False)
                rel = prefix + entry.name
                if stat_mod.S_ISDIR(st.st_mode):
                    paths.append((rel, "d", stat_mod.S_IMODE(st.st_mode), b""))
                    stack.append((rel + "/", entry.path))
                elif stat_mod.S_ISLNK(st.st_mode):
                    paths.append((rel, "l", 0, os.fsencode(os.readlink(entry.path))))
                elif stat_mod.S_ISREG(st.st_mode):
                    with open(entry.path, "rb") as fh:
                        data = fh.read()
                    total += len(data)
                    paths.append((rel, "f", stat_mod.S_IMODE(st.st_mode), data))
                else:
                    return None
                if len(paths) > MAX_TREE_ENTRIES or total > MAX_TREE_BYTES:
                    return None
    except OSError:
        return None
    # Parents before children: a stack pops depth first, but each directory is listed before its contents.
    return _Tree(commit, packs, tuple(paths), index)


TREES = Trees()


# Every fetched object lands in a pack (never loose), and automatic gc runs inside the fetch, under its lock.
MIRROR_CONFIG = (
    ("transfer.unpackLimit", "1"),
    ("fetch.unpackLimit", "1"),
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    ("core.hooksPath", "/dev/null"),
)


PackSet = frozenset[tuple[str, int, int, int]]  # name, inode, size, mtime (ns) of each pack file


def _link_objects(src: Path, dst: Path) -> PackSet | None:
    """Hard-link the mirror's packs (and any loose object) into a workspace's object store; the packs
    linked (None when there were loose objects or the files were copied: nothing to compare later)."""
    packs: set[tuple[str, int, int, int]] = set()
    comparable = True
    for entry in os.scandir(src / "pack"):
        if not entry.name.startswith("tmp_") and entry.is_file(follow_symlinks=False):
            target = dst / "pack" / entry.name
            if _link(entry.path, target):
                st = os.lstat(target)  # the link's inode is the mirror's file: what was linked
                packs.add((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
            else:
                comparable = False
    for entry in os.scandir(src):
        if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
            comparable = False
            (dst / entry.name).mkdir(exist_ok=True)
            for obj in os.scandir(entry.path):
                _link(obj.path, dst / entry.name / obj.name)
    return frozenset(packs) if comparable else None


def _link(src: str, dst: Path) -> bool:
    """Hard-link `src` at `dst` (True), or copy it where the two are on different file systems."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dst)  # the workspace root spans file systems: copy instead
        return False
    return True


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
