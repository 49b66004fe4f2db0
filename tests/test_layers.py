"""The arrows point one way (ARCHITECTURE.md): entry points → flows → tasks → core.

Checked on the source's imports, so a shortcut through the layers fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = [p for p in (REPO / "bananaflow").rglob("*.py") if "emulator" not in p.parts]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _under(name: str, *roots: str) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_core_imports_neither_prefect_nor_the_emulator_nor_upper_layers(path: Path) -> None:
    bad = {
        n
        for n in _imports(path)
        if _under(
            n,
            "prefect",
            "bananaflow.emulator",
            "bananaflow.flows",
            "bananaflow.tasks",
            "bananaflow.cli",
            "bananaflow.deployments",
        )
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((REPO / "flows").glob("*.py")), ids=lambda p: p.name)
def test_flows_import_no_other_flow_and_not_the_emulator(path: Path) -> None:
    bad = {
        n
        for n in _imports(path)
        if _under(n, "bananaflow.flows", "bananaflow.emulator", "bananaflow.cli", "flows")
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((REPO / "tasks").glob("*.py")), ids=lambda p: p.name)
def test_tasks_import_no_flow_and_not_the_emulator(path: Path) -> None:
    bad = {
        n
        for n in _imports(path)
        if _under(n, "bananaflow.flows", "bananaflow.emulator", "bananaflow.cli", "flows", "tasks")
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_emulator_does_not_reach_into_the_pipeline() -> None:
    upper = ("bananaflow.flows", "bananaflow.tasks", "bananaflow.cli", "prefect")
    for path in (REPO / "bananaflow" / "emulator").rglob("*.py"):
        bad = {n for n in _imports(path) if _under(n, *upper)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_init_writes_an_editable_project_from_the_package(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bananaflow.cli.app import app

    result = CliRunner().invoke(app, ["init", str(tmp_path / "proj")])
    assert result.exit_code == 0, result.output
    proj = tmp_path / "proj"
    for rel in (
        "configs/local.yaml",
        "configs/dev.yaml",
        "configs/prod.yaml",
        "prefect.yaml",
        "prompts/nightly.yaml",
    ):
        assert (proj / rel).is_file(), rel
    assert "bananaflow.flows.generate:generate_images" in (proj / "prefect.yaml").read_text()
    (proj / "configs/local.yaml").write_text("# mine\n")
    again = CliRunner().invoke(app, ["init", str(proj)])
    assert again.exit_code == 0 and "kept" in again.output
    assert (proj / "configs/local.yaml").read_text() == "# mine\n"  # never overwritten silently
