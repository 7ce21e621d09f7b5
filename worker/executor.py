"""The executor the Worker calls for each claim: load the task, run its playbook, trace, record, finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.doctrine import RepoDoctrine
from control_tower.logs import get_logger
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from cwom.base import utcnow
from cwom.enums import ArtifactType, RunStatus
from cwom.tables import DoctrineRefRow, RunRow, run_doctrine_refs
from policy.errors import ControlTowerError
from policy.redaction import Redactor
from worker import checkout as co
from worker.ai_runtime import record_ai_cost
from worker.artifacts import artifact_values
from worker.deferred import DeferredWrite, Deferrer
from worker.github.context import GitHubContext
from worker.github.hooks import GitHubHooks, PublishSpec
from worker.github.status import StatusView
from worker.playbooks import PlaybookRegistry, PlaybookRequest, default_registry
from worker.queue import Claim, Executor, LostLease, RunControl, RunQueue
from worker.run_steps import StepStatus, completed_step_ids
from worker.sandbox import Sandbox, SandboxUnavailable, probe_sandbox
from worker.steps import Runners, Spec, StepContext, StepOutcome, builtin_runners
from worker.summary import render_summary
from worker.trace import TraceWriter

log = get_logger(__name__)
# Steps whose rows are written together with the next step's (one transaction fewer each).
# diff_check and report (AI playbooks) only look at the workspace or write one file: no commit before them.
QUICK_STEPS = frozenset({"checkout", "collect", "diff_check", "report"})
# The write as a longer step starts waits this long: a step that ends sooner takes its rows along with
# the next write (for a quick run, its last), so GET /runs/{id} shows a step running from then on.
RUNNING_WRITE_DELAY = 0.2
Write = Callable[[Session], None]
_FINAL = {
    StepStatus.COMPLETED: RunStatus.DONE,
    StepStatus.FAILED: RunStatus.FAILED,
    StepStatus.WAITING: RunStatus.WAITING,
}


@dataclass(frozen=True)
class Loaded:
    """What the executor reads once per claim."""

    task: dict[str, Any]
    policy_version: str
    issue_id: str | None
    approvals: list[dict[str, Any]]
    completed: set[str]
    approval_reasons: list[str]
    created_at: str = ""


# What `_load` reads, built once (a select built per call cost more than its round trip).
_LOAD = (
    select(
        RunRow.issue_id,
        RunRow.telemetry,
        RunRow.created_at,
        TaskRow.body,
        TaskRow.policy_version,
        run_doctrine_refs.c.doctrine_ref_id,
        DoctrineRefRow.content,
        DoctrineRefRow.namespace,
    )
    .select_from(RunRow)
    .outerjoin(TaskRow, TaskRow.id == RunRow.task_id)
    .outerjoin(run_doctrine_refs, run_doctrine_refs.c.run_id == RunRow.id)
    .outerjoin(DoctrineRefRow, DoctrineRefRow.id == run_doctrine_refs.c.doctrine_ref_id)
    .where(RunRow.id == bindparam("run_id"))
)


class _Stop(Exception):
    """The run is no longer ours to continue (cancelled, lease lost, released)."""


class RunExecutor:
    """Runs one claim's playbook; shared by the worker's threads (per-run state lives in StepContext)."""

    def __init__(
        self,
        *,
        settings: Settings,
        factory: sessionmaker[Session],
        sandbox: Sandbox | None,
        sandbox_info: dict[str, Any],
        registry: PlaybookRegistry | None = None,
        runners: Runners | None = None,
        github: GitHubHooks | None = None,
    ) -> None:
        self.github = github
        self.settings = settings
        self.factory = factory
        self.sandbox = sandbox
        self.sandbox_info = sandbox_info
        self.registry = registry or default_registry()
        self.runners = dict(runners or builtin_runners())
        if github is not None:
            self.runners["publish"] = self._run_publish
        self.redactor = Redactor(named=settings.secret_values())
        # Step bookkeeping written while the step runs (write-behind); one write in flight per run.
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ct-step-writes")
        self._deferrer = Deferrer(self._writer)
        self.running_write_delay = RUNNING_WRITE_DELAY
        self._reclaimer = co.Reclaimer()

    def __call__(self, claim: Claim, control: RunControl) -> None:
        """Execute one attempt of a run to a final state, a wait, or a stop."""
        t0 = time.perf_counter()
        started_at = utcnow()
        timings: dict[str, float] = {}
        loaded = self._load(claim, control.queue)
        timings["db"] = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        trace = TraceWriter(self.settings.trace_root, claim.run_id, redactor=self.redactor)
        trace.write_json("task.json", loaded.task)
        trace.write_json(
            "policy.json",
            {
                "decision": "allow",
                "policy_version": loaded.policy_version,
                "approval_required": bool(loaded.approval_reasons),
                "approval_reasons": loaded.approval_reasons,
            },
        )
        trace.event(
            "run.claimed",
            {
                "attempt": claim.attempt,
                "worker_id": claim.worker_id,
                "task_id": claim.task_id,
                "sandbox": self.sandbox_info,
            },
        )
        timings["trace"] = (time.perf_counter() - t1) * 1000
        ctx = StepContext(
            settings=self.settings,
            factory=self.factory,
            queue=control.queue,
            claim=claim,
            control=control,
            trace=trace,
            redactor=self.redactor,
            sandbox=self.sandbox,
            task=loaded.task,
            issue_id=loaded.issue_id,
            approvals=loaded.approvals,
            timings=timings,
        )
        try:
            self._execute(ctx, loaded, started_at, t0)
        except _Stop:
            self._settle_quietly(ctx)
            self._stopped(ctx, started_at, t0)
        finally:
            self._settle_quietly(ctx)
            trace.close()
            ctx.trace.close()
            if ctx.workspace is not None and not self.settings.keep_workspaces:
                self._reclaimer.discard(ctx.workspace)

    def close(self) -> None:
        """Release what the executor keeps between runs (the sandbox's spares); the next run makes
        them again."""
        if self.sandbox is not None:
            self.sandbox.close()

    # -- the run --------------------------------------------------------------------------------------

    def _execute(self, ctx: StepContext, loaded: Loaded, started_at: Any, t0: float) -> None:
        gh = self._github_start(ctx, loaded)
        if isinstance(gh, StepOutcome):
            self._finish(ctx, [], gh, started_at, t0, pending=[])
            return
        try:
            steps = self.registry.build(PlaybookRequest(ctx.task, bool(loaded.approval_reasons)))
        except ControlTowerError as exc:
            self._finish(ctx, [], StepOutcome.failed(exc.code, exc.message), started_at, t0, pending=[])
            return
        if gh is not None and ctx.task.get("operation") != "analysis":
            steps = [*steps, PublishSpec()]
        pending: list[Write] = []
        outcome = StepOutcome(StepStatus.COMPLETED)
        results: list[dict[str, Any]] = []
        for n, spec in enumerate(steps, 1):
            ctx.n = n
            if ctx.control.cancelled.is_set():
                raise _Stop
            # Only decisions carry over to a new attempt: every other step's effect lives in the
            # workspace, which a new attempt starts afresh, so those steps run again.
            if spec.id in loaded.completed and spec.type == "approval":
                ctx.step_rows.end(
                    n,
                    spec.id,
                    spec.type,
                    StepStatus.SKIPPED,
                    output={"reason": "completed in an earlier attempt"},
                    started=False,
                )
                ctx.trace.event("step.skipped", {"n": n, "type": spec.type}, step_id=spec.id)
                results.append({"n": n, "step_id": spec.id, "type": spec.type, "status": "skipped"})
                continue
            ctx.step_rows.begin(n, spec.id, spec.type)
            if spec.type not in QUICK_STEPS:
                # Written as a step that may take long starts, so GET /runs/{id} shows it running. The
                # write goes on beside the step: a lost lease found by it stops the step (control.stop)
                # and surfaces at the next flush, which waits for it first.
                self._flush(ctx, pending, background=True)
            ctx.trace.event("step.started", {"n": n, "type": spec.type}, step_id=spec.id)
            outcome = self._run_step(ctx, spec)
            if ctx.control.cancelled.is_set():
                raise _Stop
            ctx.trace.write_step_result(
                n,
                spec.id,
                {
                    "n": n,
                    "step_id": spec.id,
                    "type": spec.type,
                    "attempt": ctx.claim.attempt,
                    "status": outcome.status.value,
                    "error_code": outcome.error_code,
                    "error_message": outcome.error_message,
                    **outcome.output,
                },
            )
            ctx.trace.event(
                "step.finished",
                {"n": n, "status": outcome.status.value, "error_code": outcome.error_code},
                step_id=spec.id,
            )
            results.append(
                {
                    "n": n,
                    "step_id": spec.id,
                    "type": spec.type,
                    "status": outcome.status.value,
                    "error_code": outcome.error_code,
                }
            )
            ctx.step_rows.end(
                n,
                spec.id,
                spec.type,
                outcome.status,
                output=outcome.output,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
            )
            if outcome.status is not StepStatus.COMPLETED:
                break
        self._finish(ctx, results, outcome, started_at, t0, pending=pending)

    def _run_step(self, ctx: StepContext, spec: Spec) -> StepOutcome:
        try:
            runner = self.runners.get(spec.type)
            if runner is None:
                return StepOutcome.failed("NO_EXECUTOR", f"no runner for step type {spec.type!r}")
            return runner(ctx, spec)
        except ControlTowerError as exc:
            return StepOutcome.failed(exc.code, exc.message)
        except Exception as exc:
            log.exception("step.error", run_id=ctx.claim.run_id, step_id=spec.id)
            return StepOutcome.failed("STEP_ERROR", f"{type(exc).__name__}: {exc}"[:2000])

    def _finish(
        self,
        ctx: StepContext,
        results: list[dict[str, Any]],
        outcome: StepOutcome,
        started_at: Any,
        t0: float,
        *,
        pending: list[Write],
    ) -> None:
        status = _FINAL.get(outcome.status, RunStatus.FAILED)
        event = "run.waiting" if status is RunStatus.WAITING else "run.finished"
        ctx.trace.event(
            event,
            {
                "status": status.value,
                "error_code": outcome.error_code,
                "error_message": outcome.error_message,
            },
        )
        t1 = time.perf_counter()
        ctx.trace.write_text(
            "summary.md",
            render_summary(
                run_id=ctx.claim.run_id,
                task=ctx.task,
                status=status.value,
                attempt=ctx.claim.attempt,
                steps=results,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
                sandbox=self.sandbox_info,
            ),
        )
        ctx.timed("trace", t1)
        ended_at = utcnow()
        ctx.timings["total"] = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        manifest = ctx.trace.finalize(self._manifest_fields(ctx, status.value, outcome, started_at, ended_at))
        ctx.timed("trace", t1)
        final = status is not RunStatus.WAITING
        if final:
            ctx.artifacts.append(
                {
                    "key": "trace",
                    "type": ArtifactType.TRACE.value,
                    "title": f"trace of run {ctx.claim.run_id}",
                    "uri": ctx.trace.path.resolve().as_uri(),
                    "digest": manifest["digest"],
                }
            )
        # The last step rows and the artifacts go with the transition: one statement on PostgreSQL,
        # fenced by it, their audit rows chained with its own (the AI cost still takes a fenced
        # transaction of its own before it).
        new_artifacts = [
            artifact_values(
                run_id=ctx.claim.run_id, issue_id=ctx.issue_id, trace_id=ctx.claim.trace_id, **art
            )
            for art in ctx.artifacts
        ]
        ai = ctx.publish_info.get("ai")
        if ai:  # AI token/cost totals of this attempt onto the CWOM Run's `cost`
            pending.append(
                lambda s: record_ai_cost(s, run_id=ctx.claim.run_id, attempt=ctx.claim.attempt, totals=ai)
            )
        t1 = time.perf_counter()
        if pending:
            self._flush(ctx, pending)
        else:
            self._settle(ctx)
        steps = ctx.step_rows.take() if ctx.step_rows.pending() else None
        moved = ctx.queue.transition(
            ctx.claim,
            status,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            telemetry={
                "timings_ms": {k: round(v, 2) for k, v in ctx.timings.items()},
                **({"ai": ai} if ai else {}),
            },
            steps=steps,
            artifacts=new_artifacts,
        )
        ctx.timed("db", t1)
        if not moved:
            # The claim lost the run before its last write (no write of this attempt since its start
            # told it earlier): the sealed trace no longer describes the run. Reopened, its manifest
            # is gone and the stop is recorded as for any lost run (sealed again if it was cancelled).
            if ctx.control.reason is None:
                cancelled = ctx.queue.status(ctx.claim.run_id) == RunStatus.CANCELLED.value
                ctx.control.stop("cancelled" if cancelled else "lease_lost")
            ctx.trace = TraceWriter(self.settings.trace_root, ctx.claim.run_id, redactor=self.redactor)
            (ctx.trace.path / "summary.md").unlink(missing_ok=True)  # it told an end that did not happen
            raise _Stop
        self._github_status(ctx, status.value, outcome, results)
        log.info(
            "run.finished",
            run_id=ctx.claim.run_id,
            status=status.value,
            error_code=outcome.error_code,
            timings_ms={k: round(v, 1) for k, v in ctx.timings.items()},
        )

    def _stopped(self, ctx: StepContext, started_at: Any, t0: float) -> None:
        """Cancelled: seal the trace as cancelled. Lease lost or released: leave it to the next attempt."""
        reason = ctx.control.reason or "lease_lost"
        ctx.trace.event("run.stopped", {"reason": reason})
        if reason == "cancelled":
            ctx.timings["total"] = (time.perf_counter() - t0) * 1000
            outcome = StepOutcome.failed("CANCELLED", "the run was cancelled")
            ctx.trace.finalize(
                self._manifest_fields(ctx, RunStatus.CANCELLED.value, outcome, started_at, utcnow())
            )
            self._github_status(ctx, RunStatus.CANCELLED.value, outcome, [])
        log.info("run.stopped", run_id=ctx.claim.run_id, reason=reason)

    # -- GitHub ---------------------------------------------------------------------------------------

    def _github_start(self, ctx: StepContext, loaded: Loaded) -> GitHubContext | StepOutcome | None:
        """For GitHub runs: 👀, live permission, the repository's doctrine; a refusal fails the run."""
        gh = self.github.context(ctx.task) if self.github is not None else None
        if gh is None or self.github is None:
            return None
        ctx.publish_info["github"] = gh
        ctx.publish_info["commit_date"] = loaded.created_at
        try:
            doctrine = self.github.start(
                ctx=gh,
                run_id=ctx.claim.run_id,
                task=ctx.task,
                trace_id=ctx.claim.trace_id,
                session_scope=lambda: ctx.queue.fenced(ctx.claim),
            )
        except LostLease as exc:
            raise _Stop from exc
        except ControlTowerError as exc:
            ctx.trace.event("github.refused", exc.to_dict())
            return StepOutcome.failed(exc.code, exc.message)
        if doctrine is not None:
            ctx.publish_info["doctrine"] = doctrine
            metadata = dict(ctx.task.get("metadata") or {})
            metadata["doctrine"] = doctrine.model_dump(
                mode="json", exclude={"operations", "approval_required"}
            )
            ctx.task = {**ctx.task, "metadata": metadata}
            if ctx.task.get("operation") in doctrine.approval_operations():
                loaded.approval_reasons.append(f"doctrine:{gh.repo}")
            ctx.trace.event("doctrine.loaded", {"hash": doctrine.content_hash, "repo": gh.repo})
        self._github_status(ctx, RunStatus.RUNNING.value, None, [])
        return gh

    def _github_status(
        self, ctx: StepContext, status: str, outcome: StepOutcome | None, results: list[dict[str, Any]]
    ) -> None:
        gh = ctx.publish_info.get("github")
        if self.github is None or not isinstance(gh, GitHubContext):
            return
        ai = ctx.publish_info.get("ai") or {}
        summary = ctx.publish_info.get("report_markdown") or ctx.publish_info.get("agent_summary")
        view = StatusView(
            run_id=ctx.claim.run_id,
            status=status,
            operation=str(ctx.task.get("operation", "")),
            trace_url=self.github.trace_url(ctx.claim.run_id),
            summary=str(summary) if summary else None,
            error_code=outcome.error_code if outcome is not None else None,
            error_message=outcome.error_message if outcome is not None else None,
            steps=[(str(r["step_id"]), str(r["status"])) for r in results],
            pull_url=ctx.publish_info.get("pull_url"),
            tokens_prompt=ai.get("tokens_prompt"),
            tokens_output=ai.get("tokens_output"),
            cost_usd=ai.get("cost_usd"),
        )
        self.github.status(ctx=gh, view=view, issue_id=ctx.issue_id, trace_id=ctx.claim.trace_id)

    def _run_publish(self, ctx: StepContext, spec: Any) -> StepOutcome:
        gh = ctx.publish_info.get("github")
        if self.github is None or not isinstance(gh, GitHubContext):
            return StepOutcome(StepStatus.SKIPPED, {"reason": "not a GitHub run"})
        number = gh.issue_number
        title = str(ctx.task.get("objective") or "Control Tower changes").splitlines()[0][:120]
        body_parts = [f"Closes #{number}.", "", f"Run `{ctx.claim.run_id}` by Control Tower."]
        if ctx.publish_info.get("plan_markdown"):
            body_parts += ["", "## Plan", "", str(ctx.publish_info["plan_markdown"])]
        if ctx.publish_info.get("agent_summary"):
            body_parts += ["", "## Summary", "", str(ctx.publish_info["agent_summary"])]
        body_parts += ["", f"Trace: {self.github.trace_url(ctx.claim.run_id)}"]
        output = self.github.publish(
            ctx=gh,
            step_ctx=ctx,
            doctrine=ctx.publish_info.get("doctrine"),
            title=title,
            body=ctx.redactor.redact_text("\n".join(body_parts)),
        )
        return StepOutcome(StepStatus.COMPLETED, output)

    # -- database -------------------------------------------------------------------------------------

    def _flush(self, ctx: StepContext, pending: list[Write], *, background: bool = False) -> None:
        """Apply queued step writes in one fenced transaction (a stale worker writes nothing).

        Writes keep their order: a flush first waits for the one still running in the background.
        """
        self._settle(ctx)
        batch = list(pending)
        pending.clear()
        phase = "db_background" if background else "db"
        steps = ctx.step_rows.take() if ctx.step_rows.pending() else None
        if not batch and steps is None:
            return
        if background and not batch and steps is not None and self.running_write_delay > 0:
            ctx.writes = self._deferrer.submit(
                lambda: self._write(ctx, [], steps, phase), delay=self.running_write_delay, payload=steps
            )
        elif background:
            ctx.writes = self._writer.submit(self._write, ctx, batch, steps, phase)
        else:
            self._write(ctx, batch, steps, phase)

    def _write(
        self,
        ctx: StepContext,
        batch: list[Write],
        steps: tuple[list[dict[str, Any]], str | None] | None,
        phase: str,
    ) -> None:
        """Step rows first, then `batch`, in one fenced transaction (on PostgreSQL, step rows alone are
        one fenced statement: no ORM transaction)."""
        t1 = time.perf_counter()
        try:
            if not batch and steps is not None and ctx.queue.writes_steps_directly:
                ctx.queue.write_steps(ctx.claim, *steps)
                return
            with ctx.queue.fenced(ctx.claim, steps=steps) as session:
                for write in batch:
                    write(session)
        except LostLease as exc:
            if ctx.control.reason is None:
                ctx.control.stop("lease_lost")
            raise _Stop from exc
        finally:
            ctx.timed(phase, t1)

    @staticmethod
    def _settle(ctx: StepContext, *, take_back: bool = True) -> None:
        """Wait for the background write, re-raising what it raised (_Stop for a lost lease). One that
        has not started yet is taken back (its rows go with the next write), or with `take_back=False`
        run now."""
        inflight, ctx.writes = ctx.writes, None
        if inflight is None:
            return
        if isinstance(inflight, DeferredWrite) and take_back and inflight.cancel():
            ctx.step_rows.restore(*inflight.payload)
            return
        inflight.result()

    @staticmethod
    def _settle_quietly(ctx: StepContext) -> None:
        """On the way out of a stopped or failed attempt: wait, but the first error already decided."""
        try:
            RunExecutor._settle(ctx, take_back=False)
        except Exception:
            log.debug("step.write_dropped", run_id=ctx.claim.run_id)

    def _load(self, claim: Claim, queue: RunQueue) -> Loaded:
        # One round trip: the run, its task and its doctrines. On PostgreSQL that is one statement in
        # autocommit on the queue's kept connection; elsewhere one row per doctrine (or one without).
        # Steps completed by an earlier attempt can only exist from the second attempt on.
        if queue.loads_directly and claim.attempt == 1:
            row = queue.load(claim.run_id)
            if row is None:
                raise NoResultFound(f"no run {claim.run_id}")
            return self._loaded(row, [(content, namespace) for content, namespace in row.doctrines], set())
        with self.factory() as session:
            rows = session.connection().execute(_LOAD, {"run_id": claim.run_id}).all()
            if not rows:
                raise NoResultFound(f"no run {claim.run_id}")
            completed = (
                completed_step_ids(session, claim.run_id, before_attempt=claim.attempt)
                if claim.attempt > 1
                else set()
            )
        doctrines = [(r.content, r.namespace) for r in rows if r.doctrine_ref_id is not None]
        return self._loaded(rows[0], doctrines, completed)

    def _loaded(self, run: Any, doctrines: list[tuple[Any, str]], completed: set[str]) -> Loaded:
        task = dict(run.body) if run.body is not None else {}
        operation = str(task.get("operation", ""))
        reasons: list[str] = []
        if (task.get("inputs") or {}).get("approval") is True:
            reasons.append("inputs.approval")
        if operation in self.settings.policy_config().approval_required_operations:
            reasons.append("policy")
        for content, namespace in doctrines:
            if content and operation in RepoDoctrine.model_validate(content).approval_operations():
                reasons.append(f"doctrine:{namespace}")
        approvals = run.telemetry.get("approvals", []) if isinstance(run.telemetry, dict) else []
        return Loaded(
            task=task,
            policy_version=run.policy_version or "",
            issue_id=run.issue_id,
            approvals=[a for a in approvals if isinstance(a, dict)],
            completed=completed,
            approval_reasons=reasons,
            created_at=run.created_at.astimezone(UTC).isoformat(),
        )

    def _manifest_fields(
        self, ctx: StepContext, status: str, outcome: StepOutcome, started_at: Any, ended_at: Any
    ) -> dict[str, Any]:
        return {
            "run_id": ctx.claim.run_id,
            "task_id": ctx.claim.task_id,
            "trace_id": ctx.claim.trace_id,
            "status": status,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "attempt": ctx.claim.attempt,
            "worker_id": ctx.claim.worker_id,
            "started_at": started_at,
            "ended_at": ended_at,
            "duration_ms": round((ended_at - started_at).total_seconds() * 1000, 1),
            "sandbox": self.sandbox_info,
            "sandbox_limits": ctx.publish_info.get("sandbox_limits", {}),
            "timings_ms": {k: round(v, 2) for k, v in ctx.timings.items()},
            "commit": ctx.checkout.commit if ctx.checkout else None,
            "tokens": ctx.publish_info.get("ai"),  # AI totals: tokens, cost, calls, turns, latency
        }


def probe(requested: str, *, spares: int = 0) -> tuple[Sandbox | None, dict[str, Any]]:
    """The usable sandbox (None when no tier works: shell steps then fail SANDBOX_UNAVAILABLE), logged."""
    try:
        sandbox = probe_sandbox(requested, spares=spares)
    except SandboxUnavailable as exc:
        info: dict[str, Any] = {
            "tier": None,
            "available": False,
            "requested": requested,
            "error": exc.message,
        }
        log.warning("worker.sandbox", **info)
        return None, info
    info = {**sandbox.describe(), "requested": requested}
    log.info("worker.sandbox", tier=info.get("tier"), requested=requested, cgroup=info.get("cgroup"))
    return (sandbox if sandbox.available else None), info


def build_executor(
    settings: Settings,
    factory: sessionmaker[Session],
    *,
    registry: PlaybookRegistry | None = None,
    runners: Runners | None = None,
    github: GitHubHooks | None = None,
) -> Executor:
    """The executor for this worker process; the sandbox tier is probed once, here, and logged."""
    usable, info = probe(settings.sandbox, spares=settings.sandbox_spares)
    return RunExecutor(
        settings=settings,
        factory=factory,
        sandbox=usable,
        sandbox_info=info,
        registry=registry,
        runners=runners,
        github=github,
    )
