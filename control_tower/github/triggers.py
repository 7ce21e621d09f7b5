"""From a verified webhook payload to work: a V1 task through intake, or a command for the worker.

Pure mapping lives in `plan_delivery`; `apply_plan` does the writes. No GitHub API call happens here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from control_tower.github.commands import Command, CommandError, label_operation, parse_commands

TriggerKind = Literal["label", "comment"]
_FENCED = re.compile(r"^(?:```|~~~)[ \t]*(?:sh|bash|shell|console)?[ \t]*\n(.*?)\n(?:```|~~~)", re.S | re.M)


@dataclass(frozen=True)
class RunRequest:
    """A request to run an operation, with the key that makes one intent run once."""

    semantic_key: str
    operation: str
    objective: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    sender: str
    repo: str
    ref: str


@dataclass(frozen=True)
class CommandRequest:
    """A command for the worker (status, cancel, approve, reject, retry) or a reply it owes."""

    semantic_key: str
    kind: str
    text: str
    comment_id: int | None


@dataclass(frozen=True)
class Plan:
    """What one delivery asks for; `ignored` says why when it asks for nothing."""

    repo: str | None = None
    issue_number: int | None = None
    sender: str | None = None
    installation_id: int | None = None
    runs: list[RunRequest] = field(default_factory=list)
    commands: list[CommandRequest] = field(default_factory=list)
    ignored: str | None = None


def is_bot(user: dict[str, Any] | None, bot_login: str) -> bool:
    """Bots, including this app, never trigger anything."""
    if not user:
        return True
    login = str(user.get("login", ""))
    return user.get("type") == "Bot" or login.endswith("[bot]") or login.lower() == bot_login.lower()


def ops_command_from_body(body: str | None) -> str | None:
    """The first fenced shell block of an issue body: the command of an `ops` task started by a label."""
    match = _FENCED.search(body or "")
    return match.group(1).strip() if match else None


def plan_delivery(event: str, payload: dict[str, Any], *, label_prefix: str, bot_login: str) -> Plan:
    """Decide what a delivery means, without side effects."""
    repo_obj = payload.get("repository") or {}
    issue = payload.get("issue") or {}
    sender = payload.get("sender") or {}
    base: dict[str, Any] = {
        "repo": str(repo_obj.get("full_name", "")).lower() or None,
        "issue_number": issue.get("number"),
        "sender": sender.get("login"),
        "installation_id": (payload.get("installation") or {}).get("id"),
    }
    if event == "issues" and payload.get("action") == "labeled":
        return Plan(**base, **_label_plan(payload, label_prefix=label_prefix, bot_login=bot_login))
    if event == "issue_comment":
        return Plan(**base, **_comment_plan(payload, bot_login=bot_login))
    return Plan(**base, ignored=f"event {event}.{payload.get('action')} triggers nothing")


def _context(payload: dict[str, Any], trigger: TriggerKind, **extra: Any) -> dict[str, Any]:
    issue = payload["issue"]
    return {
        "github": {
            "trigger": trigger,
            "repo": payload["repository"]["full_name"].lower(),
            "issue_number": issue["number"],
            "issue_url": issue.get("html_url"),
            "sender": payload["sender"]["login"],
            "installation_id": (payload.get("installation") or {}).get("id"),
            "is_pull_request": "pull_request" in issue,
            **extra,
        }
    }


def _issue_inputs(payload: dict[str, Any]) -> dict[str, Any]:
    issue = payload["issue"]
    return {
        "issue": {
            "number": issue["number"],
            "title": issue.get("title") or "",
            "body": issue.get("body") or "",
        }
    }


def _label_plan(payload: dict[str, Any], *, label_prefix: str, bot_login: str) -> dict[str, Any]:
    if is_bot(payload.get("sender"), bot_login):
        return {"ignored": "labelled by a bot"}
    name = str((payload.get("label") or {}).get("name", ""))
    operation = label_operation(name, label_prefix)
    if operation is None:
        return {"ignored": f"label {name!r} is not a trigger"}
    issue = payload["issue"]
    repo = payload["repository"]["full_name"].lower()
    inputs = _issue_inputs(payload)
    if operation == "ops":
        command = ops_command_from_body(issue.get("body"))
        if command is not None:
            inputs["command"] = command
    run = RunRequest(
        # The issue's updated_at moves with every label change, so a relabel is a new intent while
        # two deliveries of the same labelling are one.
        semantic_key=f"gh:{repo}#{issue['number']}:label:{name.lower()}:{issue.get('updated_at', '')}",
        operation=operation,
        objective=(issue.get("title") or f"issue #{issue['number']}").strip(),
        inputs=inputs,
        metadata=_context(payload, "label", label=name),
        sender=payload["sender"]["login"],
        repo=repo,
        ref=str(payload["repository"].get("default_branch") or "main"),
    )
    return {"runs": [run]}


def _comment_plan(payload: dict[str, Any], *, bot_login: str) -> dict[str, Any]:
    if payload.get("action") != "created":
        return {"ignored": f"comment {payload.get('action')}: only new comments trigger"}
    comment = payload.get("comment") or {}
    if is_bot(comment.get("user"), bot_login) or is_bot(payload.get("sender"), bot_login):
        return {"ignored": "comment by a bot"}
    parsed = parse_commands(str(comment.get("body") or ""))
    if not parsed:
        return {"ignored": "no /tower command"}
    issue = payload["issue"]
    repo = payload["repository"]["full_name"].lower()
    comment_id = int(comment["id"])
    runs: list[RunRequest] = []
    commands: list[CommandRequest] = []
    for item in parsed:
        key = f"gh:{repo}#{issue['number']}:comment:{comment_id}:{item.line}"
        if isinstance(item, CommandError):
            commands.append(CommandRequest(key, "help", f"{item.code}: {item.message}", comment_id))
        elif item.kind == "run":
            runs.append(_run_from_comment(payload, item, key, comment_id))
        else:
            commands.append(CommandRequest(key, item.kind, item.text, comment_id))
    return {"runs": runs, "commands": commands}


def _run_from_comment(payload: dict[str, Any], item: Command, key: str, comment_id: int) -> RunRequest:
    issue = payload["issue"]
    operation = item.operation or ""
    inputs = _issue_inputs(payload)
    text = item.text.strip()
    if operation == "ops":
        inputs["command"] = text
        objective = f"Run `{text}`" if text else (issue.get("title") or "ops")
    else:
        objective = text or (issue.get("title") or f"issue #{issue['number']}")
    return RunRequest(
        semantic_key=key,
        operation=operation,
        objective=objective.strip() or "ops",
        inputs=inputs,
        metadata=_context(payload, "comment", comment_id=comment_id),
        sender=payload["sender"]["login"],
        repo=payload["repository"]["full_name"].lower(),
        ref=str(payload["repository"].get("default_branch") or "main"),
    )
