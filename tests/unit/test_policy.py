"""The pure policy gate."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import PolicyCode, PolicyConfig, PolicyError, TaskCreateV1, evaluate, repo_allowed
from policy.contract import Constraints, RequestedBy, Target
from tests.conftest import task_body
from tests.support.strategies import storable_text

ALLOW_ACME = PolicyConfig(allowed_repo_prefixes=("acme",))


def make(**overrides: Any) -> TaskCreateV1:
    return TaskCreateV1.model_validate(task_body(**overrides))


@pytest.mark.parametrize(
    ("overrides", "config", "code", "field"),
    [
        ({"operation": "deploy"}, ALLOW_ACME, PolicyCode.INVALID_OPERATION, "operation"),
        ({"target": {"repo": "evil/app"}}, ALLOW_ACME, PolicyCode.REPO_NOT_ALLOWED, "target.repo"),
        ({}, PolicyConfig(), PolicyCode.REPO_NOT_ALLOWED, "target.repo"),
        (
            {"constraints": {"time_budget_seconds": 29}},
            ALLOW_ACME,
            PolicyCode.TIME_BUDGET_TOO_LOW,
            "constraints.time_budget_seconds",
        ),
        (
            {"constraints": {"time_budget_seconds": 86_401}},
            ALLOW_ACME,
            PolicyCode.TIME_BUDGET_TOO_HIGH,
            "constraints.time_budget_seconds",
        ),
        (
            {"constraints": {"allow_network": True}},
            ALLOW_ACME,
            PolicyCode.NETWORK_ACCESS_DENIED,
            "constraints.allow_network",
        ),
        (
            {"constraints": {"allow_secrets": True}},
            ALLOW_ACME,
            PolicyCode.SECRETS_ACCESS_DENIED,
            "constraints.allow_secrets",
        ),
    ],
)
def test_each_refusal_has_a_stable_code_and_field(
    overrides: dict[str, Any], config: PolicyConfig, code: PolicyCode, field: str
) -> None:
    with pytest.raises(PolicyError) as info:
        evaluate(make(**overrides), config)
    assert info.value.code == code.value
    assert info.value.field == field
    assert info.value.http_status == 403


def test_boundaries_are_allowed() -> None:
    for budget in (30, 86_400):
        assert (
            evaluate(
                make(constraints={"time_budget_seconds": budget}), ALLOW_ACME
            ).constraints.time_budget_seconds
            == budget
        )
    permissive = PolicyConfig(allowed_repo_prefixes=("*",), allow_network=True, allow_secrets=True)
    task = make(constraints={"allow_network": True, "allow_secrets": True}, target={"repo": "other/x"})
    assert evaluate(task, permissive) == task


@pytest.mark.parametrize(
    ("repo", "prefixes", "allowed"),
    [
        ("acme/app", ("acme",), True),
        ("acme/app", ("acme/",), True),
        ("acmecorp/app", ("acme",), False),
        ("acme/app", ("acme/app",), True),
        ("acme/application", ("acme/app",), False),
        ("acme/svc-a", ("acme/svc-*",), True),
        ("acme/web", ("acme/svc-*",), False),
        ("any/thing", ("*",), True),
        ("acme/app", (), False),
        ("acme/app", ("", "  "), False),
        ("Acme/App", ("ACME",), True),
    ],
)
def test_repo_prefix_semantics(repo: str, prefixes: tuple[str, ...], allowed: bool) -> None:
    assert repo_allowed(repo, prefixes) is allowed


def test_version_hash_is_content_addressed() -> None:
    a = PolicyConfig(allowed_repo_prefixes=("acme",))
    b = PolicyConfig(allowed_repo_prefixes=("acme",))
    c = PolicyConfig(allowed_repo_prefixes=("acme", "beta"))
    assert a.version_hash == b.version_hash != c.version_hash
    assert a.version_hash.startswith("sha256:") and len(a.version_hash) == 71


def test_doctrine_can_only_tighten() -> None:
    base = PolicyConfig(allowed_repo_prefixes=("acme",), max_time_budget_seconds=600)
    tight = base.tightened(operations=frozenset({"docs", "deploy"}), max_time_budget_seconds=10_000)
    assert tight.allowed_operations == frozenset({"docs"})
    assert tight.max_time_budget_seconds == 600
    assert tight.version_hash != base.version_hash
    with pytest.raises(PolicyError) as info:
        evaluate(make(operation="ops"), tight)
    assert info.value.code == PolicyCode.OPERATION_NOT_ALLOWED_BY_DOCTRINE


tasks = st.builds(
    TaskCreateV1,
    requested_by=st.builds(
        RequestedBy,
        kind=st.sampled_from(["human", "agent", "system"]),
        id=storable_text(min_size=1, max_size=20),
    ),
    objective=storable_text(min_size=1, max_size=50).filter(lambda s: s.strip()),
    operation=st.one_of(
        st.sampled_from(["code_change", "docs", "analysis", "ops"]), storable_text(min_size=1, max_size=12)
    ),
    target=st.builds(Target, repo=st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,8}/[a-z0-9._-]{1,8}\Z")),
    constraints=st.builds(
        Constraints,
        time_budget_seconds=st.integers(min_value=-(2**31), max_value=2**31),
        allow_network=st.booleans(),
        allow_secrets=st.booleans(),
    ),
)
configs = st.builds(
    PolicyConfig,
    allowed_repo_prefixes=st.lists(storable_text(max_size=10), max_size=4).map(tuple),
    allow_network=st.booleans(),
    allow_secrets=st.booleans(),
)


@given(tasks, configs)
def test_evaluate_only_raises_policy_error_and_is_deterministic(
    task: TaskCreateV1, config: PolicyConfig
) -> None:
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(("allow", evaluate(task, config).canonical_json()))
        except PolicyError as error:
            outcomes.append(("deny", f"{error.code}:{error.field}:{error.message}"))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] == "allow":
        assert (
            config.min_time_budget_seconds
            <= task.constraints.time_budget_seconds
            <= config.max_time_budget_seconds
        )
        assert repo_allowed(task.target.repo, config.allowed_repo_prefixes)
