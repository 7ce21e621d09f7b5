"""Slash-command grammar: `/tower <subcommand> ...` lines outside code, quotes and HTML comments."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CommandKind = Literal["run", "status", "cancel", "approve", "reject", "retry"]
CommandErrorCode = Literal["UNKNOWN_COMMAND", "MISSING_OPERATION", "INVALID_OPERATION_NAME"]

_KINDS: tuple[CommandKind, ...] = ("run", "status", "cancel", "approve", "reject", "retry")
_PREFIX = "/tower"
_OPERATION = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# A fence may sit inside a list item ("- ```"), so list markers are skipped before looking for it.
_LIST_MARKER = re.compile(r"^(?:[-*+]|\d{1,9}[.)])\s+")
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})(.*)$")
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True)
class Command:
    """One recognised command; `line` is 1-based in the comment body."""

    kind: CommandKind
    operation: str | None
    text: str
    line: int


@dataclass(frozen=True)
class CommandError:
    """A `/tower` line that is not a valid command; the bot answers it with help."""

    code: CommandErrorCode
    subcommand: str
    line: int
    message: str


ParseResult = Command | CommandError


def label_operation(label: str, prefix: str = "tower:") -> str | None:
    """The operation named by a trigger label such as `tower:docs`, or None for any other label."""
    name = label.strip()
    if not prefix or not name.lower().startswith(prefix.lower()):
        return None
    operation = name[len(prefix) :].strip().lower()
    return operation if _OPERATION.fullmatch(operation) else None


def parse_commands(body: str) -> list[ParseResult]:
    """Every `/tower` line of a comment that is outside fences, inline code, quotes and HTML comments."""
    lines = body.splitlines()
    inline_code = _lines_starting_in_code_span(lines)
    results: list[ParseResult] = []
    fence: tuple[str, int] | None = None  # (fence char, run length) while inside a fenced block
    in_html_comment = False
    in_quote = False  # a quote swallows the lazy continuation lines of its paragraph
    for index, raw in enumerate(lines):
        stripped = raw.strip()
        if fence is not None:
            if _closes_fence(stripped, fence):
                fence = None
            continue
        if in_html_comment:
            in_html_comment = "-->" not in raw
            continue
        if not stripped:
            in_quote = False
            continue
        if stripped.startswith(">"):
            in_quote = True
            continue
        opened = _opens_fence(stripped)
        if opened is not None:
            fence, in_quote = opened, False  # a fence interrupts a quoted paragraph
            continue
        if stripped.startswith("<!--"):
            in_html_comment = "-->" not in stripped[4:]
            continue
        if "<!--" in raw and "-->" not in raw.split("<!--")[-1]:
            in_html_comment = True
        if in_quote:
            continue
        if index in inline_code:
            continue
        parsed = _parse_line(stripped, index + 1)
        if parsed is not None:
            results.append(parsed)
    return results


def commands_only(body: str) -> list[Command]:
    """The valid commands of a comment body, in order."""
    return [item for item in parse_commands(body) if isinstance(item, Command)]


def _opens_fence(stripped: str) -> tuple[str, int] | None:
    candidate = _LIST_MARKER.sub("", stripped, count=1)
    match = _FENCE_OPEN.match(candidate)
    if match is None:
        return None
    run, info = match.group(1), match.group(2)
    if run[0] == "`" and "`" in info:
        return None  # CommonMark: a backtick fence's info string cannot contain backticks
    return run[0], len(run)


def _closes_fence(stripped: str, fence: tuple[str, int]) -> bool:
    char, length = fence
    run = len(stripped) - len(stripped.lstrip(char))
    return run >= length and not stripped[run:].strip()


def _lines_starting_in_code_span(lines: list[str]) -> set[int]:
    """Indexes of lines whose start lies inside a multi-line inline code span of their paragraph."""
    inside: set[int] = set()
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        end = start
        while end < len(lines) and lines[end].strip():
            end += 1
        offsets: list[int] = []
        text = ""
        for line in lines[start:end]:
            offsets.append(len(text))
            text += line + "\n"
        for span_start, span_end in _code_spans(text):
            for i, offset in enumerate(offsets):
                if span_start < offset < span_end:
                    inside.add(start + i)
        start = end
    return inside


def _code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each inline code span: a backtick run closed by the next run of equal length."""
    runs = [(m.start(), len(m.group())) for m in _BACKTICKS.finditer(text)]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(runs):
        pos, length = runs[i]
        closing = next((j for j in range(i + 1, len(runs)) if runs[j][1] == length), None)
        if closing is None:
            i += 1
            continue
        spans.append((pos, runs[closing][0] + length))
        i = closing + 1
    return spans


def _parse_line(stripped: str, line: int) -> ParseResult | None:
    if not stripped.lower().startswith(_PREFIX):
        return None
    rest = stripped[len(_PREFIX) :]
    if rest and not rest[0].isspace():
        return None  # "/towering" is not a command
    words = rest.split(None, 1)
    if not words:
        return CommandError("UNKNOWN_COMMAND", "", line, "a subcommand is required after /tower")
    sub = words[0].lower()
    tail = words[1].strip() if len(words) > 1 else ""
    if sub not in _KINDS:
        return CommandError("UNKNOWN_COMMAND", sub, line, f"unknown subcommand {sub!r}")
    kind: CommandKind = _KINDS[_KINDS.index(sub)]
    if kind != "run":
        return Command(kind, None, tail, line)
    parts = tail.split(None, 1)
    if not parts:
        return CommandError("MISSING_OPERATION", sub, line, "/tower run needs an operation")
    operation = parts[0].lower()
    if not _OPERATION.fullmatch(operation):
        return CommandError("INVALID_OPERATION_NAME", sub, line, f"{parts[0]!r} is not an operation name")
    return Command("run", operation, parts[1].strip() if len(parts) > 1 else "", line)
