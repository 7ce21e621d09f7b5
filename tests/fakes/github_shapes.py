"""JSON shapes of GitHub REST and webhook objects, complete enough for githubkit's pydantic models."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

API = "https://api.github.com"
WEB = "https://github.com"
REACTION_KEYS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")


def now_iso() -> str:
    """The current UTC time as GitHub writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_id(text: str) -> int:
    """A deterministic positive id for a login or repository name."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def node_id(kind: str, ident: int) -> str:
    """An opaque GraphQL node id."""
    return f"{kind}_kw{ident:010d}"


def user(login: str, *, kind: str = "User") -> dict[str, Any]:
    """A SimpleUser (also valid for webhook user objects)."""
    uid = stable_id(login)
    base = f"{API}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": node_id("U", uid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{WEB}/{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def repository(full_name: str, *, default_branch: str = "main", private: bool = False) -> dict[str, Any]:
    """A Repository / FullRepository / RepositoryWebhooks object."""
    owner, name = full_name.split("/", 1)
    rid = stable_id(full_name)
    base = f"{API}/repos/{full_name}"
    ts = "2024-01-01T00:00:00Z"
    urls = {
        f"{key}_url": f"{base}/{path}"
        for key, path in {
            "archive": "{archive_format}{/ref}",
            "assignees": "assignees{/user}",
            "blobs": "git/blobs{/sha}",
            "branches": "branches{/branch}",
            "collaborators": "collaborators{/collaborator}",
            "comments": "comments{/number}",
            "commits": "commits{/sha}",
            "compare": "compare/{base}...{head}",
            "contents": "contents/{+path}",
            "contributors": "contributors",
            "deployments": "deployments",
            "downloads": "downloads",
            "events": "events",
            "forks": "forks",
            "git_commits": "git/commits{/sha}",
            "git_refs": "git/refs{/sha}",
            "git_tags": "git/tags{/sha}",
            "issue_comment": "issues/comments{/number}",
            "issue_events": "issues/events{/number}",
            "issues": "issues{/number}",
            "keys": "keys{/key_id}",
            "labels": "labels{/name}",
            "languages": "languages",
            "merges": "merges",
            "milestones": "milestones{/number}",
            "notifications": "notifications{?since,all,participating}",
            "pulls": "pulls{/number}",
            "releases": "releases{/id}",
            "stargazers": "stargazers",
            "statuses": "statuses/{sha}",
            "subscribers": "subscribers",
            "subscription": "subscription",
            "tags": "tags",
            "teams": "teams",
            "trees": "git/trees{/sha}",
            "hooks": "hooks",
        }.items()
    }
    return {
        "id": rid,
        "node_id": node_id("R", rid),
        "name": name,
        "full_name": full_name,
        "private": private,
        "owner": user(owner, kind="Organization"),
        "html_url": f"{WEB}/{full_name}",
        "description": None,
        "fork": False,
        "url": base,
        **urls,
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"{WEB}/{full_name}.git",
        "svn_url": f"{WEB}/{full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": "Python",
        "license": None,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 1,
        "default_branch": default_branch,
        "open_issues_count": 0,
        "open_issues": 0,
        "is_template": False,
        "topics": [],
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_downloads": True,
        "has_discussions": False,
        "archived": False,
        "disabled": False,
        "visibility": "private" if private else "public",
        "pushed_at": ts,
        "created_at": ts,
        "updated_at": ts,
        "subscribers_count": 0,
        "network_count": 0,
        "allow_forking": True,
        "web_commit_signoff_required": False,
    }


def reactions_rollup(url: str, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The `reactions` summary embedded in issues and comments."""
    counts = counts or {}
    out: dict[str, Any] = {"url": url, "total_count": sum(counts.values())}
    out.update({key: counts.get(key, 0) for key in REACTION_KEYS})
    return out


def issue_comment(
    full_name: str,
    issue_number: int,
    comment_id: int,
    body: str,
    author: dict[str, Any],
    created: str,
    updated: str,
) -> dict[str, Any]:
    """An IssueComment as the REST API returns it."""
    base = f"{API}/repos/{full_name}/issues/comments/{comment_id}"
    return {
        "id": comment_id,
        "node_id": node_id("IC", comment_id),
        "url": base,
        "html_url": f"{WEB}/{full_name}/issues/{issue_number}#issuecomment-{comment_id}",
        "body": body,
        "user": author,
        "created_at": created,
        "updated_at": updated,
        "issue_url": f"{API}/repos/{full_name}/issues/{issue_number}",
        "author_association": "NONE" if author["type"] == "Bot" else "MEMBER",
        "performed_via_github_app": None,
        "reactions": reactions_rollup(f"{base}/reactions"),
    }


def reaction(reaction_id: int, content: str, author: dict[str, Any], created: str) -> dict[str, Any]:
    """A Reaction."""
    return {
        "id": reaction_id,
        "node_id": node_id("REA", reaction_id),
        "user": author,
        "content": content,
        "created_at": created,
    }


def _link(href: str) -> dict[str, str]:
    return {"href": href}


def pull_request(
    full_name: str,
    number: int,
    *,
    title: str,
    body: str | None,
    head: str,
    head_sha: str,
    base: str,
    base_sha: str,
    draft: bool,
    author: dict[str, Any],
    state: str,
    created: str,
) -> dict[str, Any]:
    """A PullRequest (also a valid PullRequestSimple)."""
    owner = full_name.split("/", 1)[0]
    pid = stable_id(f"{full_name}#pr{number}")
    api = f"{API}/repos/{full_name}"
    repo = repository(full_name)
    html = f"{WEB}/{full_name}/pull/{number}"
    return {
        "url": f"{api}/pulls/{number}",
        "id": pid,
        "node_id": node_id("PR", pid),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": f"{api}/issues/{number}",
        "commits_url": f"{api}/pulls/{number}/commits",
        "review_comments_url": f"{api}/pulls/{number}/comments",
        "review_comment_url": f"{api}/pulls/comments{{/number}}",
        "comments_url": f"{api}/issues/{number}/comments",
        "statuses_url": f"{api}/statuses/{head_sha}",
        "number": number,
        "state": state,
        "locked": False,
        "title": title,
        "user": author,
        "body": body,
        "labels": [],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": created,
        "updated_at": created,
        "closed_at": None,
        "merged_at": None,
        "merge_commit_sha": None,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": {
            "label": f"{owner}:{head}",
            "ref": head,
            "sha": head_sha,
            "user": repo["owner"],
            "repo": repo,
        },
        "base": {
            "label": f"{owner}:{base}",
            "ref": base,
            "sha": base_sha,
            "user": repo["owner"],
            "repo": repo,
        },
        "_links": {
            "self": _link(f"{api}/pulls/{number}"),
            "html": _link(html),
            "issue": _link(f"{api}/issues/{number}"),
            "comments": _link(f"{api}/issues/{number}/comments"),
            "review_comments": _link(f"{api}/pulls/{number}/comments"),
            "review_comment": _link(f"{api}/pulls/comments{{/number}}"),
            "commits": _link(f"{api}/pulls/{number}/commits"),
            "statuses": _link(f"{api}/statuses/{head_sha}"),
        },
        "author_association": "NONE",
        "auto_merge": None,
        "draft": draft,
        "merged": False,
        "mergeable": None,
        "rebaseable": None,
        "mergeable_state": "unknown",
        "merged_by": None,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": False,
        "commits": 1,
        "additions": 1,
        "deletions": 0,
        "changed_files": 1,
    }


def content_file(
    full_name: str, path: str, ref: str, content_b64: str, size: int, sha: str
) -> dict[str, Any]:
    """A ContentFile from the contents API."""
    api = f"{API}/repos/{full_name}/contents/{path}?ref={ref}"
    html = f"{WEB}/{full_name}/blob/{ref}/{path}"
    git = f"{API}/repos/{full_name}/git/blobs/{sha}"
    return {
        "type": "file",
        "encoding": "base64",
        "size": size,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "content": content_b64,
        "sha": sha,
        "url": api,
        "git_url": git,
        "html_url": html,
        "download_url": f"https://raw.githubusercontent.com/{full_name}/{ref}/{path}",
        "_links": {"self": api, "git": git, "html": html},
    }


def installation(installation_id: int, app_id: int, account: str) -> dict[str, Any]:
    """An Installation of the app."""
    return {
        "id": installation_id,
        "account": user(account, kind="Organization"),
        "access_tokens_url": f"{API}/app/installations/{installation_id}/access_tokens",
        "repositories_url": f"{API}/installation/repositories",
        "html_url": f"{WEB}/organizations/{account}/settings/installations/{installation_id}",
        "repository_selection": "all",
        "app_id": app_id,
        "client_id": "Iv1.fakeclientid",
        "target_id": stable_id(account),
        "target_type": "Organization",
        "permissions": {"contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read"},
        "events": ["issues", "issue_comment"],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "app_slug": "control-tower",
        "suspended_by": None,
        "suspended_at": None,
    }


def permission(role: str, login: str) -> dict[str, Any]:
    """A RepositoryCollaboratorPermission; `permission` is the legacy base role GitHub reports."""
    legacy = {"maintain": "write", "triage": "read"}.get(role, role)
    collaborator = user(login)
    collaborator["role_name"] = role
    collaborator["permissions"] = {
        "pull": role != "none",
        "triage": role in ("triage", "write", "maintain", "admin"),
        "push": role in ("write", "maintain", "admin"),
        "maintain": role in ("maintain", "admin"),
        "admin": role == "admin",
    }
    return {"permission": legacy, "role_name": role, "user": collaborator}


def hook_delivery_item(delivery: dict[str, Any]) -> dict[str, Any]:
    """A HookDeliveryItem from a stored delivery record."""
    keys = (
        "id",
        "guid",
        "delivered_at",
        "redelivery",
        "duration",
        "status",
        "status_code",
        "event",
        "action",
        "installation_id",
        "repository_id",
        "throttled_at",
    )
    return {key: delivery[key] for key in keys}


def hook_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    """A HookDelivery with the request headers and payload."""
    out = hook_delivery_item(delivery)
    out["url"] = delivery["url"]
    out["request"] = {"headers": delivery["request_headers"], "payload": delivery["payload"]}
    out["response"] = {"headers": {"Content-Type": "application/json"}, "payload": delivery["response_body"]}
    return out


def error_body(message: str, status: int, *, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """GitHub's error document."""
    body: dict[str, Any] = {
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": str(status),
    }
    if errors:
        body["errors"] = errors
    return body
