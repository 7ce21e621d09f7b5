"""The text of a run's one status comment (the marker is added by the client)."""

from __future__ import annotations

from dataclasses import dataclass, field

_ICONS = {
    "queued": "⏳",
    "running": "🏃",
    "waiting": "✋",
    "done": "✅",
    "completed": "✅",
    "failed": "❌",
    "cancelled": "🚫",
    "refused": "⛔",
}


@dataclass(frozen=True)
class StatusView:
    """What the status comment shows at one moment of a run."""

    run_id: str
    status: str
    operation: str
    trace_url: str | None = None
    summary: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    steps: list[tuple[str, str]] = field(default_factory=list)
    pull_url: str | None = None
    tokens_prompt: int | None = None
    tokens_output: int | None = None
    cost_usd: float | None = None


def render_status(view: StatusView) -> str:
    """Markdown for the status comment."""
    icon = _ICONS.get(view.status, "•")
    lines = [f"{icon} **Control Tower** · `{view.operation}` run `{view.run_id}` is **{view.status}**"]
    if view.status == "waiting":
        lines.append("")
        lines.append(
            "Waiting for approval: a maintainer can answer `/tower approve [note]` or `/tower reject [note]`."
        )
    if view.steps:
        lines += ["", "| step | status |", "|---|---|"]
        lines += [f"| {name} | {state} |" for name, state in view.steps]
    if view.error_code:
        lines += ["", f"**{view.error_code}**: {view.error_message or ''}".rstrip()]
    if view.summary:
        lines += ["", view.summary.strip()[:4000]]
    if view.pull_url:
        lines += ["", f"Pull request: {view.pull_url}"]
    if view.tokens_prompt is not None or view.tokens_output is not None:
        cost = f" · ${view.cost_usd:.4f}" if view.cost_usd is not None else ""
        lines += ["", f"Tokens: {view.tokens_prompt or 0:,} in / {view.tokens_output or 0:,} out{cost}"]
    if view.trace_url:
        lines += ["", f"Trace: {view.trace_url}"]
    return "\n".join(lines)
