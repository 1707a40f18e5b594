"""The benchmark scripts use the package's public API only, and no test loads a script by path.

The scripts are read as text (never imported or run here): every ``msmt`` name they import must
exist, so a package change that breaks a script fails here rather than hours into a benchmark;
and nothing of tests/ (fixtures such as ``toy_panel``) may be imported by a script.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))
TEST_MODULES = {p.stem for p in (REPO / "tests").rglob("*.py")}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def _has(module: str, name: str) -> bool:
    """Whether ``from module import name`` would find ``name`` (an attribute or a submodule)."""
    mod = importlib.import_module(module)
    return hasattr(mod, name) or (hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None)


def test_scripts_import_existing_package_names_and_no_test_module():
    assert len(SCRIPTS) >= 10
    bad = []
    for path in SCRIPTS:
        for line, module, names in _imports(path):
            where = f"{path.name}:{line}"
            if module.split(".")[0] in TEST_MODULES:
                bad.append(f"{where}: imports {module} from tests/")
            if module.split(".")[0] != "msmt":
                continue
            bad += [f"{where}: {module} has no {name}" for name in names if not _has(module, name)]
    assert bad == []


def test_no_test_loads_a_script_by_path():
    here = Path(__file__).resolve()
    offenders = [p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("*.py") if p.resolve() != here
                 and any(s in p.read_text() for s in ("spec_from_file_location", "SourceFileLoader", "run_path("))]
    assert offenders == []
