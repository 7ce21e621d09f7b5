"""Runners of the AI playbook steps: plan, agent, verify, diff_check and report."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from cwom.enums import ArtifactType
from worker import checkout as co
from worker.ai import (
    BUILTIN_TEMPLATES,
    PLAN_SCHEMA,
    AgentLimits,
    AgentResult,
    AIError,
    AIProvider,
    TemplateRegistry,
    ai_generate,
    build_system_prompt,
    run_agent,
)
from worker.ai.tools import BashRunner
from worker.ai_runtime import (
    AITotals,
    CancellableProvider,
    close_provider,
    doctrine_of,
    provider_from_settings,
    sandbox_bash_runner,
    telemetry_sink,
    verify_command,
)
from worker.ai_specs import (
    DOCS_DIRS,
    DOCS_SUFFIXES,
    AgentSpec,
    DiffCheckSpec,
    PlanSpec,
    ReportSpec,
    VerifySpec,
)
from worker.run_steps import StepStatus
from worker.steps import Runner, ShellSpec, StepContext, StepOutcome, run_shell

TEMPLATES = TemplateRegistry(BUILTIN_TEMPLATES)
WORKFLOWS = ".github/workflows/"
MAX_PLAN_FILES = 300


# -- shared helpers ---------------------------------------------------------------------------------


def deadline_of(ctx: StepContext, budget_seconds: float) -> float:
    """The monotonic time at which the run's budget (counted from the start of this attempt) is spent."""
    return ctx.started + budget_seconds


def run_totals(ctx: StepContext) -> AITotals:
    """The run's AI totals so far (kept in ctx.publish_info["ai"] for the manifest, the Run and the PR)."""
    return AITotals.from_dict(ctx.publish_info.get("ai"))


def _account(ctx: StepContext, step: AITotals) -> None:
    total = run_totals(ctx)
    total.merge(step)
    ctx.publish_info["ai"] = total.as_dict()


def _target(ctx: StepContext) -> dict[str, Any]:
    target = ctx.task.get("target")
    return target if isinstance(target, dict) else {}


def _provider(ctx: StepContext, provider: AIProvider | None) -> tuple[AIProvider, bool]:
    if provider is not None:
        return provider, False
    return provider_from_settings(ctx.settings), True


def _tracked_files(workspace: Path) -> list[str]:
    done = subprocess.run(
        ["git", *co.SAFE, "ls-files", "-z"], cwd=workspace, env=co.git_env(), capture_output=True, check=False
    )
    names = [p.decode("utf-8", "replace") for p in done.stdout.split(b"\0") if p]
    more = len(names) - MAX_PLAN_FILES
    return names[:MAX_PLAN_FILES] + ([f"... {more} more"] if more > 0 else [])


def plan_markdown(plan: dict[str, Any]) -> str:
    """The plan as the Markdown section of the PR description."""
    lines = ["## Plan", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(plan.get("steps") or [], 1)]
    files = plan.get("files") or []
    if files:
        lines += ["", "**Files:** " + ", ".join(f"`{f}`" for f in files)]
    risks = plan.get("risks") or []
    if risks:
        lines += ["", "**Risks:**"]
        lines += [f"- ({r.get('severity', '?')}) {r.get('risk', '')}" for r in risks if isinstance(r, dict)]
    return "\n".join(lines) + "\n"


def recorded_result(ctx: StepContext, step_id: str) -> dict[str, Any] | None:
    """A step's completed result.json from this run's trace (it may have run in an earlier attempt)."""
    for folder in sorted((ctx.trace.path / "steps").glob(f"*-{step_id}"), reverse=True):
        try:
            result = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and result.get("status") == "completed":
            return result
    return None


def restore_plan(ctx: StepContext, step_id: str = "plan") -> None:
    """Put a plan made in an earlier attempt (its step is skipped now) back into publish_info."""
    if "plan" in ctx.publish_info:
        return
    result = recorded_result(ctx, step_id)
    if result and isinstance(result.get("plan"), dict):
        ctx.publish_info["plan"] = result["plan"]
        ctx.publish_info["plan_markdown"] = plan_markdown(result["plan"])


# -- plan -------------------------------------------------------------------------------------------


def run_plan(ctx: StepContext, spec: PlanSpec, provider: AIProvider | None = None) -> StepOutcome:
    """ai_generate against PLAN_SCHEMA; the plan is the step output and part of the PR description."""
    remaining = deadline_of(ctx, spec.budget_seconds) - time.monotonic()
    if remaining <= 0:
        return StepOutcome.failed("TIME_BUDGET_EXCEEDED", "no time left in the run's budget for the plan")
    target = _target(ctx)
    variables = {
        "repo": str(target.get("repo", "")),
        "ref": str(target.get("ref") or "HEAD"),
        "objective": str(ctx.task.get("objective", "")),
        "files": "\n".join(_tracked_files(ctx.workspace)) if ctx.workspace is not None else "(no checkout)",
    }
    totals = AITotals()
    sink = telemetry_sink(lambda kind, data: ctx.trace.event(kind, data, step_id=spec.id), totals)
    chosen, owned = _provider(ctx, provider)
    try:
        plan = ai_generate(
            CancellableProvider(chosen, ctx.control.cancelled),
            template=TEMPLATES.get_ref(spec.template),
            variables=variables,
            schema=PLAN_SCHEMA,
            max_retries=spec.max_retries,
            timeout_s=min(spec.timeout_seconds, remaining),
            on_event=sink,
        )
    except AIError as exc:
        _account(ctx, totals)
        return StepOutcome.failed(exc.code, exc.message, ai=totals.as_dict(), attempts=exc.attempts or None)
    finally:
        if owned:
            close_provider(chosen)
    _account(ctx, totals)
    markdown = plan_markdown(plan)
    ctx.publish_info["plan"] = plan
    ctx.publish_info["plan_markdown"] = markdown
    output = {"plan": plan, "plan_markdown": markdown, "ai": totals.as_dict()}
    return StepOutcome(StepStatus.COMPLETED, output)


# -- agent ------------------------------------------------------------------------------------------


def agent_prompts(ctx: StepContext, spec: AgentSpec) -> tuple[str, str, str, int]:
    """System prompt, first user message, template id and version for this task."""
    target = _target(ctx)
    context: dict[str, Any] = {
        "operation": ctx.task.get("operation", ""),
        "objective": ctx.task.get("objective", ""),
        "target": target,
    }
    inputs = ctx.task.get("inputs")
    if isinstance(inputs, dict) and inputs:
        context["inputs"] = {k: v for k, v in inputs.items() if k not in ("approval",)}
    if "plan" in ctx.publish_info:
        context["plan"] = ctx.publish_info["plan"]
    doctrine = doctrine_of(ctx.task)
    verify = verify_command(ctx.task)
    if verify is not None:
        doctrine["verify"] = verify
    system, template = build_system_prompt(
        TEMPLATES, context=context, doctrine=doctrine, tools=spec.tools, template_ref=spec.system_template
    )
    objective = str(ctx.task.get("objective", ""))
    if spec.objective_template is not None:
        objective = TEMPLATES.get_ref(spec.objective_template).render(
            {"repo": target.get("repo", ""), "ref": target.get("ref") or "HEAD", "objective": objective}
        )
    return system, objective, template.id, template.version


def workflow_changes_allowed(ctx: StepContext, explicit: bool) -> bool:
    """Explicitly allowed by the spec, or by the repository's doctrine."""
    return explicit or doctrine_of(ctx.task).get("allow_workflow_changes") is True


def diff_digest(workspace: Path) -> str:
    """sha256 of the workspace's diff against HEAD (what replay compares)."""
    patch = co.workspace_diff(workspace).patch.encode("utf-8", "surrogateescape")
    return "sha256:" + hashlib.sha256(patch).hexdigest()


def run_agent_in(
    ctx: StepContext,
    spec: AgentSpec,
    provider: AIProvider,
    *,
    bash_runner: BashRunner | None,
    totals: AITotals,
) -> AgentResult:
    """The agent loop in ctx.workspace with every event traced (redacted by the TraceWriter)."""
    assert ctx.workspace is not None
    system, objective, template_id, template_version = agent_prompts(ctx, spec)
    limits = AgentLimits(
        max_turns=spec.max_turns,
        max_tokens=spec.max_tokens,
        deadline=deadline_of(ctx, spec.budget_seconds),
        max_cost_usd=spec.max_cost_usd,
        per_call_timeout_s=spec.per_call_timeout_seconds,
    )
    return run_agent(
        CancellableProvider(provider, ctx.control.cancelled),
        workspace=ctx.workspace,
        system_prompt=system,
        objective=objective,
        limits=limits,
        tools_enabled=spec.tools,
        bash_runner=bash_runner,
        on_event=telemetry_sink(lambda kind, data: ctx.trace.event(kind, data, step_id=spec.id), totals),
        template_id=template_id,
        template_version=template_version,
        allow_workflow_changes=workflow_changes_allowed(ctx, spec.allow_workflow_changes),
        tool_output_limit=spec.tool_output_limit,
    )


def run_agent_step(ctx: StepContext, spec: AgentSpec, provider: AIProvider | None = None) -> StepOutcome:
    """Run the agent; a limit ends the step with its stable code, a provider failure with the AI code."""
    if ctx.workspace is None:
        return StepOutcome.failed("NO_WORKSPACE", "the agent step needs a checkout first")
    deadline = deadline_of(ctx, spec.budget_seconds)
    if deadline <= time.monotonic():
        return StepOutcome.failed("TIME_BUDGET_EXCEEDED", "no time left in the run's budget for the agent")
    restore_plan(ctx)
    bash: BashRunner | None = None
    if "bash" in spec.tools:
        if ctx.sandbox is None:
            return StepOutcome.failed("SANDBOX_UNAVAILABLE", "the bash tool needs a sandbox; none works here")
        bash = sandbox_bash_runner(
            sandbox=ctx.sandbox,
            workspace=ctx.workspace,
            cancel=ctx.control.cancelled,
            deadline=deadline,
            allow_network=spec.allow_network,
            max_seconds=spec.command_timeout_seconds,
        )
    totals = AITotals()
    chosen, owned = _provider(ctx, provider)
    try:
        result = run_agent_in(ctx, spec, chosen, bash_runner=bash, totals=totals)
    except AIError as exc:
        _account(ctx, totals)
        return StepOutcome.failed(exc.code, exc.message, ai=totals.as_dict())
    finally:
        if owned:
            close_provider(chosen)
    _account(ctx, totals)
    refused = [c.name for c in result.tool_calls if c.code in ("PATH_OUTSIDE_WORKSPACE", "PATH_NOT_ALLOWED")]
    output: dict[str, Any] = {
        "stop_code": result.stop_code.value,
        "summary": result.summary,
        "turns": result.turns,
        "tool_calls": [c.name for c in result.tool_calls],
        "tool_errors": sum(1 for c in result.tool_calls if c.is_error),
        "refused_tool_calls": len(refused),
        "ai": totals.as_dict(),
    }
    # What the workspace looks like after the agent alone (verify may add files): replay compares this.
    output["diff_sha256"] = diff_digest(ctx.workspace)
    ctx.publish_info["agent_summary"] = result.summary
    if not result.ok:
        return StepOutcome.failed(
            result.stop_code.value,
            f"the agent stopped: {result.stop_code.value} after {result.turns} turns",
            **output,
        )
    return StepOutcome(StepStatus.COMPLETED, output)


# -- verify -----------------------------------------------------------------------------------------


def run_verify(ctx: StepContext, spec: VerifySpec) -> StepOutcome:
    """The doctrine's verify command in the sandbox; a non-zero exit is VERIFY_FAILED."""
    command = verify_command(ctx.task, spec.command)
    if command is None:
        ctx.trace.event(
            "verify.skipped", {"reason": "no verify command in the doctrine or inputs"}, step_id=spec.id
        )
        return StepOutcome(StepStatus.COMPLETED, {"skipped": True, "reason": "no verify command"})
    remaining = deadline_of(ctx, spec.budget_seconds) - time.monotonic()
    if remaining <= 0:
        return StepOutcome.failed("TIME_BUDGET_EXCEEDED", "no time left in the run's budget to verify")
    shell = ShellSpec(command, timeout_seconds=remaining, allow_network=spec.allow_network, id=spec.id)
    outcome = run_shell(ctx, shell)
    outcome.output["command"] = command
    if outcome.error_code == "COMMAND_FAILED":
        outcome.error_code = "VERIFY_FAILED"
        code = outcome.output.get("exit_code")
        outcome.error_message = f"verify command `{command[:200]}` exited with {code}"
    return outcome


# -- diff_check -------------------------------------------------------------------------------------


def is_docs_path(path: str) -> bool:
    """Docs and Markdown: *.md, *.mdx, *.rst, *.txt anywhere, or anything under docs/."""
    return path.lower().endswith(DOCS_SUFFIXES) or path.startswith(DOCS_DIRS)


def _escaping_symlink(workspace: Path, rel: str) -> bool:
    path = workspace / rel
    if not path.is_symlink():
        return False
    target = Path(os.path.realpath(path))
    return not target.is_relative_to(workspace.resolve())


def refused_paths(
    paths: list[str], workspace: Path, *, docs_only: bool, allow_workflows: bool, doctrine_paths: Any
) -> dict[str, list[str]]:
    """Changed paths policy refuses, by reason (empty when all are allowed)."""
    reasons: dict[str, list[str]] = {}

    def refuse(reason: str, path: str) -> None:
        reasons.setdefault(reason, []).append(path)

    globs = None
    if isinstance(doctrine_paths, list | tuple):
        from control_tower.github.doctrine import RepoDoctrine

        globs = RepoDoctrine(paths=tuple(str(g) for g in doctrine_paths), allow_workflow_changes=True)
    for path in paths:
        if path.startswith(WORKFLOWS) and not allow_workflows:
            refuse("workflow", path)
        if docs_only and not is_docs_path(path):
            refuse("not_docs", path)
        if globs is not None and not globs.path_allowed(path):
            refuse("outside_doctrine_paths", path)
        if _escaping_symlink(workspace, path):
            refuse("symlink_outside_workspace", path)
        if path == ".git" or path.startswith(".git/") or "/.git/" in f"/{path}":
            refuse("git_dir", path)
    return reasons


def run_diff_check(ctx: StepContext, spec: DiffCheckSpec) -> StepOutcome:
    """PATH_NOT_ALLOWED for a path policy refuses, DIFF_TOO_LARGE past the size limits."""
    if ctx.workspace is None:
        return StepOutcome.failed("NO_WORKSPACE", "diff_check needs a checkout first")
    diff = co.workspace_diff(ctx.workspace, max_bytes=spec.max_diff_bytes + 1)
    size = len(diff.patch.encode("utf-8", "surrogateescape"))
    output: dict[str, Any] = {
        "files": len(diff.paths),
        "paths": diff.paths[:200],
        "diff_bytes": size,
        "docs_only": spec.docs_only,
    }
    reasons = refused_paths(
        diff.paths,
        ctx.workspace,
        docs_only=spec.docs_only,
        allow_workflows=workflow_changes_allowed(ctx, spec.allow_workflow_changes),
        doctrine_paths=doctrine_of(ctx.task).get("paths"),
    )
    if reasons:
        ctx.trace.event("diff.refused", {"code": "PATH_NOT_ALLOWED", "reasons": reasons}, step_id=spec.id)
        shown = sorted({p for ps in reasons.values() for p in ps})
        return StepOutcome.failed(
            "PATH_NOT_ALLOWED",
            f"changes to {', '.join(shown[:10])} are not allowed ({', '.join(reasons)})",
            refused=reasons,
            **output,
        )
    if len(diff.paths) > spec.max_files or diff.truncated or size > spec.max_diff_bytes:
        ctx.trace.event(
            "diff.refused",
            {
                "code": "DIFF_TOO_LARGE",
                "files": len(diff.paths),
                "bytes": size,
                "max_files": spec.max_files,
                "max_bytes": spec.max_diff_bytes,
            },
            step_id=spec.id,
        )
        return StepOutcome.failed(
            "DIFF_TOO_LARGE",
            f"the change has {len(diff.paths)} files / {size} bytes; limits {spec.max_files} / "
            f"{spec.max_diff_bytes}",
            **output,
        )
    ctx.trace.event("diff.checked", output, step_id=spec.id)
    return StepOutcome(StepStatus.COMPLETED, output)


# -- report -----------------------------------------------------------------------------------------


def _recorded_summary(ctx: StepContext, step_id: str) -> str | None:
    """The agent's summary from its result.json (when the agent ran in an earlier attempt)."""
    result = recorded_result(ctx, step_id)
    return str(result["summary"]) if result and result.get("summary") else None


def render_report(ctx: StepContext, summary: str) -> str:
    """report.md: the question, the agent's answer and the run's AI totals."""
    totals = run_totals(ctx).as_dict()
    target = _target(ctx)
    return (
        f"# Analysis of {target.get('repo', '')}\n\n"
        f"> {str(ctx.task.get('objective', '')).strip()}\n\n"
        f"{summary.strip()}\n\n---\n"
        f"_Run {ctx.claim.run_id}: {totals['turns']} agent turns, {totals['tokens_total']} tokens "
        f"({totals['tokens_prompt']} prompt, {totals['tokens_output']} output), "
        f"cost ${totals['cost_usd']:.4f}._\n"
    )


def run_report(ctx: StepContext, spec: ReportSpec) -> StepOutcome:
    """Write report.md into the trace and record it as a `report` Artifact."""
    summary = ctx.publish_info.get("agent_summary") or _recorded_summary(ctx, spec.agent_step)
    if not summary:
        return StepOutcome.failed("REPORT_EMPTY", "the analysis produced no report")
    text = render_report(ctx, str(summary))
    path = ctx.trace.write_text("report.md", text)
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    ctx.artifacts.append(
        {
            "key": "report",
            "type": ArtifactType.REPORT.value,
            "title": "report.md",
            "uri": path.resolve().as_uri(),
            "digest": digest,
        }
    )
    ctx.publish_info["report_markdown"] = path.read_text("utf-8")
    return StepOutcome(StepStatus.COMPLETED, {"report": "report.md", "digest": digest, "chars": len(text)})


AI_RUNNERS: dict[str, Runner] = {
    "plan": run_plan,
    "agent": run_agent_step,
    "verify": run_verify,
    "diff_check": run_diff_check,
    "report": run_report,
}
