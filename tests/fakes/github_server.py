"""A GitHub REST API double over real HTTP on 127.0.0.1: stateful, recording, with scripted faults.

githubkit is pointed at `FakeGitHub.base_url`. Routes: app installation tokens, repo installation,
collaborator permission, issue comments (list/create/update), reactions, pulls (list/create), contents
(from a bare git repository on disk or a dict), app hook deliveries, repository metadata. Every request
is recorded as a `Call`; faults (5xx, 403/429 rate limits, delays) are queued per route pattern.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt

from tests.fakes import github_shapes as shapes
from tests.fakes.git_remote import make_bare_repo, run_git
from tests.fakes.github_faults import (
    Fault,
    lost_response,
    rate_limited_403,
    rate_limited_429,
    server_error,
    slow,
)

__all__ = [
    "Call",
    "FakeGitHub",
    "Fault",
    "RepoState",
    "lost_response",
    "make_bare_repo",
    "rate_limited_403",
    "rate_limited_429",
    "running_fake_github",
    "server_error",
    "slow",
]

Reply = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Call:
    """One request as the double saw it; `auth` is none | pat | installation | jwt | invalid."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    auth: str
    status: int


@dataclass
class RepoState:
    """One repository known to the double."""

    full_name: str
    default_branch: str = "main"
    installation_id: int = 1
    git_dir: Path | None = None
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # ref -> path -> bytes
    permissions: dict[str, str] = field(default_factory=dict)  # login (lowercase) -> role
    comments: list[dict[str, Any]] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[dict[str, Any]] = field(default_factory=list)
    next_number: int = 1000


APP_ROUTE = re.compile(r"^/(app(/.*)?|repos/[^/]+/[^/]+/installation)$")
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


class FakeGitHub:
    """The GitHub double; use `running_fake_github()` or start()/stop()."""

    def __init__(
        self,
        *,
        app_id: int = 4242,
        app_public_key_pem: bytes | None = None,
        pat: str | None = None,
        bot_login: str = "control-tower[bot]",
        token_ttl_s: int = 3600,
    ) -> None:
        self.app_id = app_id
        self.app_public_key_pem = app_public_key_pem
        self.pat = pat
        self.bot_login = bot_login
        self.token_ttl_s = token_ttl_s
        self.repos: dict[str, RepoState] = {}
        self.tokens: dict[str, tuple[int, datetime]] = {}  # token -> (installation id, expiry)
        self.deliveries: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self._faults: list[tuple[str, re.Pattern[str], list[Fault]]] = []
        self._lock = threading.RLock()
        self._ids = iter(range(9_000_001, 10**9))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("POST", re.compile(r"/app/installations/(?P<inst>\d+)/access_tokens"), self._access_token),
            ("GET", re.compile(r"/app/hook/deliveries"), self._list_deliveries),
            ("GET", re.compile(r"/app/hook/deliveries/(?P<id>\d+)"), self._get_delivery),
            ("GET", re.compile(_REPO + r"/installation"), self._repo_installation),
            ("GET", re.compile(_REPO), self._get_repo),
            ("GET", re.compile(_REPO + r"/collaborators/(?P<user>[^/]+)/permission"), self._permission),
            ("GET", re.compile(_REPO + r"/issues/(?P<num>\d+)/comments"), self._list_comments),
            ("POST", re.compile(_REPO + r"/issues/(?P<num>\d+)/comments"), self._create_comment),
            ("PATCH", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), self._update_comment),
            ("POST", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)/reactions"), self._react_comment),
            ("POST", re.compile(_REPO + r"/issues/(?P<num>\d+)/reactions"), self._react_issue),
            ("GET", re.compile(_REPO + r"/pulls"), self._list_pulls),
            ("POST", re.compile(_REPO + r"/pulls"), self._create_pull),
            ("GET", re.compile(_REPO + r"/contents/(?P<path>.+)"), self._get_contents),
        ]

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a random free loopback port; returns the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` — the GITHUB_API_URL for clients."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test set-up and inspection ----------------------------------------------------------------------
    def add_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        installation_id: int = 1,
        git_dir: Path | None = None,
        files: dict[str, bytes] | None = None,
    ) -> RepoState:
        """Make a repository known; `files` are served on the default branch unless `git_dir` is set."""
        with self._lock:
            state = RepoState(full_name, default_branch, installation_id, git_dir)
            if files:
                state.files[default_branch] = dict(files)
            self.repos[full_name.lower()] = state
            return state

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """Give `login` a role (none/read/triage/write/maintain/admin) on the repository."""
        with self._lock:
            self.repos[full_name.lower()].permissions[login.lower()] = role

    def add_comment(self, full_name: str, issue_number: int, body: str, *, login: str) -> dict[str, Any]:
        """Seed a comment written by someone else."""
        with self._lock:
            return self._new_comment(self.repos[full_name.lower()], issue_number, body, shapes.user(login))

    def comments(self, full_name: str, issue_number: int | None = None) -> list[dict[str, Any]]:
        """The repository's issue comments (optionally of one issue)."""
        with self._lock:
            found = self.repos[full_name.lower()].comments
            return [c for c in found if issue_number is None or c["_issue"] == issue_number]

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        """The repository's pull requests."""
        with self._lock:
            return list(self.repos[full_name.lower()].pulls)

    def reactions(self, full_name: str) -> list[dict[str, Any]]:
        """Reactions as {"target": ("comment"|"issue", id), "content", "login"}."""
        with self._lock:
            return list(self.repos[full_name.lower()].reactions)

    def add_delivery(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        guid: str | None = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record a delivery the app's webhook received (or failed to), for the hook deliveries API."""
        with self._lock:
            delivery_id = next(self._ids)
            delivery = {
                "id": delivery_id,
                "guid": guid or f"{secrets.token_hex(4)}-0000-11ef-8000-{secrets.token_hex(6)}",
                "delivered_at": shapes.now_iso(),
                "redelivery": False,
                "duration": 0.05,
                "status": "OK" if status_code < 400 else "Invalid HTTP Response: 502",
                "status_code": status_code,
                "event": event,
                "action": payload.get("action"),
                "installation_id": (payload.get("installation") or {}).get("id"),
                "repository_id": (payload.get("repository") or {}).get("id"),
                "throttled_at": None,
                "url": "https://control-tower.example/github/webhook",
                "request_headers": headers or {"X-GitHub-Event": event},
                "payload": payload,
                "response_body": "ok",
            }
            self.deliveries.append(delivery)
            return delivery

    def inject(self, method: str, path_pattern: str, *faults: Fault) -> None:
        """Queue faults for requests whose method ("*" for any) and path (regex, full match) match."""
        with self._lock:
            self._faults.append((method.upper(), re.compile(path_pattern), list(faults)))

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        """Recorded calls matching a method and a path regex (full match)."""
        pattern = re.compile(path_pattern)
        with self._lock:
            return [c for c in self.calls if c.method == method.upper() and pattern.fullmatch(c.path)]

    # ---- HTTP plumbing ----------------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = dict(parse_qsl(parts.query))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        method = handler.command
        auth = self._auth_kind(handler.headers.get("Authorization"))
        status, payload, headers = self._dispatch(method, path, query, body, auth, handler)
        with self._lock:
            self.calls.append(Call(method, path, query, body, auth, status))
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-GitHub-Request-Id", secrets.token_hex(8).upper())
        for key, value in headers.items():
            handler.send_header(key, value)
        try:
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); the call is recorded all the same

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        auth: str,
        handler: BaseHTTPRequestHandler,
    ) -> Reply:
        fault = self._take_fault(method, path)
        if fault is not None:
            time.sleep(fault.delay_s)
            if fault.after_effect:
                self._route(method, path, query, body, auth, handler)
            if fault.status is not None:
                headers = dict(fault.headers)
                if fault.rate_limit_reset_in_s is not None:
                    headers.update(
                        {
                            "x-ratelimit-limit": "5000",
                            "x-ratelimit-remaining": "0",
                            "x-ratelimit-used": "5000",
                            "x-ratelimit-reset": str(int(time.time()) + fault.rate_limit_reset_in_s),
                            "x-ratelimit-resource": "core",
                        }
                    )
                return fault.status, shapes.error_body(fault.message, fault.status), headers
        return self._route(method, path, query, body, auth, handler)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        auth: str,
        handler: BaseHTTPRequestHandler,
    ) -> Reply:
        for route_method, pattern, func in self._routes:
            match = pattern.fullmatch(path)
            if match is None or route_method != method:
                continue
            denied = self._check_auth(path, auth)
            if denied is not None:
                return denied
            with self._lock:
                return func(match, query, body, handler)
        return 404, shapes.error_body("Not Found", 404), {}

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault_method, pattern, queue in self._faults:
                if queue and fault_method in ("*", method) and pattern.fullmatch(path):
                    return queue.pop(0)
        return None

    def _auth_kind(self, header: str | None) -> str:
        if not header:
            return "none"
        scheme, _, credential = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential:
            return "invalid"
        if self.pat is not None and credential == self.pat:
            return "pat"
        with self._lock:
            issued = self.tokens.get(credential)
        if issued is not None:
            return "installation" if issued[1] > datetime.now(UTC) else "invalid"
        if credential.count(".") == 2:
            return "jwt" if self._jwt_valid(credential) else "invalid"
        return "invalid"

    def _jwt_valid(self, token: str) -> bool:
        """RS256 signature checked with the app's public key when configured, else only the claims."""
        try:
            if self.app_public_key_pem is None:
                claims = jwt.decode(token, options={"verify_signature": False, "require": ["exp", "iss"]})
                if jwt.get_unverified_header(token).get("alg") != "RS256" or claims["exp"] < time.time():
                    return False
            else:
                claims = jwt.decode(
                    token, self.app_public_key_pem, algorithms=["RS256"], options={"require": ["exp"]}
                )
        except jwt.PyJWTError:
            return False
        return str(claims.get("iss")) == str(self.app_id)

    def _check_auth(self, path: str, auth: str) -> Reply | None:
        if APP_ROUTE.fullmatch(path):
            if auth != "jwt":
                return 401, shapes.error_body("A JSON web token could not be decoded", 401), {}
            return None
        if auth in ("pat", "installation"):
            return None
        message = "Requires authentication" if auth == "none" else "Bad credentials"
        return 401, shapes.error_body(message, 401), {}

    def _repo(self, match: re.Match[str]) -> RepoState | None:
        return self.repos.get(f"{match['owner']}/{match['repo']}".lower())

    def _actor(self, handler: BaseHTTPRequestHandler) -> dict[str, Any]:
        return shapes.user(self.bot_login, kind="Bot" if self.bot_login.endswith("[bot]") else "User")

    def _installation_of(self, handler: BaseHTTPRequestHandler) -> int | None:
        _, _, credential = (handler.headers.get("Authorization") or "").partition(" ")
        issued = self.tokens.get(credential)
        return issued[0] if issued else None

    def _visible_repo(self, match: re.Match[str], handler: BaseHTTPRequestHandler) -> RepoState | None:
        repo = self._repo(match)
        installation = self._installation_of(handler)
        if repo is None or (installation is not None and installation != repo.installation_id):
            return None  # an installation token sees only the repositories of its installation
        return repo

    # ---- routes ----------------------------------------------------------------------------------------
    def _access_token(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        installation_id = int(match["inst"])
        if installation_id not in {r.installation_id for r in self.repos.values()}:
            return 404, shapes.error_body("Not Found", 404), {}
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=self.token_ttl_s)
        self.tokens[token] = (installation_id, expires)
        return (
            201,
            {
                "token": token,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"contents": "write", "issues": "write", "pull_requests": "write"},
                "repository_selection": "all",
            },
            {},
        )

    def _repo_installation(
        self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any
    ) -> Reply:
        repo = self._repo(match)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        return 200, shapes.installation(repo.installation_id, self.app_id, match["owner"]), {}

    def _get_repo(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        return 200, shapes.repository(repo.full_name, default_branch=repo.default_branch), {}

    def _permission(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        role = repo.permissions.get(match["user"].lower(), "none")
        return 200, shapes.permission(role, match["user"]), {}

    def _list_comments(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        found = [_public(c) for c in repo.comments if c["_issue"] == int(match["num"])]
        return self._paginate(found, query, handler)

    def _paginate(self, items: list[dict[str, Any]], query: dict[str, str], handler: Any) -> Reply:
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        page = max(1, int(query.get("page", 1)))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        path = urlsplit(handler.path).path
        links = []
        if page < last:
            links.append(f'<{self.base_url}{path}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{self.base_url}{path}?per_page={per_page}&page={last}>; rel="last"')
        if links:
            headers["Link"] = ", ".join(links)
        return 200, chunk, headers

    def _new_comment(self, repo: RepoState, number: int, text: str, author: dict[str, Any]) -> dict[str, Any]:
        comment_id = next(self._ids)
        ts = shapes.now_iso()
        comment = shapes.issue_comment(repo.full_name, number, comment_id, text, author, ts, ts)
        comment["_issue"] = number
        repo.comments.append(comment)
        return comment

    def _create_comment(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            return 422, shapes.error_body("Invalid request.", 422), {}
        comment = self._new_comment(repo, int(match["num"]), body["body"], self._actor(handler))
        return 201, _public(comment), {}

    def _update_comment(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        comment = next((c for c in repo.comments if c["id"] == int(match["id"])), None) if repo else None
        if comment is None:
            return 404, shapes.error_body("Not Found", 404), {}
        if comment["user"]["login"] != self._actor(handler)["login"]:
            return 403, shapes.error_body("Resource not accessible by integration", 403), {}
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            return 422, shapes.error_body("Invalid request.", 422), {}
        comment["body"] = body["body"]
        comment["updated_at"] = shapes.now_iso()
        return 200, _public(comment), {}

    def _react(self, repo: RepoState | None, target: tuple[str, int], body: Any, handler: Any) -> Reply:
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        content = body.get("content") if isinstance(body, dict) else None
        if content not in shapes.REACTION_KEYS:
            return 422, shapes.error_body("Validation Failed", 422), {}
        actor = self._actor(handler)
        for existing in repo.reactions:
            if (
                existing["target"] == target
                and existing["content"] == content
                and existing["login"] == actor["login"]
            ):
                return 200, existing["json"], {}
        reaction_id = next(self._ids)
        data = shapes.reaction(reaction_id, content, actor, shapes.now_iso())
        repo.reactions.append({"target": target, "content": content, "login": actor["login"], "json": data})
        return 201, data, {}

    def _react_comment(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is not None and not any(c["id"] == int(match["id"]) for c in repo.comments):
            return 404, shapes.error_body("Not Found", 404), {}
        return self._react(repo, ("comment", int(match["id"])), body, handler)

    def _react_issue(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        return self._react(self._visible_repo(match, handler), ("issue", int(match["num"])), body, handler)

    def _list_pulls(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        state = query.get("state", "open")
        found = [
            p
            for p in repo.pulls
            if (state == "all" or p["state"] == state)
            and ("head" not in query or p["head"]["label"] == query["head"])
            and ("base" not in query or p["base"]["ref"] == query["base"])
        ]
        return self._paginate(found, query, handler)

    def _create_pull(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("title", "head", "base")
        ):
            return 422, shapes.error_body("Validation Failed", 422), {}
        owner = repo.full_name.split("/")[0]
        head = body["head"].split(":", 1)[-1]
        head_sha, base_sha = self._sha(repo, head), self._sha(repo, body["base"])
        if head_sha is None or base_sha is None:
            error = {
                "resource": "PullRequest",
                "field": "head" if head_sha is None else "base",
                "code": "invalid",
            }
            return 422, shapes.error_body("Validation Failed", 422, errors=[error]), {}
        if any(
            p["state"] == "open" and p["head"]["ref"] == head and p["base"]["ref"] == body["base"]
            for p in repo.pulls
        ):
            error = {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"A pull request already exists for {owner}:{head}.",
            }
            return 422, shapes.error_body("Validation Failed", 422, errors=[error]), {}
        number = repo.next_number
        repo.next_number += 1
        pull = shapes.pull_request(
            repo.full_name,
            number,
            title=body["title"],
            body=body.get("body"),
            head=head,
            head_sha=head_sha,
            base=body["base"],
            base_sha=base_sha,
            draft=bool(body.get("draft", False)),
            author=self._actor(handler),
            state="open",
            created=shapes.now_iso(),
        )
        repo.pulls.append(pull)
        return 201, pull, {}

    def _sha(self, repo: RepoState, ref: str) -> str | None:
        if repo.git_dir is None:
            return hashlib.sha1(f"{repo.full_name}@{ref}".encode()).hexdigest()  # fake sha
        out = run_git(repo.git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{ref}^{{commit}}")
        return out.decode().strip() if out is not None else None

    def _get_contents(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        repo = self._visible_repo(match, handler)
        if repo is None:
            return 404, shapes.error_body("Not Found", 404), {}
        ref, path = query.get("ref") or repo.default_branch, match["path"]
        if repo.git_dir is not None:
            data = run_git(repo.git_dir, "cat-file", "blob", f"{ref}:{path}")
        else:
            data = repo.files.get(ref, {}).get(path)
        if data is None:
            return 404, shapes.error_body("Not Found", 404), {}
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
        encoded = base64.encodebytes(data).decode()  # GitHub wraps base64 at 60 columns with newlines
        return 200, shapes.content_file(repo.full_name, path, ref, encoded, len(data), sha), {}

    def _list_deliveries(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        ordered = sorted(self.deliveries, key=lambda d: d["id"], reverse=True)
        if "cursor" in query:
            ordered = [d for d in ordered if d["id"] < int(query["cursor"])]
        if query.get("status") in ("success", "failure"):
            ordered = [d for d in ordered if (d["status_code"] < 400) == (query["status"] == "success")]
        chunk = ordered[:per_page]
        headers: dict[str, str] = {}
        if len(ordered) > per_page:
            cursor = chunk[-1]["id"]
            headers["Link"] = (
                f'<{self.base_url}/app/hook/deliveries?per_page={per_page}&cursor={cursor}>; rel="next"'
            )
        return 200, [shapes.hook_delivery_item(d) for d in chunk], headers

    def _get_delivery(self, match: re.Match[str], query: dict[str, str], body: Any, handler: Any) -> Reply:
        found = next((d for d in self.deliveries if d["id"] == int(match["id"])), None)
        if found is None:
            return 404, shapes.error_body("Not Found", 404), {}
        return 200, shapes.hook_delivery(found), {}


def _public(comment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in comment.items() if not k.startswith("_")}


@contextmanager
def running_fake_github(**kwargs: Any) -> Iterator[FakeGitHub]:
    """Start a FakeGitHub for the duration of the block (kwargs go to FakeGitHub)."""
    fake = FakeGitHub(**kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
