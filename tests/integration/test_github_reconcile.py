"""`github reconcile` against the GitHub double: missed deliveries are processed once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.ingest import receive_delivery
from control_tower.github.reconcile import reconcile
from control_tower.github.setup import client_from_settings
from control_tower.github.tables import DeliveryRow
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from tests.conftest import make_settings
from tests.fakes.github_server import FakeGitHub, running_fake_github
from tests.fakes.github_webhooks import issue_comment_payload, issues_labeled_payload


@pytest.fixture
def app_key(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


@pytest.fixture
def fake(app_key: tuple[Path, bytes]) -> Iterator[FakeGitHub]:
    with running_fake_github(app_public_key_pem=app_key[1]) as gh:
        gh.add_repo("acme/app")
        yield gh


def tasks(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.execute(select(func.count()).select_from(TaskRow)).scalar_one())


def test_reconcile_processes_missed_deliveries_once(
    fake: FakeGitHub, app_key: tuple[Path, bytes], db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings: Settings = make_settings(
        db_url,
        tmp_path,
        github_api_url=fake.base_url,
        github_app_id=4242,
        github_app_private_key_path=app_key[0],
    )
    seen = fake.add_delivery("issues", issues_labeled_payload("acme/app", 1, "tower:analysis"), guid="seen-1")
    fake.add_delivery(
        "issues", issues_labeled_payload("acme/app", 2, "tower:analysis"), guid="missed-1", status_code=502
    )
    fake.add_delivery(
        "issue_comment",
        issue_comment_payload("acme/app", 3, "/tower run ops ls"),
        guid="missed-2",
        status_code=502,
    )
    # One delivery did arrive and was stored.
    cfg = settings.policy_config()
    receive_delivery(
        factory,
        delivery_id="seen-1",
        event="issues",
        hook_id=None,
        payload=seen["payload"],
        raw=json.dumps(seen["payload"]).encode(),
        config=cfg,
        label_prefix="tower:",
        bot_login="control-tower[bot]",
        max_attempts=3,
    )
    assert tasks(factory) == 1
    client = client_from_settings(settings)
    assert client is not None
    report = reconcile(factory, client, settings)
    assert report.listed == 3 and report.already_stored == 1
    assert sorted(report.recovered) == ["missed-1", "missed-2"]
    assert tasks(factory) == 3
    again = reconcile(factory, client, settings)
    assert again.recovered == [] and tasks(factory) == 3
    with factory() as session:
        assert session.execute(select(func.count()).select_from(DeliveryRow)).scalar_one() == 3
