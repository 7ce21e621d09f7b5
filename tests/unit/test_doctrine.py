"""Repository doctrine: parsing `.github/control-tower.yml` and narrowing (never widening) policy."""

from __future__ import annotations

import hashlib

import pytest

from control_tower.github.doctrine import DoctrineError, RepoDoctrine, parse_doctrine, tighten
from policy.config import PolicyConfig

FULL = b"""
version: 1
operations: [docs, code_change]
paths: ["docs/", "src/**/*.py", "README.md"]
time_budget_seconds: 600
approval_required: [code_change]
verify: pytest -q
allow_workflow_changes: false
playbook: careful
"""


def test_full_doctrine_parses_with_content_hash() -> None:
    doctrine = parse_doctrine(FULL)
    assert doctrine.operations == frozenset({"docs", "code_change"})
    assert doctrine.paths == ("docs/", "src/**/*.py", "README.md")
    assert doctrine.time_budget_seconds == 600
    assert doctrine.approval_operations() == frozenset({"code_change"})
    assert doctrine.verify == "pytest -q"
    assert doctrine.playbook == "careful"
    assert doctrine.content_hash == "sha256:" + hashlib.sha256(FULL).hexdigest()


@pytest.mark.parametrize("raw", [b"", b"   \n", b"# only a comment\n", b"~\n"])
def test_empty_doctrine_narrows_nothing(raw: bytes) -> None:
    doctrine = parse_doctrine(raw)
    assert doctrine.operations is None and doctrine.paths is None
    policy = PolicyConfig(allowed_repo_prefixes=("acme/",))
    assert tighten(policy, doctrine) == policy


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"operations: [docs\n", None),
        (b"- docs\n- ops\n", None),
        (b"\xff\xfe", None),
        (b"operations: [deploy]\n", "operations"),
        (b"operation: [docs]\n", "operation"),
        (b"time_budget_seconds: 0\n", "time_budget_seconds"),
        (b"time_budget_seconds: 99999999\n", "time_budget_seconds"),
        (b"approval_required: maybe\n", "approval_required"),
        (b"paths: ['../secrets']\n", "paths"),
        (b"allow_workflow_changes: [yes]\n", "allow_workflow_changes"),
        (b"content_hash: sha256:0\n", "content_hash"),
        (b"version: 2\n", "version"),
        (b"!!python/object/apply:os.system ['true']\n", None),
    ],
)
def test_invalid_doctrine_is_a_typed_error(raw: bytes, field: str | None) -> None:
    with pytest.raises(DoctrineError) as info:
        parse_doctrine(raw)
    assert info.value.code == "DOCTRINE_INVALID"
    if field is not None:
        assert info.value.field is not None and info.value.field.startswith(field)


def test_tighten_only_narrows() -> None:
    policy = PolicyConfig(
        allowed_operations=frozenset({"docs", "analysis", "ops"}),
        max_time_budget_seconds=1200,
        approval_required_operations=frozenset({"ops"}),
    )
    doctrine = parse_doctrine(
        b"operations: [docs, code_change]\ntime_budget_seconds: 3600\napproval_required: [docs]\n"
    )
    narrowed = tighten(policy, doctrine)
    assert narrowed.allowed_operations == frozenset({"docs"})  # code_change is not granted by the repo
    assert narrowed.max_time_budget_seconds == 1200  # the repo cannot raise the operator's budget
    assert narrowed.approval_required_operations == frozenset({"ops", "docs"})
    assert narrowed.version_hash != policy.version_hash
    assert narrowed.version_hash == PolicyConfig.model_validate(narrowed.model_dump()).version_hash


def test_tighten_lowers_budget_and_approval_true_covers_everything() -> None:
    narrowed = tighten(PolicyConfig(), parse_doctrine(b"time_budget_seconds: 60\napproval_required: true\n"))
    assert narrowed.max_time_budget_seconds == 60
    assert narrowed.approval_required_operations == PolicyConfig().allowed_operations


def test_tighten_without_doctrine_is_identity() -> None:
    policy = PolicyConfig()
    assert tighten(policy, None) is policy


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("docs/index.md", True),
        ("docs/deep/er/page.md", True),
        ("src/pkg/mod.py", True),
        ("src/mod.py", True),
        ("src/pkg/mod.txt", False),
        ("README.md", True),
        ("./README.md", True),
        ("READMExmd", False),
        ("setup.py", False),
        ("../docs/x.md", False),
        ("/etc/passwd", False),
    ],
)
def test_paths_are_globs(path: str, allowed: bool) -> None:
    assert parse_doctrine(FULL).path_allowed(path) is allowed


def test_workflow_changes_are_refused_unless_allowed() -> None:
    assert not RepoDoctrine().path_allowed(".github/workflows/ci.yml")
    assert RepoDoctrine().path_allowed(".github/control-tower.yml")
    assert RepoDoctrine(allow_workflow_changes=True).path_allowed(".github/workflows/ci.yml")
    restricted = parse_doctrine(b"paths: ['docs/**']\nallow_workflow_changes: true\n")
    assert not restricted.path_allowed(".github/workflows/ci.yml")  # still outside `paths`
    assert restricted.disallowed_paths(["docs/a.md", "b.py", "b.py"]) == ["b.py"]
