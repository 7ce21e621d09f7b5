"""GitHub REST client for the worker: permissions, reactions, idempotent comments and pull requests, files."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar

import httpx
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException
from githubkit_schemas.latest.models import ContentFile
from pydantic import ValidationError

from control_tower.github.auth import AppAuth, GitHubAuth, TokenAuth
from control_tower.github.deliveries import (
    DeliveryDetail,
    DeliveryPage,
    next_cursor,
    summary_from,
)
from control_tower.github.doctrine import DOCTRINE_PATH, RepoDoctrine, parse_doctrine
from control_tower.github.errors import GitHubError, translate
from control_tower.github.retry import RetryDecision, RetryPolicy

T = TypeVar("T")

PERMISSION_ORDER = ("none", "read", "triage", "write", "maintain", "admin")
ReactionContent = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
_MAX_COMMENT_PAGES = 50


def permission_at_least(actual: str, required: str) -> bool:
    """Whether a repository role reaches the required one (none<read<triage<write<maintain<admin)."""
    if required not in PERMISSION_ORDER:
        return False  # an unknown requirement can never be met: fail closed
    rank = PERMISSION_ORDER.index(actual) if actual in PERMISSION_ORDER else 0
    return rank >= PERMISSION_ORDER.index(required)


def status_marker(run_id: str) -> str:
    """The hidden marker that identifies a run's status comment."""
    return f"<!-- control-tower:run={run_id} -->"


def _key_marker(key: str) -> str:
    return f"<!-- control-tower:key={key} -->"


class PullRef(NamedTuple):
    """A pull request found or opened by find_or_create_pull."""

    number: int
    html_url: str
    created: bool


class GitHubClient:
    """Synchronous, thread-safe GitHub client; every failure surfaces as a GitHubError with a stable code."""

    def __init__(
        self,
        *,
        auth: GitHubAuth,
        base_url: str = "https://api.github.com",
        bot_login: str | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        permission_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "control-tower",
        trust_env: bool = True,
    ) -> None:
        self._auth = auth
        self.base_url = base_url
        self.bot_login = bot_login
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._permission_ttl_s = permission_ttl_s
        self._permissions: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._installations: dict[tuple[str, str], int] = {}
        self._clients: dict[int, GitHub[Any]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}
        # One token cache per client: githubkit's default cache is a process-wide singleton.
        self._cache = MemCacheStrategy()
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout_s,
            "user_agent": user_agent,
            "http_cache": False,  # comment lists must never be served stale
            "cache_strategy": self._cache,
            "auto_retry": RetryDecision(self.retry),
            "trust_env": trust_env,  # proxies and CA bundles from the environment
        }
        self._token_client: GitHub[Any] | None = None
        self._app_client: GitHub[Any] | None = None
        if isinstance(auth, TokenAuth):
            self._token_client = GitHub(auth.token, **self._options)
        else:
            self._app_client = GitHub(AppAuthStrategy(auth.app_id, auth.private_key_pem), **self._options)

    def __repr__(self) -> str:
        kind = "token" if isinstance(self._auth, TokenAuth) else f"app {self._auth.app_id}"
        return f"GitHubClient({self.base_url!r}, {kind})"

    # ---- plumbing --------------------------------------------------------------------------------------
    def _call(self, func: Callable[[], T]) -> T:
        try:
            return func()
        except (GitHubException, ValidationError, httpx.HTTPError) as exc:
            raise translate(exc) from exc

    def _repo_client(self, owner: str, repo: str) -> GitHub[Any]:
        if self._token_client is not None:
            return self._token_client
        installation_id = self.installation_id(owner, repo)
        with self._lock:
            client = self._clients.get(installation_id)
            if client is None:
                assert isinstance(self._auth, AppAuth)
                strategy = AppInstallationAuthStrategy(
                    self._auth.app_id, self._auth.private_key_pem, installation_id
                )
                client = GitHub(strategy, **self._options)
                self._clients[installation_id] = client
            return client

    def _app(self) -> GitHub[Any]:
        if self._app_client is None:
            raise GitHubError("GITHUB_AUTH_CONFIG", "this call needs GitHub App authentication")
        return self._app_client

    def installation_id(self, owner: str, repo: str) -> int:
        """The app installation covering a repository (configured, or looked up once and cached)."""
        if isinstance(self._auth, AppAuth) and self._auth.installation_id is not None:
            return self._auth.installation_id
        key = (owner.lower(), repo.lower())
        with self._lock:
            if key in self._installations:
                return self._installations[key]
        app = self._app()
        found = self._call(lambda: app.rest.apps.get_repo_installation(owner, repo).parsed_data.id)
        with self._lock:
            self._installations[key] = found
        return found

    # ---- permissions -----------------------------------------------------------------------------------
    def get_permission(self, owner: str, repo: str, username: str) -> str:
        """The user's role on the repository (none/read/triage/write/maintain/admin), cached briefly."""
        key = (owner.lower(), repo.lower(), username.lower())
        now = self._clock()
        with self._lock:
            cached = self._permissions.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
        gh = self._repo_client(owner, repo)
        data = self._call(
            lambda: gh.rest.repos.get_collaborator_permission_level(owner, repo, username).parsed_data
        )
        # role_name carries triage/maintain; `permission` is the legacy base role (also for custom roles).
        role = data.role_name if data.role_name in PERMISSION_ORDER else data.permission
        role = role if role in PERMISSION_ORDER else "none"
        with self._lock:
            self._permissions[key] = (role, now + self._permission_ttl_s)
        return role

    # ---- reactions and comments ------------------------------------------------------------------------
    def add_reaction(
        self,
        owner: str,
        repo: str,
        *,
        comment_id: int | None = None,
        issue_number: int | None = None,
        content: ReactionContent = "eyes",
    ) -> None:
        """React to a comment or an issue; idempotent, as GitHub keeps one reaction per user and content."""
        if (comment_id is None) == (issue_number is None):
            raise ValueError("give exactly one of comment_id and issue_number")
        gh = self._repo_client(owner, repo)
        if comment_id is not None:
            cid = comment_id
            self._call(lambda: gh.rest.reactions.create_for_issue_comment(owner, repo, cid, content=content))
        else:
            assert issue_number is not None
            num = issue_number
            self._call(lambda: gh.rest.reactions.create_for_issue(owner, repo, num, content=content))

    def post_comment(
        self, owner: str, repo: str, issue_number: int, body: str, *, dedupe_key: str | None = None
    ) -> int:
        """Post a comment; with dedupe_key it is posted at most once (found again by a hidden marker)."""
        if dedupe_key is not None:
            return self._upsert_marked(owner, repo, issue_number, _key_marker(dedupe_key), body, edit=False)
        gh = self._repo_client(owner, repo)
        return self._call(
            lambda: gh.rest.issues.create_comment(owner, repo, issue_number, body=body).parsed_data.id
        )

    def upsert_status_comment(self, owner: str, repo: str, issue_number: int, run_id: str, body: str) -> int:
        """Create the run's one status comment, or edit it in place if it exists (found by its marker)."""
        return self._upsert_marked(owner, repo, issue_number, status_marker(run_id), body, edit=True)

    def find_marked_comment(
        self, owner: str, repo: str, issue_number: int, marker: str
    ) -> tuple[int, str] | None:
        """(id, body) of the oldest comment carrying `marker` (written by bot_login when configured)."""
        gh = self._repo_client(owner, repo)
        for page in range(1, _MAX_COMMENT_PAGES + 1):
            comments = self._call(self._comments_page(gh, owner, repo, issue_number, page))
            for comment in comments:
                author = comment.user.login if comment.user is not None else None
                if isinstance(comment.body, str) and marker in comment.body:
                    if self.bot_login is None or (author or "").lower() == self.bot_login.lower():
                        return comment.id, comment.body
            if len(comments) < 100:
                return None
        return None

    @staticmethod
    def _comments_page(
        gh: GitHub[Any], owner: str, repo: str, number: int, page: int
    ) -> Callable[[], list[Any]]:
        def fetch() -> list[Any]:
            return list(
                gh.rest.issues.list_comments(owner, repo, number, per_page=100, page=page).parsed_data
            )

        return fetch

    def _serialised(self, *key: str) -> threading.Lock:
        """One lock per find-then-create key, so two threads of this process never both create."""
        with self._lock:
            return self._key_locks.setdefault(tuple(k.lower() for k in key), threading.Lock())

    def _upsert_marked(
        self, owner: str, repo: str, issue_number: int, marker: str, body: str, *, edit: bool
    ) -> int:
        with self._serialised("comment", owner, repo, str(issue_number), marker):
            return self._upsert_marked_locked(owner, repo, issue_number, marker, body, edit=edit)

    def _upsert_marked_locked(
        self, owner: str, repo: str, issue_number: int, marker: str, body: str, *, edit: bool
    ) -> int:
        full = body if marker in body else f"{body}\n\n{marker}"
        gh = self._repo_client(owner, repo)
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            existing = self.find_marked_comment(owner, repo, issue_number, marker)
            if existing is not None:
                comment_id, current = existing
                if edit and current != full:
                    self._call(partial(gh.rest.issues.update_comment, owner, repo, comment_id, body=full))
                return comment_id
            try:
                return self._call(
                    lambda: gh.rest.issues.create_comment(owner, repo, issue_number, body=full).parsed_data.id
                )
            except GitHubError as exc:
                # A failed or timed-out create may still have landed: look again before creating again.
                if exc.code != "GITHUB_UNAVAILABLE" or attempt == attempts - 1:
                    raise
                self._sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")

    # ---- pull requests ---------------------------------------------------------------------------------
    def find_pull(self, owner: str, repo: str, head_branch: str) -> PullRef | None:
        """The open pull request whose head is `owner:head_branch`, if any."""
        gh = self._repo_client(owner, repo)
        head = f"{owner}:{head_branch}"
        pulls = self._call(
            lambda: gh.rest.pulls.list(owner, repo, head=head, state="open", per_page=10).parsed_data
        )
        return PullRef(pulls[0].number, pulls[0].html_url, False) if pulls else None

    def find_or_create_pull(
        self, owner: str, repo: str, head_branch: str, base: str, title: str, body: str, draft: bool = True
    ) -> PullRef:
        """Reuse the open pull request for the head branch, or open one; never two for the same branch."""
        with self._serialised("pull", owner, repo, head_branch):
            return self._find_or_create_pull_locked(owner, repo, head_branch, base, title, body, draft)

    def _find_or_create_pull_locked(
        self, owner: str, repo: str, head_branch: str, base: str, title: str, body: str, draft: bool
    ) -> PullRef:
        gh = self._repo_client(owner, repo)
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            found = self.find_pull(owner, repo, head_branch)
            if found is not None:
                return found
            try:
                pull = self._call(
                    lambda: (
                        gh.rest.pulls.create(
                            owner, repo, title=title, head=head_branch, base=base, body=body, draft=draft
                        ).parsed_data
                    )
                )
                return PullRef(pull.number, pull.html_url, True)
            except GitHubError as exc:
                # 422 "already exists": a concurrent or earlier attempt won; 5xx/timeout: it may have landed.
                retryable = exc.code == "GITHUB_UNAVAILABLE" or (
                    exc.code == "GITHUB_VALIDATION_FAILED" and "already exists" in exc.message
                )
                if not retryable or attempt == attempts - 1:
                    raise
                if exc.code == "GITHUB_UNAVAILABLE":
                    self._sleep(self.retry.backoff(attempt))
        raise AssertionError("unreachable")

    # ---- repository content ----------------------------------------------------------------------------
    def get_default_branch(self, owner: str, repo: str) -> str:
        """The repository's default branch."""
        gh = self._repo_client(owner, repo)
        return self._call(lambda: gh.rest.repos.get(owner, repo).parsed_data.default_branch)

    def get_file(self, owner: str, repo: str, path: str, ref: str) -> bytes | None:
        """A file's bytes at `ref`, or None when there is no file at that path."""
        gh = self._repo_client(owner, repo)
        try:
            data = self._call(lambda: gh.rest.repos.get_content(owner, repo, path, ref=ref).parsed_data)
        except GitHubError as exc:
            if exc.code == "GITHUB_NOT_FOUND":
                return None
            raise
        if not isinstance(data, ContentFile):
            return None  # a directory, symlink or submodule
        if data.encoding != "base64":
            raise GitHubError(
                "GITHUB_BAD_RESPONSE", f"{path}: unsupported content encoding {data.encoding!r}"
            )
        return base64.b64decode(data.content)

    def get_doctrine(self, owner: str, repo: str) -> RepoDoctrine | None:
        """The repository's `.github/control-tower.yml` from its default branch only; None if absent.

        Raises DoctrineError (DOCTRINE_INVALID) for a file that does not parse.
        """
        branch = self.get_default_branch(owner, repo)
        raw = self.get_file(owner, repo, DOCTRINE_PATH, branch)
        return None if raw is None else parse_doctrine(raw)

    # ---- app webhook deliveries ------------------------------------------------------------------------
    def list_hook_deliveries(
        self, *, per_page: int = 50, cursor: str | None = None, status: str | None = None
    ) -> DeliveryPage:
        """A page of the app's recent webhook deliveries (App JWT auth), newest first."""
        app = self._app()
        kwargs: dict[str, Any] = {"per_page": per_page}
        if cursor is not None:
            kwargs["cursor"] = cursor
        if status is not None:
            kwargs["status"] = status
        response = self._call(lambda: app.rest.apps.list_webhook_deliveries(**kwargs))
        items = [summary_from(item) for item in self._call(lambda: response.parsed_data)]
        return DeliveryPage(items, next_cursor(response.headers.get("link")))

    def get_hook_delivery(self, delivery_id: int) -> DeliveryDetail:
        """One delivery with its request headers and payload, for reprocessing a missed event."""
        app = self._app()
        response = self._call(lambda: app.rest.apps.get_webhook_delivery(delivery_id))
        data = self._call(lambda: response.parsed_data)
        raw = response.json()
        request = raw.get("request") or {}
        headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
        payload = request.get("payload") or {}
        return DeliveryDetail(summary_from(data), headers, payload if isinstance(payload, dict) else {})
