"""The agent's tool catalogue and its dispatch onto the workspace and the bash runner."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from worker.ai.providers import ToolSpec
from worker.ai.tools import BashRunner, ToolError, Workspace


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_PATH = {"type": "string", "description": "Path relative to the repository root."}

TOOL_SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "read_file",
            "Read a text file. Optional offset (0-based line) and limit (number of lines).",
            _obj(
                {
                    "path": _PATH,
                    "offset": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1},
                },
                ["path"],
            ),
        ),
        ToolSpec(
            "write_file",
            "Create or overwrite a file with the given content.",
            _obj({"path": _PATH, "content": {"type": "string"}}, ["path", "content"]),
        ),
        ToolSpec(
            "edit_file",
            "Replace exactly one occurrence of old_str with new_str in a file. "
            "Fails if old_str occurs 0 or 2+ times.",
            _obj(
                {"path": _PATH, "old_str": {"type": "string", "minLength": 1}, "new_str": {"type": "string"}},
                ["path", "old_str", "new_str"],
            ),
        ),
        ToolSpec(
            "list_dir",
            "List a directory; directories end with '/'.",
            _obj({"path": _PATH}, []),
        ),
        ToolSpec(
            "search",
            "Search files for a string (or a Python regular expression when regex is true); "
            "prints path:line:text.",
            _obj(
                {"pattern": {"type": "string", "minLength": 1}, "path": _PATH, "regex": {"type": "boolean"}},
                ["pattern"],
            ),
        ),
        ToolSpec(
            "bash",
            "Run a shell command in the sandbox at the repository root (no network, no credentials).",
            _obj({"command": {"type": "string", "minLength": 1}}, ["command"]),
        ),
        ToolSpec("git_diff", "Show git status and the diff of the working tree.", _obj({}, [])),
        ToolSpec(
            "finish",
            "End the task with a Markdown summary of what was done.",
            _obj({"summary": {"type": "string", "minLength": 1}}, ["summary"]),
        ),
    )
}

ALL_TOOLS: tuple[str, ...] = tuple(TOOL_SPECS)
READ_ONLY_TOOLS: tuple[str, ...] = ("read_file", "list_dir", "search", "git_diff", "finish")
REFUSAL_CODES = frozenset({"PATH_OUTSIDE_WORKSPACE", "PATH_NOT_ALLOWED"})


@dataclass
class ToolOutcome:
    """What one tool call produced, before truncation for the model."""

    output: str
    is_error: bool
    code: str | None = None
    exit_code: int | None = None


class Toolbox:
    """The enabled tools, bound to one workspace and one bash runner."""

    def __init__(self, workspace: Workspace, enabled: Iterable[str], bash_runner: BashRunner | None) -> None:
        names = list(dict.fromkeys(enabled))
        unknown = [n for n in names if n not in TOOL_SPECS]
        if unknown:
            raise ToolError("AI_CONFIG_INVALID", f"unknown tools: {', '.join(unknown)}")
        if "finish" not in names:
            names.append("finish")
        if "bash" in names and bash_runner is None:
            raise ToolError("AI_CONFIG_INVALID", "the bash tool needs a bash_runner")
        self.workspace = workspace
        self.names = tuple(names)
        self.specs = tuple(TOOL_SPECS[n] for n in names)
        self._bash = bash_runner
        self._validators = {n: Draft202012Validator(TOOL_SPECS[n].input_schema) for n in names}

    def run(self, name: str, tool_input: Any) -> ToolOutcome:
        """Run one tool; refusals and failures come back as error outcomes, never as exceptions."""
        try:
            if name not in self._validators:
                raise ToolError("TOOL_NOT_AVAILABLE", f"tool {name!r} is not available in this step")
            errors = [e.message for e in self._validators[name].iter_errors(tool_input)]
            if errors:
                raise ToolError("INVALID_TOOL_INPUT", "; ".join(errors[:5]))
            return self._dispatch(name, tool_input)
        except ToolError as exc:
            return ToolOutcome(f"{exc.code}: {exc.message}", True, exc.code)
        except (OSError, UnicodeDecodeError) as exc:
            return ToolOutcome(f"TOOL_FAILED: {type(exc).__name__}: {exc}", True, "TOOL_FAILED")

    def _dispatch(self, name: str, args: Mapping[str, Any]) -> ToolOutcome:
        ws = self.workspace
        if name == "read_file":
            return ToolOutcome(ws.read_file(args["path"], args.get("offset", 0), args.get("limit")), False)
        if name == "write_file":
            return ToolOutcome(ws.write_file(args["path"], args["content"]), False)
        if name == "edit_file":
            return ToolOutcome(ws.edit_file(args["path"], args["old_str"], args["new_str"]), False)
        if name == "list_dir":
            return ToolOutcome(ws.list_dir(args.get("path", ".")), False)
        if name == "search":
            return ToolOutcome(
                ws.search(args["pattern"], args.get("path", "."), bool(args.get("regex"))), False
            )
        if name == "git_diff":
            return ToolOutcome(ws.git_diff(), False)
        if name == "bash" and self._bash is not None:
            result = self._bash(args["command"])
            text = (
                f"exit_code: {result.exit_code}{' (timed out)' if result.timed_out else ''}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
            )
            return ToolOutcome(
                text, result.exit_code != 0, "TIMEOUT" if result.timed_out else None, result.exit_code
            )
        if name == "finish":
            return ToolOutcome(str(args["summary"]), False)
        raise ToolError("TOOL_NOT_AVAILABLE", f"tool {name!r} has no implementation")


def truncate_for_model(text: str, limit: int) -> tuple[str, bool]:
    """Head and tail of a long output with a note saying how much was left out."""
    if len(text) <= limit:
        return text, False
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    note = (
        f"\n\n[output truncated: {omitted} of {len(text)} characters omitted from the middle; "
        "the full output is kept in the run's trace]\n\n"
    )
    return text[:head] + note + (text[-tail:] if tail else ""), True
