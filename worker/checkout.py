"""Per-run workspaces: a fresh gitpython clone at the task's ref, and the diff of what a run changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import git

from policy.errors import ControlTowerError

_SHA = re.compile(r"[0-9a-f]{7,40}")
_BAD_REF = re.compile(r"(^-)|\.\.|[\x00-\x20~^:?*\[\\]|@\{|(\.lock$)|(/$)")
# Hooks and external drivers must never run on content a sandboxed step wrote.
SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "diff.external=")
MAX_DIFF_BYTES = 10 << 20
# A workspace lives for one run: fsync buys nothing and costs a third of the clone.
_FAST = ("--config=core.fsync=none",)


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


def clone_url(base_url: str, repo: str) -> str:
    """`{GIT_BASE_URL}/{owner}/{repo}.git`."""
    owner, name = repo.split("/", 1)
    if name in (".", "..") or owner in (".", ".."):
        raise CheckoutFailed(message=f"not a repository name: {repo!r}", field="target.repo")
    return f"{base_url.rstrip('/')}/{owner}/{name}.git"


def git_env() -> dict[str, str]:
    """The environment git runs with on the worker: no prompts, no user or system config."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
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


def clone(base_url: str, repo: str, ref: str, dest: Path) -> Checkout:
    """A fresh shallow clone of `repo` at `ref` (branch, tag or commit) into `dest`."""
    if _BAD_REF.search(ref):
        raise CheckoutFailed(message=f"not a usable ref: {ref!r}", field="target.ref")
    url = clone_url(base_url, repo)
    remove_workspace(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = git_env()
    try:
        if _SHA.fullmatch(ref):
            repo_obj = git.Repo.clone_from(
                url, dest, env=env, multi_options=["--no-checkout", "-q", *_FAST], allow_unsafe_options=True
            )
            repo_obj.git.checkout("--detach", ref, "--")
        else:
            repo_obj = git.Repo.clone_from(
                url,
                dest,
                env=env,
                multi_options=["--depth=1", f"--branch={ref}", "--no-tags", "--single-branch", "-q", *_FAST],
                allow_unsafe_options=True,  # only for our own --config above; the ref was checked
            )
        commit = repo_obj.head.commit.hexsha
        repo_obj.close()
    except git.GitCommandError as exc:
        remove_workspace(dest)
        stderr = str(exc.stderr or "").strip()[-500:]
        raise CheckoutFailed(message=f"git clone of {repo}@{ref} failed: {stderr}") from exc
    return Checkout(path=dest, url=url, ref=ref, commit=commit)


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


def workspace_diff(workspace: Path, *, max_bytes: int = MAX_DIFF_BYTES) -> Diff:
    """The binary diff of the workspace against HEAD, untracked files included (run outside the sandbox)."""
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
