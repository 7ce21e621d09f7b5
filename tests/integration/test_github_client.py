"""GitHubClient against the GitHub double over real HTTP: caching, idempotent writes, retries, App auth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_tower.github.auth import AppAuth, TokenAuth
from control_tower.github.client import GitHubClient, permission_at_least, status_marker
from control_tower.github.doctrine import DoctrineError
from control_tower.github.errors import GitHubError
from control_tower.github.retry import RetryPolicy
from tests.fakes.github_server import (
    FakeGitHub,
    Fault,
    lost_response,
    make_bare_repo,
    rate_limited_403,
    rate_limited_429,
    running_fake_github,
    server_error,
    slow,
)

PAT = "ghp_testtoken_0123456789abcdef"
REPO = "acme/widgets"
BOT = "control-tower[bot]"
FAST = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05, rate_limit_retries=2)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with running_fake_github(pat=PAT, bot_login=BOT) as server:
        server.add_repo(REPO, files={".github/control-tower.yml": b"operations: [docs]\n"})
        server.set_permission(REPO, "alice", "maintain")
        server.set_permission(REPO, "rita", "read")
        yield server


def make_client(fake: FakeGitHub, **kwargs: object) -> GitHubClient:
    options: dict[str, object] = {"retry": FAST, "bot_login": BOT, **kwargs}
    return GitHubClient(auth=TokenAuth(PAT), base_url=fake.base_url, **options)  # type: ignore[arg-type]


PERMISSION_PATH = r"/repos/acme/widgets/collaborators/[^/]+/permission"


@pytest.mark.parametrize(
    ("actual", "required", "ok"),
    [
        ("admin", "write", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "write", False),
        ("read", "triage", False),
        ("none", "read", False),
        ("custom-role", "read", False),
        ("admin", "superuser", False),
    ],
)
def test_permission_at_least(actual: str, required: str, ok: bool) -> None:
    assert permission_at_least(actual, required) is ok


def test_permission_is_read_live_and_cached_briefly(fake: FakeGitHub) -> None:
    now = [1000.0]
    client = make_client(fake, clock=lambda: now[0], permission_ttl_s=60)
    assert client.get_permission("acme", "widgets", "alice") == "maintain"  # role_name, not legacy "write"
    assert client.get_permission("Acme", "Widgets", "ALICE") == "maintain"
    assert len(fake.calls_to("GET", PERMISSION_PATH)) == 1
    fake.set_permission(REPO, "alice", "read")
    now[0] += 61
    assert client.get_permission("acme", "widgets", "alice") == "read"
    assert len(fake.calls_to("GET", PERMISSION_PATH)) == 2
    assert client.get_permission("acme", "widgets", "stranger") == "none"
    assert client.get_permission("acme", "widgets", "rita") == "read"


def test_status_comment_is_created_once_and_edited_in_place_across_crashes(fake: FakeGitHub) -> None:
    first = make_client(fake)
    comment_id = first.upsert_status_comment("acme", "widgets", 7, "run-01", "⏳ queued")
    assert first.upsert_status_comment("acme", "widgets", 7, "run-01", "🏃 running") == comment_id
    # A new client instance (the worker crashed and another picked the run up) finds the same comment.
    again = make_client(fake).upsert_status_comment("acme", "widgets", 7, "run-01", "✅ done")
    assert again == comment_id
    [comment] = fake.comments(REPO, 7)
    assert comment["body"] == "✅ done\n\n" + status_marker("run-01")
    assert len(fake.calls_to("POST", r"/repos/acme/widgets/issues/7/comments")) == 1
    # Another run on the same issue gets its own comment.
    assert make_client(fake).upsert_status_comment("acme", "widgets", 7, "run-02", "queued") != comment_id
    assert len(fake.comments(REPO, 7)) == 2


def test_concurrent_upserts_from_one_client_create_one_comment(fake: FakeGitHub) -> None:
    client = make_client(fake)
    fake.inject("GET", r"/repos/acme/widgets/issues/8/comments", slow(0.2))  # widen the race window
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(
            pool.map(lambda i: client.upsert_status_comment("acme", "widgets", 8, "run-c", f"s{i}"), range(8))
        )
        refs = set(
            pool.map(
                lambda i: client.find_or_create_pull("acme", "widgets", "tower/c", "main", "T", "B"), range(8)
            )
        )
    assert len(ids) == 1 and len(fake.comments(REPO, 8)) == 1
    assert len({r.number for r in refs}) == 1 and len(fake.pulls(REPO)) == 1


def test_unchanged_status_is_not_patched(fake: FakeGitHub) -> None:
    client = make_client(fake)
    client.upsert_status_comment("acme", "widgets", 3, "run-x", "same")
    client.upsert_status_comment("acme", "widgets", 3, "run-x", "same")
    assert fake.calls_to("PATCH", r".*") == []


def test_marker_found_on_a_later_page_and_foreign_markers_ignored(fake: FakeGitHub) -> None:
    # Someone pastes our marker into their own comment: it must not be taken for ours (we could not edit it).
    fake.add_comment(REPO, 9, "copied " + status_marker("run-9"), login="mallory")
    for i in range(120):
        fake.add_comment(REPO, 9, f"chatter {i}", login="bob")
    client = make_client(fake)
    comment_id = client.upsert_status_comment("acme", "widgets", 9, "run-9", "queued")
    assert client.upsert_status_comment("acme", "widgets", 9, "run-9", "running") == comment_id
    ours = [c for c in fake.comments(REPO, 9) if c["user"]["login"] == BOT]
    assert len(ours) == 1 and ours[0]["body"].startswith("running")
    pages = {c.query.get("page") for c in fake.calls_to("GET", r"/repos/acme/widgets/issues/9/comments")}
    assert pages == {"1", "2"}


def test_lost_create_response_does_not_duplicate_the_comment(fake: FakeGitHub) -> None:
    fake.inject("POST", r"/repos/acme/widgets/issues/5/comments", lost_response(502))
    comment_id = make_client(fake).upsert_status_comment("acme", "widgets", 5, "run-5", "queued")
    [comment] = fake.comments(REPO, 5)
    assert comment["id"] == comment_id


def test_post_comment_with_dedupe_key_posts_once(fake: FakeGitHub) -> None:
    client = make_client(fake)
    first = client.post_comment("acme", "widgets", 4, "You need write access.", dedupe_key="delivery-abc")
    second = client.post_comment("acme", "widgets", 4, "You need write access.", dedupe_key="delivery-abc")
    assert first == second and len(fake.comments(REPO, 4)) == 1
    client.post_comment("acme", "widgets", 4, "plain")
    assert len(fake.comments(REPO, 4)) == 2


def test_reactions_are_idempotent(fake: FakeGitHub) -> None:
    seeded = fake.add_comment(REPO, 2, "/tower run docs", login="alice")
    client = make_client(fake)
    client.add_reaction("acme", "widgets", comment_id=seeded["id"])
    client.add_reaction("acme", "widgets", comment_id=seeded["id"])
    client.add_reaction("acme", "widgets", issue_number=2, content="rocket")
    reactions = fake.reactions(REPO)
    assert [(r["target"], r["content"]) for r in reactions] == [
        (("comment", seeded["id"]), "eyes"),
        (("issue", 2), "rocket"),
    ]
    with pytest.raises(ValueError, match="exactly one"):
        client.add_reaction("acme", "widgets")


def test_find_or_create_pull_twice_gives_one_pull(fake: FakeGitHub, tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path, "acme/shop", {"README.md": "hi\n"})
    fake.add_repo("acme/shop", git_dir=bare)

    work = git.Repo.clone_from(str(bare), tmp_path / "clone")
    work.git.checkout("-b", "tower/run-1")
    (tmp_path / "clone" / "new.txt").write_text("x\n")
    work.git.add("--all")
    work.git.commit("-m", "change", author="Bot <bot@example.com>")
    work.git.push("origin", "tower/run-1")

    client = make_client(fake)
    number, url, created = client.find_or_create_pull("acme", "shop", "tower/run-1", "main", "T", "Fixes #3")
    assert created and url.endswith(f"/acme/shop/pull/{number}")
    again = make_client(fake).find_or_create_pull("acme", "shop", "tower/run-1", "main", "T", "Fixes #3")
    assert again == (number, url, False)
    [pull] = fake.pulls("acme/shop")
    assert pull["draft"] is True and pull["head"]["sha"] == work.head.commit.hexsha
    with pytest.raises(GitHubError) as info:
        client.find_or_create_pull("acme", "shop", "tower/no-such-branch", "main", "T", "B")
    assert info.value.code == "GITHUB_VALIDATION_FAILED"


def test_lost_pull_create_response_does_not_duplicate(fake: FakeGitHub) -> None:
    fake.inject("POST", r"/repos/acme/widgets/pulls", lost_response(502))
    ref = make_client(fake).find_or_create_pull("acme", "widgets", "tower/r2", "main", "T", "B")
    assert ref.created is False  # found on the second look: the first create had landed
    assert len(fake.pulls(REPO)) == 1


def test_get_file_and_default_branch(fake: FakeGitHub, tmp_path: Path) -> None:
    client = make_client(fake)
    assert client.get_default_branch("acme", "widgets") == "main"
    assert client.get_file("acme", "widgets", ".github/control-tower.yml", "main") == b"operations: [docs]\n"
    assert client.get_file("acme", "widgets", "missing.yml", "main") is None
    big = bytes(range(256)) * 40
    bare = make_bare_repo(tmp_path, "acme/bin", {"data/blob.bin": big}, branch="trunk")
    fake.add_repo("acme/bin", git_dir=bare, default_branch="trunk")
    assert client.get_default_branch("acme", "bin") == "trunk"
    assert client.get_file("acme", "bin", "data/blob.bin", "trunk") == big
    assert client.get_file("acme", "bin", "data/blob.bin", "nope") is None


def test_doctrine_is_read_from_the_default_branch_only(fake: FakeGitHub, tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path, "acme/docs", {".github/control-tower.yml": "time_budget_seconds: 120\n"})
    fake.add_repo("acme/docs", git_dir=bare)
    client = make_client(fake)
    doctrine = client.get_doctrine("acme", "docs")
    assert doctrine is not None and doctrine.time_budget_seconds == 120
    assert doctrine.content_hash.startswith("sha256:")
    refs = {c.query.get("ref") for c in fake.calls_to("GET", r"/repos/acme/docs/contents/.*")}
    assert refs == {"main"}
    fake.add_repo("acme/plain")
    assert client.get_doctrine("acme", "plain") is None
    fake.add_repo("acme/broken", files={".github/control-tower.yml": b"operations: [nuke]\n"})
    with pytest.raises(DoctrineError) as info:
        client.get_doctrine("acme", "broken")
    assert info.value.code == "DOCTRINE_INVALID"


def test_connection_refused_is_unavailable_after_bounded_retries() -> None:
    with running_fake_github(pat=PAT) as gone:
        url = gone.base_url
    client = GitHubClient(auth=TokenAuth(PAT), base_url=url, retry=FAST)
    with pytest.raises(GitHubError) as info:
        client.get_permission("acme", "widgets", "alice")
    assert info.value.code == "GITHUB_UNAVAILABLE"


def test_5xx_then_success(fake: FakeGitHub) -> None:
    fake.inject("GET", PERMISSION_PATH, server_error(502), server_error(500), server_error(503))
    assert make_client(fake).get_permission("acme", "widgets", "alice") == "maintain"
    statuses = [c.status for c in fake.calls_to("GET", PERMISSION_PATH)]
    assert statuses == [502, 500, 503, 200]


def test_5xx_exhausting_retries_raises_unavailable(fake: FakeGitHub) -> None:
    fake.inject("GET", PERMISSION_PATH, *[server_error(502)] * 10)
    with pytest.raises(GitHubError) as info:
        make_client(fake).get_permission("acme", "widgets", "alice")
    assert info.value.code == "GITHUB_UNAVAILABLE" and info.value.status == 502
    assert len(fake.calls_to("GET", PERMISSION_PATH)) == FAST.max_retries + 1


@pytest.mark.parametrize(
    "fault", [rate_limited_403(1), rate_limited_429(1)], ids=["403-reset", "429-retry-after"]
)
def test_rate_limit_then_success(fake: FakeGitHub, fault: Fault) -> None:
    fake.inject("POST", r"/repos/acme/widgets/issues/1/comments", fault)
    started = time.monotonic()
    make_client(fake).post_comment("acme", "widgets", 1, "hello")
    assert time.monotonic() - started >= 0.05
    statuses = [c.status for c in fake.calls_to("POST", r"/repos/acme/widgets/issues/1/comments")]
    assert statuses == [fault.status, 201]
    assert len(fake.comments(REPO, 1)) == 1


def test_rate_limit_exhausted_or_too_long_raises_rate_limited(fake: FakeGitHub) -> None:
    fake.inject("GET", PERMISSION_PATH, *[rate_limited_429(0)] * 5)
    with pytest.raises(GitHubError) as info:
        make_client(fake).get_permission("acme", "widgets", "alice")
    assert info.value.code == "GITHUB_RATE_LIMITED"
    assert len(fake.calls_to("GET", PERMISSION_PATH)) == FAST.rate_limit_retries + 1

    fake.inject("GET", r"/repos/acme/widgets", rate_limited_403(3600))
    started = time.monotonic()
    with pytest.raises(GitHubError) as info:
        make_client(fake).get_default_branch("acme", "widgets")
    assert time.monotonic() - started < 5  # a reset an hour away is reported, not slept through
    assert info.value.code == "GITHUB_RATE_LIMITED"
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 3000


def test_slow_response_times_out_and_is_retried(fake: FakeGitHub) -> None:
    fake.inject("GET", r"/repos/acme/widgets", slow(1.5))
    assert make_client(fake, timeout_s=0.5).get_default_branch("acme", "widgets") == "main"
    time.sleep(1.2)  # the abandoned slow request is recorded once the double finishes it
    assert sorted(c.status for c in fake.calls_to("GET", r"/repos/acme/widgets")) == [200, 200]


def test_errors_have_stable_codes_and_never_show_the_token(
    fake: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GitHubClient(auth=TokenAuth("ghp_wrong_secret_value"), base_url=fake.base_url, retry=FAST)
    with pytest.raises(GitHubError) as info:
        bad.get_permission("acme", "widgets", "alice")
    assert info.value.code == "GITHUB_UNAUTHORIZED"
    assert len(fake.calls_to("GET", PERMISSION_PATH)) == 1  # 401 is not retried
    with pytest.raises(GitHubError) as missing:
        make_client(fake).get_default_branch("acme", "nope")
    assert missing.value.code == "GITHUB_NOT_FOUND"
    fake.inject("GET", PERMISSION_PATH, *[server_error(502)] * 10)
    with pytest.raises(GitHubError):
        make_client(fake).get_permission("acme", "widgets", "alice")
    out = capsys.readouterr()
    everything = out.out + out.err + str(info.value) + repr(bad) + repr(TokenAuth(PAT))
    assert "ghp_wrong_secret_value" not in everything and PAT not in everything


def test_hook_deliveries_need_app_auth(fake: FakeGitHub) -> None:
    with pytest.raises(GitHubError) as info:
        make_client(fake).list_hook_deliveries()
    assert info.value.code == "GITHUB_AUTH_CONFIG"


# ---- GitHub App authentication -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, public


@pytest.fixture
def app_fake(app_key: tuple[str, bytes]) -> Iterator[FakeGitHub]:
    with running_fake_github(app_id=4242, app_public_key_pem=app_key[1], bot_login=BOT) as server:
        server.add_repo(REPO, installation_id=77)
        server.add_repo("other/repo", installation_id=88)
        server.set_permission(REPO, "alice", "write")
        yield server


def test_app_auth_mints_one_installation_token_and_caches_it(
    app_fake: FakeGitHub, app_key: tuple[str, bytes]
) -> None:
    client = GitHubClient(
        auth=AppAuth(4242, app_key[0]), base_url=app_fake.base_url, retry=FAST, bot_login=BOT
    )
    assert client.get_permission("acme", "widgets", "alice") == "write"
    client.upsert_status_comment("acme", "widgets", 1, "run-a", "queued")
    client.upsert_status_comment("acme", "widgets", 1, "run-a", "running")
    client.add_reaction("acme", "widgets", issue_number=1)
    assert len(app_fake.calls_to("POST", r"/app/installations/77/access_tokens")) == 1
    assert len(app_fake.calls_to("GET", r"/repos/acme/widgets/installation")) == 1
    repo_calls = [
        c
        for c in app_fake.calls
        if c.path.startswith("/repos/acme/widgets/") and "installation" not in c.path
    ]
    assert repo_calls and {c.auth for c in repo_calls} == {"installation"}
    assert {c.auth for c in app_fake.calls_to("POST", r"/app/installations/\d+/access_tokens")} == {"jwt"}
    # A second installation gets its own token; the first stays cached.
    client.get_permission("other", "repo", "alice")
    assert len(app_fake.calls_to("POST", r"/app/installations/88/access_tokens")) == 1
    assert len(app_fake.calls_to("POST", r"/app/installations/77/access_tokens")) == 1


def test_app_token_near_expiry_is_minted_again(app_fake: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    app_fake.token_ttl_s = 61  # githubkit refreshes a minute before expiry
    client = GitHubClient(
        auth=AppAuth(4242, app_key[0], installation_id=77), base_url=app_fake.base_url, retry=FAST
    )
    client.get_default_branch("acme", "widgets")
    time.sleep(1.1)
    client.get_default_branch("acme", "widgets")
    assert len(app_fake.calls_to("POST", r"/app/installations/77/access_tokens")) == 2
    assert app_fake.calls_to("GET", r"/repos/acme/widgets/installation") == []  # pinned installation


def test_token_minting_survives_5xx(app_fake: FakeGitHub, app_key: tuple[str, bytes]) -> None:
    app_fake.inject("POST", r"/app/installations/77/access_tokens", server_error(502), server_error(502))
    client = GitHubClient(auth=AppAuth(4242, app_key[0]), base_url=app_fake.base_url, retry=FAST)
    assert client.get_permission("acme", "widgets", "alice") == "write"
    assert [c.status for c in app_fake.calls_to("POST", r"/app/installations/77/access_tokens")] == [
        502,
        502,
        201,
    ]


def test_wrong_app_key_is_unauthorized(app_fake: FakeGitHub) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    client = GitHubClient(auth=AppAuth(4242, pem), base_url=app_fake.base_url, retry=FAST)
    with pytest.raises(GitHubError) as info:
        client.get_permission("acme", "widgets", "alice")
    assert info.value.code == "GITHUB_UNAUTHORIZED"


def test_bad_private_key_is_a_config_error() -> None:
    with pytest.raises(GitHubError) as info:
        AppAuth(1, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert info.value.code == "GITHUB_AUTH_CONFIG"
    assert "nope" not in repr(AppAuth.__dataclass_fields__["private_key_pem"])


def test_hook_deliveries_are_listed_with_cursor_and_fetched(
    app_fake: FakeGitHub, app_key: tuple[str, bytes]
) -> None:
    ids = [
        app_fake.add_delivery("issues", {"action": "labeled", "n": i}, guid=f"guid-{i}")["id"]
        for i in range(5)
    ]
    client = GitHubClient(auth=AppAuth(4242, app_key[0]), base_url=app_fake.base_url, retry=FAST)
    page = client.list_hook_deliveries(per_page=3)
    assert [d.id for d in page.items] == ids[::-1][:3] and page.next_cursor is not None
    rest = client.list_hook_deliveries(per_page=3, cursor=page.next_cursor)
    assert [d.id for d in rest.items] == ids[::-1][3:] and rest.next_cursor is None
    detail = client.get_hook_delivery(ids[2])
    assert detail.summary.guid == "guid-2" and detail.summary.event == "issues"
    assert detail.payload == {"action": "labeled", "n": 2}
    assert {c.auth for c in app_fake.calls if c.path.startswith("/app/hook")} == {"jwt"}
