"""The package's layout (issue 17): modules in layers without a circle, no hidden imports, short functions.

``pyproject.toml``'s import-linter contract is the rule; these tests run it (where import-linter is installed,
as in ``make test``) and check the same with ``ast`` alone, so a new circle fails CI either way.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cce_core"
#: The longest function allowed without a reason ("Long because ...") in its docstring, in lines.
MAX_LINES = 60
#: Where a function may import a module of the package: the command line, to start fast (see its comment).
LAZY_IMPORTS_ALLOWED = {"__main__"}


def layers() -> list[list[str]]:
    """The layers of the import-linter contract, top first, each a list of module names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def modules() -> dict[str, ast.Module]:
    """Each module of the package as one syntax tree; a subpackage (``report/``) is one module of the contract, its
    files' trees joined, its relative imports read from the package (``from ..stats``: ``stats``; ``from .seeds``,
    inside the subpackage: not a module of the contract)."""
    out = {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}
    for sub in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        trees = [ast.parse(p.read_text(), str(p)) for p in sorted(sub.glob("*.py"))]
        for node in (n for t in trees for n in ast.walk(t)):
            if isinstance(node, ast.ImportFrom) and node.level:
                node.level -= 1
        out[sub.name] = ast.Module(body=[n for t in trees for n in t.body], type_ignores=[])
    return out


def imported(node: ast.AST) -> set[str]:
    """The package's modules an import statement names (``from . import x``, ``from .x import y``,
    ``import cce_core.x``, ``from cce_core.x import y``)."""
    out = set()
    if isinstance(node, ast.ImportFrom):
        if node.level == 1 and node.module is None:
            out |= {a.name for a in node.names}
        elif node.level == 1:
            out.add(node.module.split(".")[0])
        elif node.module and node.module.split(".")[0] == "cce_core":
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    elif isinstance(node, ast.Import):
        out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cce_core.")}
    return out


def test_every_module_is_in_one_layer():
    named = [m for layer in layers() for m in layer]
    assert len(named) == len(set(named)), "a module is named in two layers"
    assert set(named) == set(modules()), f"modules not in the contract: {set(modules()) - set(named)}"


def test_modules_import_only_modules_below_them():
    level = {m: i for i, layer in enumerate(layers()) for m in layer}
    wrong = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            for target in imported(node):
                if level[target] <= level[name] and target != name:
                    wrong.append(f"{name} imports {target} (layer {level[target]} is not below {level[name]})")
    assert not wrong, "\n".join(wrong)


def test_no_function_level_import_of_the_package():
    """A function-level ``from .x import y`` is how a circle hides: imports go at the top of the module."""
    hidden = []
    for name, tree in modules().items():
        if name in LAZY_IMPORTS_ALLOWED:
            continue
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [f"{name}.{fn.name} imports {', '.join(sorted(imported(n)))}" for n in ast.walk(fn)
                           if imported(n)]
    assert not hidden, "\n".join(hidden)


def test_no_long_function_without_a_reason():
    long = []
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = fn.end_lineno - fn.lineno + 1
                if lines > MAX_LINES and "Long because" not in (ast.get_docstring(fn) or ""):
                    long.append(f"{name}.{fn.name}: {lines} lines")
    assert not long, ("functions over {MAX_LINES} lines without 'Long because ...' in their docstring:\n"
                      + "\n".join(long))


def test_sync_batchnorm_result_is_used():
    """``distributed.sync_batchnorm`` returns the module to use (PyTorch's conversion may return a new one):
    every call in the package keeps its result (beside its own recursion over the children, in place)."""
    dropped = []
    for name, tree in modules().items():
        if name == "distributed":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "attr", getattr(node.value.func, "id", None)) == "sync_batchnorm"):
                dropped.append(f"{name}: line {node.lineno}")
    assert not dropped, f"sync_batchnorm's result dropped at {dropped}"


def test_import_linter_contract():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
