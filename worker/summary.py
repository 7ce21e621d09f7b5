"""summary.md: a short human account of one run attempt."""

from __future__ import annotations

from typing import Any


def render_summary(
    *,
    run_id: str,
    task: dict[str, Any],
    status: str,
    attempt: int,
    steps: list[dict[str, Any]],
    error_code: str | None,
    error_message: str | None,
    sandbox: dict[str, Any],
) -> str:
    """Markdown: what was asked, how each step went, how the run ended."""
    target = task.get("target") or {}
    lines = [
        f"# Run {run_id}",
        "",
        f"- status: **{status}** (attempt {attempt})",
        f"- operation: {task.get('operation')} on {target.get('repo')}@{target.get('ref')}",
        f"- objective: {str(task.get('objective', '')).splitlines()[0] if task.get('objective') else ''}",
        f"- sandbox: {sandbox.get('tier')}",
    ]
    if error_code:
        lines.append(f"- error: `{error_code}` {error_message or ''}".rstrip())
    lines += ["", "| # | step | type | status | error |", "|---|---|---|---|---|"]
    lines += [
        f"| {s['n']} | {s['step_id']} | {s['type']} | {s['status']} | {s.get('error_code') or ''} |"
        for s in steps
    ]
    return "\n".join(lines) + "\n"
