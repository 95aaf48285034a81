"""The modules of hf_skillit import each other without cycles: each depends only on modules below it.

The imports are read from the source with `ast`, so a cycle that an import inside a function hides at run time still
counts. What counts as "module A imports module B":

- `import`/`from ... import` statements anywhere in A: at module level, inside functions (deferred, but still a
  dependency), and under `if TYPE_CHECKING:` (not run, but a type checker follows it, and a cycle there is one
  that a refactoring turns into a real one);
- `importlib.import_module("hf_skillit.b")` with a constant name (a plugin list is an import too);
- importing a submodule of a subpackage from outside it (`hf_skillit.recipes.build` from `hf_skillit.cli`) first
  runs the subpackage's `__init__` (`hf_skillit.recipes`), so it imports that too; a module inside the subpackage
  does not (its package was initialised before it). The root package `hf_skillit/__init__.py` is left out of this
  rule: it imports its submodules only when a name is first looked up (PEP 562), so "every module imports the
  root" would be a cycle only on paper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_skillit"


def _module_names() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The hf_skillit modules that module `name` (its source at `path`) imports, by the rules of the docstring."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            # `from . import curriculum` imports the submodule; `from .mixing import check_eta` the module.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    edges = set()
    for module in found:
        parts = module.split(".")
        # A subpackage's __init__ runs before its submodules, unless the importer is inside it (not the root's: see
        # the module docstring).
        parents = (".".join(parts[:depth]) for depth in range(2, len(parts)))
        edges.update(p for p in parents if not name.startswith(p + ".") and p != name)
        edges.add(module)
    return {m for m in edges if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_reader_sees_every_kind_of_import():
    graph = import_graph()
    assert "hf_skillit.mixer_registry" in graph["hf_skillit.mixing"]  # module level, relative
    assert "hf_skillit.plotting" in graph["hf_skillit.graph_learning"]  # inside a function
    assert "hf_skillit.curriculum" in graph["hf_skillit.config"]  # `from . import curriculum`
    assert "hf_skillit.recipes" in graph["hf_skillit.cli"]  # a subpackage, inside a function
    assert "hf_skillit" not in graph["hf_skillit.config"]  # the root package: see the module docstring


def test_the_cycle_finder_finds_cycles(tmp_path):
    # The same reader on a package with the two cycles this project had: a TYPE_CHECKING import and a plugin list.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "registry.py").write_text(
        "import importlib\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .config import Config\n"
        "def load():\n    importlib.import_module('pkg.mixers')\n"
    )
    (package / "config.py").write_text("from .registry import load\n")
    (package / "mixers.py").write_text("from . import registry\n")
    (package / "leaf.py").write_text("import os\n")
    names = {f"pkg.{p.stem}" if p.stem != "__init__" else "pkg": p for p in package.glob("*.py")}
    graph = {name: _imports(name, path, set(names)) for name, path in names.items()}
    assert import_cycles(graph) == [["pkg.config", "pkg.mixers", "pkg.registry"]]


@pytest.mark.parametrize("module", ["hf_skillit.mixer_registry", "hf_skillit.graph"])
def test_the_registry_and_the_graph_import_no_module_that_builds_on_them(module):
    # The two cycles of issue 24: mixers register in the registry, plots draw graphs; never the other way.
    assert not import_graph()[module] & {
        "hf_skillit.config",
        "hf_skillit.mixing",
        "hf_skillit.curriculum",
        "hf_skillit.plotting",
    }
