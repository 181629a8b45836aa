"""The domain library stays free of orchestration: no module of `emailsync/` (the CLI, `emailsync/cli/`,
and the demo, which start flows and deployments, aside) imports Prefect, `flows` or `deployments`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "emailsync"
ALLOWED = {*(PACKAGE / "cli").glob("*.py"), PACKAGE / "demo.py"}
FORBIDDEN = ("prefect", "flows", "deployments", "tasks")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (also lazily inside functions or TYPE_CHECKING)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def domain_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path not in ALLOWED)


@pytest.mark.parametrize("path", domain_modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_domain_module_imports_no_orchestration(path: Path):
    offending = {module for module in imported_modules(path) if module.split(".")[0] in FORBIDDEN}
    assert not offending, f"{path.relative_to(PACKAGE.parent)} imports {sorted(offending)}"


def test_the_walk_sees_lazy_imports(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prefect import flow\n    import flows.email_sync\n")
    assert imported_modules(module) == {"prefect", "flows.email_sync"}
