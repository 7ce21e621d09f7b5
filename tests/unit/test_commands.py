"""The `/tower` comment grammar: what is a command, and what (fences, quotes, code) never is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_tower.github.commands import (
    Command,
    CommandError,
    commands_only,
    label_operation,
    parse_commands,
)


def test_each_subcommand_parses() -> None:
    body = "\n".join(
        [
            "/tower run docs update the README",
            "/tower status",
            "/tower cancel",
            "/tower approve looks good",
            "/tower reject   not now ",
            "/tower retry",
        ]
    )
    assert parse_commands(body) == [
        Command("run", "docs", "update the README", 1),
        Command("status", None, "", 2),
        Command("cancel", None, "", 3),
        Command("approve", None, "looks good", 4),
        Command("reject", None, "not now", 5),
        Command("retry", None, "", 6),
    ]


def test_run_ops_keeps_the_free_text_verbatim() -> None:
    [cmd] = parse_commands("please\n  /tower run ops ruff format --line-length 110 `src/`\nthanks")
    assert cmd == Command("run", "ops", "ruff format --line-length 110 `src/`", 2)


def test_leading_whitespace_and_case_are_tolerated() -> None:
    assert commands_only("\t  /Tower STATUS") == [Command("status", None, "", 1)]
    assert commands_only("/tower run Code_Change fix it") == [Command("run", "code_change", "fix it", 1)]


@pytest.mark.parametrize(
    "body",
    [
        "/towering status",
        "see /tower status",
        "- /tower status",
        "`/tower status`",
        "/tower/status",
        "",
    ],
)
def test_lines_that_are_not_commands(body: str) -> None:
    assert parse_commands(body) == []


def test_unknown_and_incomplete_commands_are_typed_errors() -> None:
    results = parse_commands("/tower deploy prod\n/tower\n/tower run\n/tower run ../etc x")
    assert [type(r) for r in results] == [CommandError] * 4
    codes = [(r.code, r.subcommand, r.line) for r in results if isinstance(r, CommandError)]
    assert codes == [
        ("UNKNOWN_COMMAND", "deploy", 1),
        ("UNKNOWN_COMMAND", "", 2),
        ("MISSING_OPERATION", "run", 3),
        ("INVALID_OPERATION_NAME", "run", 4),
    ]


@pytest.mark.parametrize(
    "body",
    [
        "```\n/tower run ops rm -rf /\n```",
        "~~~\n/tower approve\n~~~",
        "```bash\n/tower approve\n```",
        "   ```\n/tower approve\n   ```",
        "- ```\n  /tower approve\n  ```",
        "````\n```\n/tower approve\n````",
        "~~~~\n~~~\n/tower approve\n~~~~",
        "```\nunterminated fence\n/tower approve",
        "> /tower approve",
        ">> /tower approve",
        "> > /tower approve",
        "  > /tower approve",
        "> quoted paragraph\n/tower approve",
        "> quoted paragraph\n```\n\n/tower approve\n```",
        "> quoted paragraph\n<!--\n\n/tower approve\n-->",
        "Use `x\n/tower approve` carefully",
        "Use ``a ` b\n/tower approve`` here",
        "<!--\n/tower approve\n-->",
        "<!-- /tower approve -->",
        "text <!-- hidden\n/tower approve\n-->",
    ],
)
def test_commands_in_code_quotes_and_comments_are_ignored(body: str) -> None:
    assert parse_commands(body) == []


def test_commands_after_closed_blocks_count_again() -> None:
    body = "```\n/tower cancel\n```\n> /tower reject\n\n/tower approve ok\n<!-- x -->\n/tower status"
    assert commands_only(body) == [Command("approve", None, "ok", 6), Command("status", None, "", 8)]


def test_a_shorter_or_different_fence_does_not_close() -> None:
    body = "````\n```\n/tower cancel\n~~~~\n/tower retry\n````\n/tower status"
    assert commands_only(body) == [Command("status", None, "", 7)]


def test_unmatched_backtick_does_not_hide_the_next_line() -> None:
    assert commands_only("a stray ` backtick\n/tower status") == [Command("status", None, "", 2)]


def test_crlf_bodies() -> None:
    assert commands_only("hi\r\n/tower retry\r\n") == [Command("retry", None, "", 2)]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("tower:docs", "docs"),
        ("tower:code_change", "code_change"),
        (" Tower:Ops ", "ops"),
        ("tower:", None),
        ("tower:two words", None),
        ("bug", None),
        ("towerdocs", None),
    ],
)
def test_label_operation(label: str, expected: str | None) -> None:
    assert label_operation(label) == expected


def test_label_operation_custom_prefix() -> None:
    assert label_operation("bot/analysis", prefix="bot/") == "analysis"
    assert label_operation("tower:analysis", prefix="bot/") is None


@settings(max_examples=400)
@given(st.text())
def test_parse_never_raises(body: str) -> None:
    for result in parse_commands(body):
        assert isinstance(result, Command | CommandError)


_NEWLINES = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_line = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=_NEWLINES))
_cmd_line = st.sampled_from(["/tower approve", "/tower run ops x", "  /tower retry", "/tower"])
_lines = st.lists(st.one_of(_line, _cmd_line), min_size=1, max_size=12)


@settings(max_examples=300)
@given(_lines)
def test_fully_quoted_text_never_yields_commands(lines: list[str]) -> None:
    body = "\n".join("> " + line for line in lines)
    assert parse_commands(body) == []


@settings(max_examples=300)
@given(_lines, st.sampled_from(["```", "~~~~", "````"]), st.lists(_line, max_size=4))
def test_fenced_text_never_yields_commands(lines: list[str], fence: str, before: list[str]) -> None:
    # The fenced lines must not close the fence; the text before it must not open one.
    inner = [line for line in lines if not line.strip().startswith(fence[0] * 3)]
    prefix = [line.replace("`", "'").replace("~", "-").replace("<!--", "") for line in before]
    body = "\n".join([*prefix, "", fence, *inner, fence, "/tower status"])
    fence_first = len(prefix) + 2
    fence_last = fence_first + len(inner) + 1
    results = parse_commands(body)
    assert all(not (fence_first <= r.line <= fence_last) for r in results)
    assert results[-1] == Command("status", None, "", fence_last + 1)
