"""Where on GitHub a run came from, read from the task's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GitHubContext:
    """The issue (or pull request) thread a run answers in, and who asked."""

    repo: str
    issue_number: int
    sender: str
    trigger: str
    comment_id: int | None
    installation_id: int | None

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[1]

    @classmethod
    def from_task(cls, body: dict[str, Any]) -> GitHubContext | None:
        """The context of a task that came from GitHub, or None for other sources."""
        gh = (body.get("metadata") or {}).get("github")
        if not isinstance(gh, dict) or "issue_number" not in gh or "repo" not in gh:
            return None
        return cls(
            repo=str(gh["repo"]),
            issue_number=int(gh["issue_number"]),
            sender=str(gh.get("sender", "")),
            trigger=str(gh.get("trigger", "")),
            comment_id=int(gh["comment_id"]) if gh.get("comment_id") is not None else None,
            installation_id=int(gh["installation_id"]) if gh.get("installation_id") is not None else None,
        )
