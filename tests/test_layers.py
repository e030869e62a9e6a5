"""The library's layers, read from its source: foundation → data → models → training → evaluation → deployment.

A module imports only from its own layer or the layers below it (every import, also those inside
functions, which run later but are arrows all the same); no two modules import each other, even through
others; a name that starts with ``_`` is not imported from another module; and the notebooks import
from the curated namespaces (``helpers.data``, ``helpers.training``, ...), whose ``__all__`` names
what they hold.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HELPERS = ROOT / "helpers"
# Lowest first. The foundation holds what every layer may use: the environment and device, the embedded
# assets and their cache lock, Hub access, measurement utilities, plots, the lazy re-exports.
LAYERS = ("foundation", "data", "models", "training", "evaluation", "deployment")
CURATED = ("helpers.data", "helpers.models", "helpers.training", "helpers.evaluation", "helpers.deployment")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "foundation"


def helpers_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a ``helpers`` module in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("helpers")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("helpers"):
                found += [(target, alias.name, node.lineno) for alias in node.names]
    return found


def lazy_exports_of(path: Path) -> dict[str, list[str]]:
    """The ``{module: [names]}`` a package's ``__init__`` hands to ``lazy_exports`` (arrows too, taken on use)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            return ast.literal_eval(node.args[1])
    return {}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in HELPERS.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, imported, _ in helpers_imports(path):
            submodule = f"{target}.{imported}" if imported else None
            graph[name].add(submodule if submodule in modules else target)
        graph[name] |= {f"{name}.{module}" for module in lazy_exports_of(path)}
    return graph


def test_the_layers_are_what_the_test_reads():
    # a new top-level package must be given a layer here, not fall silently into the foundation
    packages = {p.name for p in HELPERS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS[1:])
    assert len(import_graph()) > 50


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(HELPERS.rglob("*.py")):
        source = module_name(path)
        for target, _imported, line in helpers_imports(path):
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(source)):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {source} ({layer_of(source)}) imports {target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules():
    graph = import_graph()
    # a package's __init__ re-exports its modules: an edge into the package is an edge to what it exports;
    # the package itself is left out of the cycle search (its modules import each other directly)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt in CURATED or nxt == "helpers":
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_private_names_stay_in_their_module():
    crossing = [
        f"{path.relative_to(ROOT)}:{line}: {imported} from {target}"
        for path in sorted(HELPERS.rglob("*.py"))
        for target, imported, line in helpers_imports(path)
        if imported and imported.startswith("_") and imported != "__version__"
    ]
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize("package", CURATED)
def test_curated_namespace_exports_real_public_names(package):
    module = importlib.import_module(package)
    assert module.__all__ and module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        value = getattr(module, name)
        origin = getattr(value, "__module__", None)
        if origin is not None and origin.startswith("helpers"):  # constants have no __module__
            assert origin.startswith(package + "."), f"{package}.{name} comes from {origin}"
    with pytest.raises(AttributeError, match="has no attribute"):
        module.no_such_name  # noqa: B018


def test_every_module_says_what_it_exports():
    missing, wrong = [], []
    for path in sorted(HELPERS.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        module = importlib.import_module(module_name(path))
        if not hasattr(module, "__all__"):
            missing.append(module.__name__)
            continue
        wrong += [
            f"{module.__name__}.{name}" for name in module.__all__ if name.startswith("_") or not hasattr(module, name)
        ]
    assert not missing and not wrong, (missing, wrong)


DEEP_IMPORT = re.compile(r"^\s*from (helpers\.(?:data|models|training|evaluation|deployment)\.\w+) import", re.M)


def test_notebooks_import_from_the_curated_namespaces():
    deep = []
    for path in sorted([*ROOT.glob("course/*.ipynb"), *ROOT.glob("solutions/*.ipynb")]):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                deep += [f"{path.name}: {m.group(1)}" for m in DEEP_IMPORT.finditer(source)]
    assert not deep, "\n".join(deep)


def test_an_unmarked_heavy_test_fails_the_quick_run(tmp_path):
    # The suite's own hook (tests/conftest.py) on a file of three tests, with a 1-second budget.
    (tmp_path / "test_budget.py").write_text(
        "import time\n"
        "import pytest\n\n"
        "def test_heavy_but_unmarked():\n    time.sleep(3)\n\n"
        "@pytest.mark.slow\ndef test_heavy_and_marked():\n    time.sleep(3)\n\n"
        "def test_light():\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FTCOURSE_QUICK_TEST_TIMEOUT": "1"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 2 passed" in result.stdout and "Timeout" in result.stdout
    assert "test_heavy_but_unmarked" in result.stdout.split("short test summary")[-1]
