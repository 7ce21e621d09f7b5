"""The GitHub double itself: wire shapes githubkit accepts, auth, faults, webhooks signed as GitHub does."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import git
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from githubkit import webhooks
from githubkit.compat import type_validate_python
from githubkit_schemas.latest import models

from control_tower.github.commands import commands_only
from control_tower.github.signature import verify_signature
from tests.fakes.github_server import (
    FakeGitHub,
    make_bare_repo,
    rate_limited_403,
    rate_limited_429,
    running_fake_github,
    server_error,
    slow,
)
from tests.fakes.github_webhooks import issue_comment_payload, issues_labeled_payload, signed_delivery

PAT = "ghp_fake_pat"
REPO = "acme/widgets"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with running_fake_github(pat=PAT, app_id=4242, app_public_key_pem=public) as server:
        server.add_repo(REPO, installation_id=77, files={"a/b.txt": b"hello\n"})
        server.add_repo("other/repo", installation_id=88)
        server.set_permission(REPO, "alice", "triage")
        yield server


def app_jwt(key: rsa.RSAPrivateKey, app_id: int = 4242) -> str:
    now = datetime.now(UTC)
    return jwt.encode(
        {"iss": str(app_id), "iat": now - timedelta(seconds=30), "exp": now + timedelta(minutes=5)},
        key,
        "RS256",
    )


def http(fake: FakeGitHub, credential: str | None = PAT) -> httpx.Client:
    headers = {"Accept": "application/vnd.github+json"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return httpx.Client(base_url=fake.base_url, headers=headers, timeout=10, trust_env=False)


def validate(model: Any, data: Any) -> Any:
    return type_validate_python(model, data)


def test_rest_responses_validate_against_githubkit_models(fake: FakeGitHub, key: rsa.RSAPrivateKey) -> None:
    with http(fake, app_jwt(key)) as app:
        installation = app.get(f"/repos/{REPO}/installation")
        assert installation.status_code == 200
        validate(models.Installation, installation.json())
        minted = app.post("/app/installations/77/access_tokens", json={})
        assert minted.status_code == 201
        token = validate(models.InstallationToken, minted.json()).token
    with http(fake, token) as api:
        validate(models.FullRepository, api.get(f"/repos/{REPO}").json())
        perm = validate(
            models.RepositoryCollaboratorPermission,
            api.get(f"/repos/{REPO}/collaborators/alice/permission").json(),
        )
        assert (perm.permission, perm.role_name) == ("read", "triage")  # legacy base role vs role name
        created = api.post(f"/repos/{REPO}/issues/3/comments", json={"body": "hi"})
        comment = validate(models.IssueComment, created.json())
        assert created.status_code == 201 and comment.user is not None and comment.user.type == "Bot"
        edited = api.patch(f"/repos/{REPO}/issues/comments/{comment.id}", json={"body": "edited"})
        assert validate(models.IssueComment, edited.json()).body == "edited"
        listed = api.get(f"/repos/{REPO}/issues/3/comments")
        assert [c.body for c in validate(list[models.IssueComment], listed.json())] == ["edited"]
        first = api.post(f"/repos/{REPO}/issues/comments/{comment.id}/reactions", json={"content": "eyes"})
        second = api.post(f"/repos/{REPO}/issues/comments/{comment.id}/reactions", json={"content": "eyes"})
        assert (first.status_code, second.status_code) == (201, 200)
        validate(models.Reaction, first.json())
        validate(
            models.Reaction, api.post(f"/repos/{REPO}/issues/3/reactions", json={"content": "+1"}).json()
        )
        pull = api.post(
            f"/repos/{REPO}/pulls", json={"title": "T", "head": "tower/x", "base": "main", "draft": True}
        )
        assert pull.status_code == 201
        validate(models.PullRequest, pull.json())
        dup = api.post(f"/repos/{REPO}/pulls", json={"title": "T", "head": "tower/x", "base": "main"})
        assert dup.status_code == 422 and "already exists" in dup.json()["errors"][0]["message"]
        pulls = api.get(f"/repos/{REPO}/pulls", params={"head": "acme:tower/x", "state": "open"})
        assert len(validate(list[models.PullRequestSimple], pulls.json())) == 1
        assert api.get(f"/repos/{REPO}/pulls", params={"head": "acme:tower/y"}).json() == []
        content = validate(models.ContentFile, api.get(f"/repos/{REPO}/contents/a/b.txt").json())
        assert content.encoding == "base64" and content.size == 6
        assert api.get(f"/repos/{REPO}/contents/a/missing.txt").status_code == 404
    fake.add_delivery("issues", issues_labeled_payload(REPO, 3, "tower:docs"))
    with http(fake, app_jwt(key)) as app:
        items = validate(list[models.HookDeliveryItem], app.get("/app/hook/deliveries").json())
        detail = validate(models.HookDelivery, app.get(f"/app/hook/deliveries/{items[0].id}").json())
        assert detail.event == "issues" and detail.action == "labeled"


def test_auth_is_enforced(fake: FakeGitHub, key: rsa.RSAPrivateKey) -> None:
    path = f"/repos/{REPO}/collaborators/alice/permission"
    with http(fake, None) as anonymous:
        assert anonymous.get(path).status_code == 401
    with http(fake, "ghp_wrong") as wrong:
        assert wrong.get(path).status_code == 401
    with http(fake, PAT) as pat:
        assert pat.get("/app/hook/deliveries").status_code == 401  # app routes need the JWT
    with http(fake, app_jwt(key)) as app:
        assert app.get(path).status_code == 401  # the JWT is not an installation token
        token = app.post("/app/installations/77/access_tokens").json()["token"]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with http(fake, app_jwt(other_key)) as forged:
        assert forged.post("/app/installations/77/access_tokens").status_code == 401
    with http(fake, app_jwt(key, app_id=1)) as wrong_app:
        assert wrong_app.get("/app/hook/deliveries").status_code == 401
    with http(fake, token) as installation:
        assert installation.get(path).status_code == 200
        assert installation.get("/repos/other/repo").status_code == 404  # another installation's repo
    assert [c.auth for c in fake.calls[:3]] == ["none", "invalid", "pat"]


def test_without_a_public_key_the_jwt_is_checked_structurally(key: rsa.RSAPrivateKey) -> None:
    with running_fake_github(app_id=4242) as server:
        server.add_repo(REPO, installation_id=77)
        with http(server, app_jwt(key)) as app:
            assert app.post("/app/installations/77/access_tokens").status_code == 201
        with http(server, app_jwt(key, app_id=9)) as wrong:
            assert wrong.post("/app/installations/77/access_tokens").status_code == 401
        expired = jwt.encode({"iss": "4242", "exp": int(time.time()) - 60}, key, "RS256")
        with http(server, expired) as old:
            assert old.post("/app/installations/77/access_tokens").status_code == 401


def test_faults_are_queued_per_route_and_recorded(fake: FakeGitHub) -> None:
    fake.inject("GET", r"/repos/acme/widgets", server_error(502), rate_limited_403(30), rate_limited_429(2))
    fake.inject("*", r"/repos/acme/widgets/contents/.*", slow(0.3))
    with http(fake) as api:
        assert api.get("/repos/other/repo").status_code == 200  # other routes unaffected
        first = api.get(f"/repos/{REPO}")
        limited = api.get(f"/repos/{REPO}")
        secondary = api.get(f"/repos/{REPO}")
        ok = api.get(f"/repos/{REPO}")
        started = time.monotonic()
        assert api.get(f"/repos/{REPO}/contents/a/b.txt").status_code == 200
        assert time.monotonic() - started >= 0.3
    assert [first.status_code, limited.status_code, secondary.status_code, ok.status_code] == [
        502,
        403,
        429,
        200,
    ]
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(limited.headers["x-ratelimit-reset"]) - time.time() <= 31
    assert secondary.headers["retry-after"] == "2"
    assert [c.status for c in fake.calls_to("GET", r"/repos/acme/widgets")] == [502, 403, 429, 200]


def test_comment_pagination_uses_link_headers(fake: FakeGitHub) -> None:
    for i in range(5):
        fake.add_comment(REPO, 1, f"c{i}", login="bob")
    with http(fake) as api:
        page1 = api.get(f"/repos/{REPO}/issues/1/comments", params={"per_page": 2})
        assert [c["body"] for c in page1.json()] == ["c0", "c1"]
        assert 'rel="next"' in page1.headers["link"] and "page=2" in page1.headers["link"]
        page3 = api.get(f"/repos/{REPO}/issues/1/comments", params={"per_page": 2, "page": 3})
        assert [c["body"] for c in page3.json()] == ["c4"] and "link" not in page3.headers


def test_only_the_author_may_edit_a_comment(fake: FakeGitHub) -> None:
    theirs = fake.add_comment(REPO, 1, "mine", login="bob")
    with http(fake) as api:
        assert (
            api.patch(f"/repos/{REPO}/issues/comments/{theirs['id']}", json={"body": "x"}).status_code == 403
        )


def test_bare_repo_serves_contents_and_clones_over_file_url(fake: FakeGitHub, tmp_path: Path) -> None:
    root = tmp_path / "remotes"
    bare = make_bare_repo(
        root, "acme/site", {".github/control-tower.yml": "operations: [docs]\n", "x/y.txt": b"\x00\x01"}
    )
    assert bare == root / "acme" / "site.git"
    fake.add_repo("acme/site", git_dir=bare)
    clone = git.Repo.clone_from(f"file://{root}/acme/site.git", tmp_path / "clone")
    assert clone.active_branch.name == "main"
    assert (tmp_path / "clone" / "x" / "y.txt").read_bytes() == b"\x00\x01"
    with http(fake) as api:
        doc = api.get("/repos/acme/site/contents/.github/control-tower.yml", params={"ref": "main"}).json()
        assert doc["sha"] == clone.git.rev_parse("HEAD:.github/control-tower.yml")
        assert api.get("/repos/acme/site/contents/x/y.txt", params={"ref": "nope"}).status_code == 404
        missing = api.post(
            "/repos/acme/site/pulls", json={"title": "T", "head": "tower/none", "base": "main"}
        )
        assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "head"


# ---- webhooks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload", "model"),
    [
        ("issues", issues_labeled_payload(REPO, 12, "tower:docs"), models.WebhookIssuesLabeled),
        (
            "issue_comment",
            issue_comment_payload(REPO, 12, "/tower run ops make fmt"),
            models.WebhookIssueCommentCreated,
        ),
        (
            "issue_comment",
            issue_comment_payload(REPO, 12, "/tower approve", action="edited", previous_body="/tower status"),
            models.WebhookIssueCommentEdited,
        ),
        (
            "issue_comment",
            issue_comment_payload(REPO, 12, "/tower retry", sender="renovate[bot]", sender_type="Bot"),
            models.WebhookIssueCommentCreated,
        ),
    ],
)
def test_payloads_parse_with_githubkit(event: str, payload: dict[str, Any], model: type[Any]) -> None:
    delivery = signed_delivery(event, payload, "s3cret")
    parsed = webhooks.parse(event, delivery.body)
    assert isinstance(parsed, model)
    assert parsed.repository is not None and parsed.repository.full_name == REPO
    assert parsed.installation is not None and parsed.installation.id == 1


def test_comment_payload_carries_the_command_and_sender() -> None:
    payload = issue_comment_payload(
        REPO, 4, "hi\n/tower run docs fix typos", sender="renovate[bot]", sender_type="Bot"
    )
    parsed = webhooks.parse("issue_comment", json.dumps(payload))
    assert isinstance(parsed, models.WebhookIssueCommentCreated)
    assert parsed.sender is not None and parsed.sender.type == "Bot"
    assert [c.operation for c in commands_only(parsed.comment.body)] == ["docs"]
    assert parsed.issue.number == 4


def test_deliveries_are_signed_exactly_as_github_signs() -> None:
    delivery = signed_delivery(
        "issues", issues_labeled_payload(REPO, 1, "tower:ops"), "s3cret", delivery_id="abc-1"
    )
    headers = delivery.headers
    assert headers["X-GitHub-Event"] == "issues" and headers["X-GitHub-Delivery"] == "abc-1"
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["Content-Type"] == "application/json" and headers["X-GitHub-Hook-ID"].isdigit()
    expected = "sha256=" + hmac.new(b"s3cret", delivery.body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected
    assert (
        headers["X-Hub-Signature"] == "sha1=" + hmac.new(b"s3cret", delivery.body, hashlib.sha1).hexdigest()
    )
    assert verify_signature(delivery.body, headers["X-Hub-Signature-256"], ["old", "s3cret"])
    assert not verify_signature(delivery.body + b"\n", headers["X-Hub-Signature-256"], ["s3cret"])
    assert b", " not in delivery.body  # compact JSON, as sent by GitHub


def test_delivery_is_posted_over_real_http(fake: FakeGitHub) -> None:
    delivery = signed_delivery("issue_comment", issue_comment_payload(REPO, 2, "/tower status"), "k")
    response = delivery.post(f"{fake.base_url}/github/webhook")
    assert response.status_code == 404  # the double has no webhook route; it only proves the bytes went out
    [call] = fake.calls_to("POST", r"/github/webhook")
    assert call.json["comment"]["body"] == "/tower status"
