"""Bare git repositories on disk standing in for GitHub remotes (GIT_BASE_URL=file://<root>)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git


def run_git(git_dir: Path, *args: str) -> bytes | None:
    """Run git against a bare repository; stdout, or None when git fails."""
    proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def make_bare_repo(
    root: Path, full_name: str, files: dict[str, bytes | str], *, branch: str = "main"
) -> Path:
    """Create `<root>/<owner>/<name>.git`, a bare repository with one commit of `files` on `branch`.

    With GIT_BASE_URL=file://<root> the clone URL of `owner/name` is `<GIT_BASE_URL>/owner/name.git`.
    """
    bare = root / f"{full_name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git.Repo.init(bare, bare=True, initial_branch=branch)
    work = root / ".work" / full_name
    work.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(work, initial_branch=branch)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test Author")
        config.set_value("user", "email", "author@example.com")
        config.set_value("core", "hooksPath", "/dev/null")
    for rel, content in files.items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    repo.git.add("--all")
    repo.git.commit("-m", "initial commit", "--allow-empty")
    repo.git.push(str(bare), f"{branch}:refs/heads/{branch}")
    repo.close()
    return bare
