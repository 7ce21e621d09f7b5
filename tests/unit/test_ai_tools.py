"""Workspace tools: confinement, protected paths, exact edits, search, truncation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.ai.toolbox import Toolbox, truncate_for_model
from worker.ai.tools import ToolError, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def f():\n    return 1\n\ndef g():\n    return 1\n")
    (root / "README.md").write_text("# Demo\nhello world\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return Workspace(root)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "src/../../outside.txt", "../repo2/x"])
def test_paths_outside_the_workspace_are_refused(ws: Workspace, path: str) -> None:
    with pytest.raises(ToolError) as info:
        ws.read_file(path)
    assert info.value.code == "PATH_OUTSIDE_WORKSPACE"
    with pytest.raises(ToolError) as info:
        ws.write_file(path, "x")
    assert info.value.code == "PATH_OUTSIDE_WORKSPACE"


def test_symlink_leaving_the_workspace_is_refused_for_read_write_and_search(ws: Workspace) -> None:
    (ws.root / "passwd").symlink_to("/etc/passwd")
    (ws.root / "etc").symlink_to("/etc", target_is_directory=True)
    for path in ("passwd", "etc/passwd", "etc"):
        with pytest.raises(ToolError) as info:
            ws.read_file(path)
        assert info.value.code == "PATH_OUTSIDE_WORKSPACE"
    with pytest.raises(ToolError) as info:
        ws.write_file("passwd", "owned")
    assert info.value.code == "PATH_OUTSIDE_WORKSPACE"
    assert "root:" not in ws.search("root")
    with pytest.raises(ToolError):
        ws.list_dir("etc")


def test_dangling_symlink_pointing_outside_is_not_a_way_to_create_files(
    ws: Workspace, tmp_path: Path
) -> None:
    target = tmp_path / "outside" / "planted.txt"
    (ws.root / "out").symlink_to(target)
    with pytest.raises(ToolError) as info:
        ws.write_file("out", "x")
    assert info.value.code == "PATH_OUTSIDE_WORKSPACE"
    assert not target.exists()


def test_nested_git_directories_are_protected(ws: Workspace) -> None:
    with pytest.raises(ToolError) as info:
        ws.write_file("vendor/lib/.git/hooks/post-checkout", "#!/bin/sh\n")
    assert info.value.code == "PATH_NOT_ALLOWED"
    ws.write_file("docs/.gitignore", "*.tmp\n")  # only the .git directory itself is protected


def test_symlink_inside_the_workspace_is_followed(ws: Workspace) -> None:
    (ws.root / "link.py").symlink_to(ws.root / "src" / "app.py")
    assert "return 1" in ws.read_file("link.py")


def test_absolute_path_inside_the_workspace_is_allowed(ws: Workspace) -> None:
    assert "hello" in ws.read_file(str(ws.root / "README.md"))


@pytest.mark.parametrize(
    "path",
    [".git/config", ".git/hooks/pre-commit", "./.git/x", "src/../.git/config", ".github/workflows/ci.yml"],
)
def test_protected_paths_are_not_writable(ws: Workspace, path: str) -> None:
    with pytest.raises(ToolError) as info:
        ws.write_file(path, "x")
    assert info.value.code == "PATH_NOT_ALLOWED"
    assert (ws.root / ".git" / "config").read_text() == "[core]\n"
    assert not (ws.root / ".github").exists()


def test_symlink_into_git_is_not_a_way_to_write_it(ws: Workspace) -> None:
    (ws.root / "gitdir").symlink_to(ws.root / ".git", target_is_directory=True)
    with pytest.raises(ToolError) as info:
        ws.write_file("gitdir/config", "x")
    assert info.value.code == "PATH_NOT_ALLOWED"


def test_workflows_writable_when_policy_allows(ws: Workspace) -> None:
    allowed = Workspace(ws.root, allow_workflow_changes=True)
    allowed.write_file(".github/workflows/ci.yml", "on: push\n")
    assert (ws.root / ".github" / "workflows" / "ci.yml").read_text() == "on: push\n"
    with pytest.raises(ToolError):
        allowed.write_file(".git/config", "x")


def test_edit_file_needs_exactly_one_match(ws: Workspace) -> None:
    with pytest.raises(ToolError) as info:
        ws.edit_file("src/app.py", "return 1", "return 2")
    assert info.value.code == "EDIT_AMBIGUOUS"
    with pytest.raises(ToolError) as info:
        ws.edit_file("src/app.py", "return 3", "return 2")
    assert info.value.code == "EDIT_NO_MATCH"
    ws.edit_file("src/app.py", "def f():\n    return 1", "def f():\n    return 2")
    assert (ws.root / "src" / "app.py").read_text().startswith("def f():\n    return 2\n")


def test_list_dir_search_and_read_window(ws: Workspace) -> None:
    assert ws.list_dir(".").splitlines() == [".git/", "README.md", "src/"]
    hits = ws.search("return 1").splitlines()
    assert hits == ["src/app.py:2:    return 1", "src/app.py:5:    return 1"]
    assert ws.search(r"def \w\(", regex=True).count("src/app.py") == 2
    assert ws.search("[", regex=False) == "no matches"
    assert ws.read_file("src/app.py", offset=3, limit=1) == "def g():\n"


def test_search_skips_git_directory(ws: Workspace) -> None:
    assert ws.search("core") == "no matches"


def test_write_creates_parents(ws: Workspace) -> None:
    ws.write_file("docs/new/guide.md", "# Guide\n")
    assert (ws.root / "docs" / "new" / "guide.md").is_file()


def test_toolbox_reports_refusals_and_bad_input_as_errors(ws: Workspace) -> None:
    box = Toolbox(ws, ["read_file", "write_file", "finish"], None)
    outcome = box.run("read_file", {"path": "/etc/passwd"})
    assert outcome.is_error and outcome.code == "PATH_OUTSIDE_WORKSPACE"
    assert "root:" not in outcome.output
    outcome = box.run("write_file", {"path": "a.txt"})
    assert outcome.is_error and outcome.code == "INVALID_TOOL_INPUT"
    outcome = box.run("bash", {"command": "id"})
    assert outcome.is_error and outcome.code == "TOOL_NOT_AVAILABLE"


def test_bash_without_runner_is_a_configuration_error(ws: Workspace) -> None:
    with pytest.raises(ToolError) as info:
        Toolbox(ws, ["bash"], None)
    assert info.value.code == "AI_CONFIG_INVALID"


def test_truncation_keeps_head_and_tail_and_says_so() -> None:
    text = "A" * 10_000 + "B" * 10_000
    short, truncated = truncate_for_model(text, 3000)
    assert truncated
    assert short.startswith("A" * 2000) and short.endswith("B" * 1000)
    assert "output truncated: 17000 of 20000 characters omitted" in short
    assert truncate_for_model("small", 3000) == ("small", False)


def test_git_diff_is_read_only(tmp_path: Path) -> None:
    import subprocess

    root = tmp_path / "g"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "a.txt").write_text("one\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    subprocess.run(["git", "-C", str(root), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "init"], check=True, env=env)
    (root / "a.txt").write_text("two\n")
    before = (root / ".git" / "index").read_bytes()
    out = Workspace(root).git_diff()
    assert "-one" in out and "+two" in out and " M a.txt" in out
    assert (root / ".git" / "index").read_bytes() == before
