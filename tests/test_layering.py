"""The package's parts form layers: a part imports only parts below it (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "msmt"
# lowest first; a module may import its own part and any part listed before it
LAYERS = [
    "spec",
    "runtime",
    "data",
    "synth",
    "layers",
    "models",
    "scoring",
    "evaluation",
    "training",
    "meta",
    "rundir",
    "experiments",
    "api",
    "serving",
    "commands",
    "cli",
]


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "msmt" or len(parts) < 2:
        return None
    # the package's __init__ (lazy exports of the API) and __main__ are entry points: the top layer
    return "cli" if parts[1] in ("__main__", "__init__") else parts[1]


def _is_part(name: str) -> bool:
    return (PACKAGE / name / "__init__.py").exists() or (PACKAGE / f"{name}.py").exists()


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "msmt":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "msmt":  # ``from msmt import spec``, not ``__version__``
            found += [(node.lineno, f"msmt.{a.name}") for a in node.names if _is_part(a.name)]
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _part("msmt." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if own is None:  # msmt/__init__.py
            continue
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own:
                continue
            if target not in LAYERS:
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: imports {module}, a part not in the layer list")
            elif LAYERS.index(target) > LAYERS.index(own):
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: {own} imports {module} (a higher part)")
    return bad


def test_every_part_is_a_layer():
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    parts |= {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert parts == set(LAYERS)


def test_no_part_imports_a_higher_part():
    assert upward_imports() == []


def test_validating_a_config_imports_no_model_or_training_code():
    code = (
        "import sys\n"
        "from msmt.spec.config import validate_experiment\n"
        "validate_experiment({'dataset': {'files': {'train': 'x.csv'}, 'scenario': {'column': 's'},"
        " 'tasks': [{'name': 'y', 'label': 'y', 'kind': 'binary'}]},"
        " 'model': {'name': 'm2m', 'm2m': {'num_experts': 3}}, 'loss': {'strategy': 'gradnorm'}})\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('msmt.')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['spec']"
