"""Webhook deliveries exactly as GitHub sends them: realistic payloads, headers and HMAC signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.fakes import github_shapes as shapes

HOOK_ID = 471_123_456


@dataclass(frozen=True)
class Delivery:
    """A ready-to-send webhook request: raw body bytes and the header set."""

    event: str
    body: bytes
    headers: dict[str, str]

    @property
    def delivery_id(self) -> str:
        """The X-GitHub-Delivery GUID."""
        return self.headers["X-GitHub-Delivery"]

    def post(self, url: str, *, client: httpx.Client | None = None) -> httpx.Response:
        """POST this delivery to `url` (a real HTTP request)."""
        if client is not None:
            return client.post(url, content=self.body, headers=self.headers)
        return httpx.post(url, content=self.body, headers=self.headers, timeout=10)


def signed_delivery(
    event: str,
    payload: dict[str, Any],
    secret: str,
    *,
    delivery_id: str | None = None,
    hook_id: int = HOOK_ID,
    app_id: int = 4242,
) -> Delivery:
    """Serialise and sign a payload as GitHub does (compact JSON, sha1 and sha256 HMAC headers)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    key = secret.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8c1e2f3",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(app_id),
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }
    return Delivery(event, body, headers)


def _issue(
    full_name: str, number: int, *, title: str, body: str | None, author: str, labels: list[str]
) -> dict[str, Any]:
    iid = shapes.stable_id(f"{full_name}#{number}")
    api = f"{shapes.API}/repos/{full_name}/issues/{number}"
    ts = "2024-05-01T10:00:00Z"
    return {
        "url": api,
        "repository_url": f"{shapes.API}/repos/{full_name}",
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"{shapes.WEB}/{full_name}/issues/{number}",
        "id": iid,
        "node_id": shapes.node_id("I", iid),
        "number": number,
        "title": title,
        "user": shapes.user(author),
        "labels": [_label(full_name, name) for name in labels],
        "state": "open",
        "locked": False,
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "comments": 0,
        "created_at": ts,
        "updated_at": ts,
        "closed_at": None,
        "author_association": "MEMBER",
        "active_lock_reason": None,
        "body": body,
        "reactions": shapes.reactions_rollup(f"{api}/reactions"),
        "timeline_url": f"{api}/timeline",
        "performed_via_github_app": None,
        "state_reason": None,
    }


def _label(full_name: str, name: str) -> dict[str, Any]:
    lid = shapes.stable_id(f"{full_name}:label:{name}")
    return {
        "id": lid,
        "node_id": shapes.node_id("LA", lid),
        "url": f"{shapes.API}/repos/{full_name}/labels/{name}",
        "name": name,
        "color": "ededed",
        "default": False,
        "description": None,
        "archived_at": None,
        "archived_by": None,
    }


def _common(full_name: str, sender: str, sender_type: str, installation_id: int | None) -> dict[str, Any]:
    common: dict[str, Any] = {
        "repository": shapes.repository(full_name),
        "sender": shapes.user(sender, kind=sender_type),
    }
    owner = full_name.split("/", 1)[0]
    common["organization"] = {
        "login": owner,
        "id": shapes.stable_id(owner),
        "node_id": shapes.node_id("O", shapes.stable_id(owner)),
        "url": f"{shapes.API}/orgs/{owner}",
        "repos_url": f"{shapes.API}/orgs/{owner}/repos",
        "events_url": f"{shapes.API}/orgs/{owner}/events",
        "hooks_url": f"{shapes.API}/orgs/{owner}/hooks",
        "issues_url": f"{shapes.API}/orgs/{owner}/issues",
        "members_url": f"{shapes.API}/orgs/{owner}/members{{/member}}",
        "public_members_url": f"{shapes.API}/orgs/{owner}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{shapes.stable_id(owner)}?v=4",
        "description": None,
    }
    if installation_id is not None:
        common["installation"] = {"id": installation_id, "node_id": shapes.node_id("MDIz", installation_id)}
    return common


def issues_labeled_payload(
    full_name: str,
    issue_number: int,
    label: str,
    *,
    sender: str = "alice",
    title: str = "Update the docs",
    body: str | None = "Please update the README.",
    installation_id: int | None = 1,
) -> dict[str, Any]:
    """`issues` event, action `labeled`."""
    return {
        "action": "labeled",
        "issue": _issue(full_name, issue_number, title=title, body=body, author=sender, labels=[label]),
        "label": _label(full_name, label),
        **_common(full_name, sender, "User", installation_id),
    }


def issue_comment_payload(
    full_name: str,
    issue_number: int,
    comment_body: str,
    *,
    action: str = "created",
    comment_id: int = 2_000_000_001,
    sender: str = "alice",
    sender_type: str = "User",
    previous_body: str | None = None,
    title: str = "Update the docs",
    issue_body: str | None = "Please update the README.",
    installation_id: int | None = 1,
) -> dict[str, Any]:
    """`issue_comment` event, action `created` or `edited` (with `changes.body.from`)."""
    api = f"{shapes.API}/repos/{full_name}/issues/comments/{comment_id}"
    ts = "2024-05-01T10:05:00Z"
    comment = {
        "url": api,
        "html_url": f"{shapes.WEB}/{full_name}/issues/{issue_number}#issuecomment-{comment_id}",
        "issue_url": f"{shapes.API}/repos/{full_name}/issues/{issue_number}",
        "id": comment_id,
        "node_id": shapes.node_id("IC", comment_id),
        "user": shapes.user(sender, kind=sender_type),
        "created_at": ts,
        "updated_at": ts,
        "author_association": "NONE" if sender_type == "Bot" else "MEMBER",
        "body": comment_body,
        "reactions": shapes.reactions_rollup(f"{api}/reactions"),
        "performed_via_github_app": None,
    }
    payload: dict[str, Any] = {
        "action": action,
        "issue": _issue(full_name, issue_number, title=title, body=issue_body, author="alice", labels=[]),
        "comment": comment,
        **_common(full_name, sender, sender_type, installation_id),
    }
    if action == "edited":
        payload["changes"] = {"body": {"from": previous_body if previous_body is not None else ""}}
    return payload
