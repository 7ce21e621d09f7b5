"""Workspace file tools for the agent; every path is confined to the workspace."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from policy.errors import ControlTowerError

MAX_READ_BYTES = 1_000_000
MAX_SEARCH_MATCHES = 200
MAX_LIST_ENTRIES = 1000


class ToolError(ControlTowerError):
    """A tool refused or failed; the message goes back to the model as an error tool_result."""

    http_status = 400


@dataclass(frozen=True)
class ToolRunResult:
    """What a bash command did (the worker's sandboxed runner returns this)."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


BashRunner = Callable[[str], ToolRunResult]


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Workspace:
    """File operations inside one directory; refuses escapes and protected paths."""

    def __init__(self, root: Path, *, allow_workflow_changes: bool = False) -> None:
        self.root = root.resolve(strict=True)
        self.allow_workflow_changes = allow_workflow_changes

    def resolve(self, path: str, *, for_write: bool = False) -> Path:
        """The real path inside the workspace, or ToolError PATH_OUTSIDE_WORKSPACE / PATH_NOT_ALLOWED."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ToolError("INVALID_TOOL_INPUT", "path must be a non-empty string")
        candidate = Path(path) if os.path.isabs(path) else self.root / path
        # resolve() follows every symlink on the way, so a link pointing out of the tree is caught here.
        real = candidate.resolve(strict=False)
        if real != self.root and not real.is_relative_to(self.root):
            raise ToolError("PATH_OUTSIDE_WORKSPACE", f"{path!r} resolves outside the workspace")
        if for_write:
            self._check_writable(path, real)
        return real

    def _check_writable(self, path: str, real: Path) -> None:
        rel = real.relative_to(self.root).as_posix()
        # Check both the lexical path and the resolved one: a symlink must not smuggle a write into .git.
        lexical = PurePosixPath(
            os.path.normpath(path if not os.path.isabs(path) else os.path.relpath(path, self.root))
        )
        for parts in (PurePosixPath(rel).parts, lexical.parts):
            # Any .git component: the repository's own and nested ones (a planted sub/.git would make an
            # embedded repository with its own hooks and config).
            if ".git" in parts:
                raise ToolError(
                    "PATH_NOT_ALLOWED", f"{path!r} is inside a .git/ directory, which is protected"
                )
            if not self.allow_workflow_changes and tuple(parts[:2]) == (".github", "workflows"):
                raise ToolError(
                    "PATH_NOT_ALLOWED", f"{path!r} is under .github/workflows/, which policy refuses"
                )
        if real == self.root:
            raise ToolError("PATH_NOT_ALLOWED", "cannot write the workspace root")

    def relative(self, real: Path) -> str:
        """A workspace-relative display path."""
        rel = real.relative_to(self.root).as_posix()
        return rel or "."

    def read_file(self, path: str, offset: int = 0, limit: int | None = None) -> str:
        """The file's text, optionally a line window (offset is 0-based)."""
        real = self.resolve(path)
        if not real.is_file():
            raise ToolError("FILE_NOT_FOUND", f"{path!r} is not a file")
        if real.stat().st_size > MAX_READ_BYTES:
            raise ToolError("FILE_TOO_LARGE", f"{path!r} is larger than {MAX_READ_BYTES} bytes")
        text = real.read_text(encoding="utf-8", errors="replace")
        if offset or limit is not None:
            lines = text.splitlines(keepends=True)
            end = None if limit is None else offset + limit
            text = "".join(lines[offset:end])
        return text

    def write_file(self, path: str, content: str) -> str:
        """Create or replace a file, making parent directories."""
        real = self.resolve(path, for_write=True)
        if real.is_dir():
            raise ToolError("NOT_A_FILE", f"{path!r} is a directory")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text(content, encoding="utf-8")
        return f"wrote {len(content.encode())} bytes to {self.relative(real)}"

    def edit_file(self, path: str, old_str: str, new_str: str) -> str:
        """Replace exactly one occurrence of old_str; zero or several occurrences are errors."""
        real = self.resolve(path, for_write=True)
        if not real.is_file():
            raise ToolError("FILE_NOT_FOUND", f"{path!r} is not a file")
        if not old_str:
            raise ToolError("INVALID_TOOL_INPUT", "old_str must not be empty")
        text = real.read_text(encoding="utf-8")
        count = text.count(old_str)
        if count == 0:
            raise ToolError("EDIT_NO_MATCH", f"old_str not found in {path!r}")
        if count > 1:
            raise ToolError("EDIT_AMBIGUOUS", f"old_str occurs {count} times in {path!r}; make it unique")
        real.write_text(text.replace(old_str, new_str, 1), encoding="utf-8")
        return f"edited {self.relative(real)}"

    def list_dir(self, path: str = ".") -> str:
        """Entries of a directory, one a line, directories with a trailing slash."""
        real = self.resolve(path)
        if not real.is_dir():
            raise ToolError("FILE_NOT_FOUND", f"{path!r} is not a directory")
        entries = sorted(real.iterdir(), key=lambda p: p.name)
        lines = [
            p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in entries[:MAX_LIST_ENTRIES]
        ]
        if len(entries) > MAX_LIST_ENTRIES:
            lines.append(f"... {len(entries) - MAX_LIST_ENTRIES} more entries")
        return "\n".join(lines) if lines else "(empty directory)"

    def search(self, pattern: str, path: str = ".", regex: bool = False) -> str:
        """`path:line:text` for each matching line under path (no shell; .git skipped)."""
        real = self.resolve(path)
        try:
            matcher = re.compile(pattern if regex else re.escape(pattern))
        except re.error as exc:
            raise ToolError("INVALID_TOOL_INPUT", f"bad regular expression: {exc}") from exc
        files = [real] if real.is_file() else self._walk(real)
        hits: list[str] = []
        for file in files:
            for number, line in enumerate(self._lines(file), start=1):
                if matcher.search(line):
                    hits.append(f"{self.relative(file)}:{number}:{line.rstrip()}")
                    if len(hits) >= MAX_SEARCH_MATCHES:
                        hits.append(f"... stopped after {MAX_SEARCH_MATCHES} matches")
                        return "\n".join(hits)
        return "\n".join(hits) if hits else "no matches"

    def _walk(self, top: Path) -> list[Path]:
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if file.is_symlink():
                    target = file.resolve()
                    if not target.is_relative_to(self.root):
                        continue  # never read through a link that leaves the workspace
                found.append(file)
        return found

    @staticmethod
    def _lines(file: Path) -> list[str]:
        try:
            if file.stat().st_size > MAX_READ_BYTES:
                return []
            data = file.read_bytes()
        except OSError:
            return []
        if b"\x00" in data[:8192]:
            return []  # binary
        return data.decode("utf-8", errors="replace").splitlines()

    def git_diff(self) -> str:
        """`git status --short` and `git diff` of the workspace (read-only)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_OPTIONAL_LOCKS": "0",
            "HOME": str(self.root),
        }
        # --no-optional-locks: status must not refresh (write) the index; .git may even be read-only.
        base = [
            "git",
            "--no-optional-locks",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            f"safe.directory={self.root}",
            "-C",
            str(self.root),
        ]
        try:
            status = subprocess.run(
                [*base, "status", "--short"], capture_output=True, text=True, env=env, timeout=30, check=False
            )
            diff = subprocess.run(
                [*base, "diff", "--no-color", "--no-ext-diff"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError("GIT_FAILED", f"git failed: {exc}") from exc
        if status.returncode != 0:
            raise ToolError("GIT_FAILED", status.stderr.strip() or "not a git repository")
        return f"$ git status --short\n{status.stdout}\n$ git diff\n{diff.stdout}"


def unsandboxed_bash_runner(root: Path, *, timeout_s: float = 120.0) -> BashRunner:
    """A plain-subprocess bash runner for development and tests only: NOT a sandbox."""

    def run(command: str) -> ToolRunResult:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "LANG": "C.UTF-8"},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return ToolRunResult(124, _text(exc.stdout), _text(exc.stderr), timed_out=True)
        return ToolRunResult(done.returncode, done.stdout, done.stderr)

    return run
