"""Playbook step types (checkout, approval, shell, collect): typed specs and the code that runs each."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy.orm import Session, sessionmaker

from control_tower.settings import Settings
from cwom.enums import ArtifactType
from policy.redaction import Redactor
from worker import checkout as co
from worker.ai_specs import AISpec
from worker.deferred import DeferredWrite
from worker.queue import Claim, RunControl, RunQueue
from worker.run_steps import StepStatus
from worker.sandbox import Sandbox, SandboxLimits
from worker.step_rows import StepRows
from worker.trace import TraceWriter

StepType = Literal["checkout", "approval", "shell", "collect"]
OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class CheckoutSpec:
    """Clone the target repository at the task's ref into a fresh workspace."""

    id: str = "checkout"
    type: Literal["checkout"] = "checkout"


@dataclass(frozen=True)
class ApprovalSpec:
    """Wait until someone approves (or rejects) the run."""

    id: str = "approval"
    prompt: str = "approve this run"
    type: Literal["approval"] = "approval"


@dataclass(frozen=True)
class ShellSpec:
    """Run `sh -c command` in the checkout, inside the sandbox, within the time budget."""

    command: str
    timeout_seconds: float
    allow_network: bool = False
    id: str = "shell"
    type: Literal["shell"] = "shell"


@dataclass(frozen=True)
class CollectSpec:
    """Record what the run changed: diff.patch and its Artifact."""

    id: str = "collect"
    type: Literal["collect"] = "collect"


StepSpec = CheckoutSpec | ApprovalSpec | ShellSpec | CollectSpec | AISpec


class Spec(Protocol):
    """What every step spec has: an id unique in its playbook and the type naming its runner."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...


@dataclass
class StepOutcome:
    """How one step ended."""

    status: StepStatus
    output: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def failed(cls, code: str, message: str, **output: Any) -> StepOutcome:
        return cls(StepStatus.FAILED, dict(output), code, message)


@dataclass
class StepContext:
    """Everything a step may use; built by the executor for one claim."""

    settings: Settings
    factory: sessionmaker[Session]
    queue: RunQueue
    claim: Claim
    control: RunControl
    trace: TraceWriter
    redactor: Redactor
    sandbox: Sandbox | None
    task: dict[str, Any]
    issue_id: str | None
    approvals: list[dict[str, Any]]
    workspace: Path | None = None
    checkout: co.Checkout | None = None
    artifacts: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    n: int = 0
    # AI steps: plan, agent summary, report and token/cost totals, for the PR, the comment and the manifest.
    publish_info: dict[str, Any] = field(default_factory=dict)
    # When this attempt started (time.monotonic()); AI steps count the time budget from here.
    started: float = field(default_factory=time.monotonic)
    # The executor's step bookkeeping still being written in the background (at most one at a time).
    writes: Future[None] | DeferredWrite | None = None
    # Step-row changes not yet written (the next flush writes them, in one upsert).
    step_rows: StepRows = field(default_factory=StepRows)

    def timed(self, phase: str, started: float) -> None:
        """Add the time since `started` (perf_counter) to a phase of the overhead breakdown."""
        self.timings[phase] = self.timings.get(phase, 0.0) + (time.perf_counter() - started) * 1000


def run_checkout(ctx: StepContext, spec: CheckoutSpec) -> StepOutcome:
    """Fresh clone into `{WORKSPACE_ROOT}/{run_id}` (an earlier attempt's workspace is discarded)."""
    target = ctx.task.get("target") or {}
    dest = co.workspace_path(ctx.settings.workspace_root, ctx.claim.run_id)
    started = time.perf_counter()
    try:
        result = co.clone(
            ctx.settings.git_base_url, str(target["repo"]), str(target.get("ref") or "main"), dest
        )
    except co.CheckoutFailed as exc:
        return StepOutcome.failed(exc.code, exc.message)
    finally:
        ctx.timed("checkout", started)
    ctx.workspace, ctx.checkout = result.path, result
    return StepOutcome(
        StepStatus.COMPLETED, {"repo": target["repo"], "ref": result.ref, "commit": result.commit}
    )


def run_approval(ctx: StepContext, spec: ApprovalSpec) -> StepOutcome:
    """Completed when this step was approved on resume; otherwise the run waits."""
    for decision in reversed(ctx.approvals):
        if decision.get("step") == spec.id and decision.get("decision") == "approve":
            data = {
                "decision": "approve",
                "by": decision.get("by"),
                "note": decision.get("note"),
                "at": decision.get("at"),
            }
            ctx.trace.event("approval.decided", data, step_id=spec.id)
            return StepOutcome(StepStatus.COMPLETED, data)
    ctx.trace.event("approval.waiting", {"prompt": spec.prompt}, step_id=spec.id)
    return StepOutcome(StepStatus.WAITING, {"prompt": spec.prompt})


def _sandbox_env() -> dict[str, str]:
    # Nothing from the worker's environment: no token can reach the step.
    home = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs, not the host's /tmp
    # PYTHONDONTWRITEBYTECODE: a test command must not leave __pycache__/ in the diff that gets published.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_shell(ctx: StepContext, spec: ShellSpec) -> StepOutcome:
    """`sh -c` in the sandbox; logs redacted into the step folder; budget and cancel enforced."""
    if ctx.sandbox is None:
        return StepOutcome.failed(
            "SANDBOX_UNAVAILABLE", "no sandbox tier works on this host; refusing to run"
        )
    if ctx.workspace is None:
        return StepOutcome.failed("NO_WORKSPACE", "the shell step needs a checkout first")
    limits = SandboxLimits(wall_seconds=spec.timeout_seconds)
    ctx.publish_info.setdefault("sandbox_limits", {})[spec.id] = dataclasses.asdict(limits)
    ctx.trace.event(
        "command.started",
        {
            "argv": ["sh", "-c", spec.command],
            "network": spec.allow_network,
            "timeout_seconds": spec.timeout_seconds,
            "limits": dataclasses.asdict(limits),
        },
        step_id=spec.id,
    )
    started = time.perf_counter()
    try:
        result = ctx.sandbox.run(
            ["sh", "-c", spec.command],
            workspace=ctx.workspace,
            limits=limits,
            allow_network=spec.allow_network,
            env=_sandbox_env(),
            cancel=ctx.control.cancelled,
        )
    finally:
        ctx.timed("sandbox", started)
    started = time.perf_counter()
    # The sandbox keeps at most limits.output_bytes of each stream; nothing unredacted touches the disk.
    stdout, stderr = result.stdout, result.stderr
    ctx.trace.write_step_logs(ctx.n, spec.id, stdout=stdout, stderr=stderr)
    output: dict[str, Any] = {
        "exit_code": result.exit_code,
        "duration_ms": round(result.duration_s * 1000, 1),
        "killed_reason": result.killed_reason,
        "stdout_bytes": result.stdout_bytes,
        "stderr_bytes": result.stderr_bytes,
        "truncated": result.truncated,
    }
    summary = {**output, "stdout_tail": _tail(stdout), "stderr_tail": _tail(stderr)}
    ctx.trace.event("command.finished", summary, step_id=spec.id)
    ctx.timed("trace", started)
    if result.killed_reason is not None:
        code = str(result.killed_reason)
        return StepOutcome.failed(code, f"command killed: {code}", **output)
    if result.exit_code != 0:
        return StepOutcome.failed("COMMAND_FAILED", f"command exited with {result.exit_code}", **output)
    return StepOutcome(StepStatus.COMPLETED, output)


def run_collect(ctx: StepContext, spec: CollectSpec) -> StepOutcome:
    """diff.patch when the workspace changed, recorded as a patch Artifact (fenced)."""
    if ctx.workspace is None:
        return StepOutcome(StepStatus.COMPLETED, {"changed": False})
    started = time.perf_counter()
    snapshot = ctx.checkout.snapshot if ctx.checkout is not None else None
    diff = co.workspace_diff(ctx.workspace, snapshot=snapshot)
    ctx.timed("checkout", started)
    if not diff.paths:
        return StepOutcome(StepStatus.COMPLETED, {"changed": False, "paths": []})
    started = time.perf_counter()
    path = ctx.trace.write_text("diff.patch", diff.patch)
    ctx.timed("trace", started)
    digest = _sha256(path)
    ctx.artifacts.append(
        {
            "key": "patch",
            "type": ArtifactType.PATCH.value,
            "title": "diff.patch",
            "uri": path.resolve().as_uri(),
            "digest": digest,
        }
    )
    return StepOutcome(
        StepStatus.COMPLETED,
        {
            "changed": True,
            "paths": diff.paths[:200],
            "files": len(diff.paths),
            "truncated": diff.truncated,
            "digest": digest,
        },
    )


def _tail(data: bytes) -> str:
    return data[-OUTPUT_TAIL:].decode("utf-8", "replace")


def _sha256(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


Runner = Callable[[StepContext, Any], StepOutcome]


def builtin_runners() -> dict[str, Runner]:
    """Runners of the built-in step types, by type; executors may be given more (agent, plan...)."""
    return {"checkout": run_checkout, "approval": run_approval, "shell": run_shell, "collect": run_collect}


Runners = Mapping[str, Runner]
