"""The house rules of the code's layout, read from the source (docs/design.md, "Layout").

- no module imports another in a circle (imports inside functions count too);
- no module imports a private name of another (``from x import _y``, or ``x._y`` on a module);
- ``probes`` imports nothing from ``ratings`` (not even through importlib and a string);
- ``ratings.analysis`` reads tidy tables and score tables: of the rating side it imports only
  ``ratings.errors`` and ``ratings.scale``;
- the benchmarks drive public functions only.

``python tests/test_layout.py`` prints the import graph and every breach it finds.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probes", "ratings")
ANALYSIS_MAY_IMPORT = {"ratings.errors", "ratings.scale"}


@dataclass
class Tree:
    """What the source of some packages says about their imports."""

    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> our modules it imports
    private: list[str] = field(default_factory=list)  # "where: what" of each private name used
    dynamic: list[str] = field(default_factory=list)  # importlib / __import__ calls with a constant


def module_names(root: Path, packages) -> dict[str, Path]:
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def read_tree(root: Path, packages=PACKAGES, also=()) -> Tree:
    """The import graph of ``packages`` under ``root``; ``also`` are folders read for private names only."""
    tree = Tree(module_names(root, packages))
    for name, path in {**tree.modules, **module_names(root, also)}.items():
        tree.edges[name] = set()
        _read_module(tree, name, path)
    return tree


def _read_module(tree: Tree, name: str, path: Path) -> None:
    source = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    aliases: dict[str, str] = {}  # local name -> our module it is bound to
    where = path.relative_to(path.parents[len(name.split(".")) - 1 + (path.name == "__init__.py")])
    for node in ast.walk(source):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in tree.modules:  # `from probes import store`: a module
                    tree.edges[name].add(full)
                    aliases[alias.asname or alias.name] = full
                elif base in tree.modules:
                    tree.edges[name].add(base)
                    if alias.name.startswith("_") and base != name:
                        tree.private.append(f"{where}:{node.lineno}: from {base} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in tree.modules:
                    tree.edges[name].add(alias.name)
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.Call) and _is_dynamic_import(node) and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                tree.dynamic.append(f"{where}:{node.lineno}: {node.args[0].value}")
    for node in ast.walk(source):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            tree.private.append(f"{where}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    tree.edges[name].discard(name)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
        (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other round a loop (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]], dynamic: list[str]) -> list[str]:
    """Imports that break the one-way rules between packages."""
    wrong = [f"{m} imports {t}" for m, targets in sorted(edges.items()) for t in sorted(targets)
             if m.split(".")[0] == "probes" and t.split(".")[0] == "ratings"]
    wrong += [f"{m} imports {t} (the analysis never reads the rating app)" for m, targets in sorted(edges.items())
              for t in sorted(targets) if m.startswith("ratings.analysis") and t.startswith("ratings")
              and not t.startswith("ratings.analysis") and t not in ANALYSIS_MAY_IMPORT]
    wrong += [f"{d} (imported by name at run time)" for d in dynamic if d.startswith("probes") and "ratings" in d]
    return wrong


# --- the rules on this repository -------------------------------------------------------------

def test_no_module_imports_another_in_a_circle():
    assert circles(read_tree(ROOT).edges) == []


def test_no_module_uses_a_private_name_of_another():
    assert read_tree(ROOT, also=("benchmarks",)).private == []


def test_probes_never_imports_ratings_and_the_analysis_never_imports_the_rating_app():
    tree = read_tree(ROOT)
    assert {"probes.run", "probes.store", "ratings.analysis.stats", "ratings.app"} <= set(tree.modules)
    assert upward(tree.edges, tree.dynamic) == []


# --- the checker finds what it should (on a small tree written here) -----------------------------

def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_circle_through_an_import_inside_a_function(tmp_path):
    root = write(tmp_path, {"probes/__init__.py": "", "probes/a.py": "from .b import f\n",
                            "probes/b.py": "def f():\n    from . import a\n", "probes/c.py": "from . import a\n",
                            "ratings/__init__.py": ""})
    assert circles(read_tree(root).edges) == [["probes.a", "probes.b"]]


def test_the_checker_finds_private_names_imported_or_reached_through_a_module(tmp_path):
    root = write(tmp_path, {"probes/__init__.py": "", "probes/a.py": "_X = 1\ndef _f(): pass\n",
                            "probes/b.py": "from .a import _f\n",
                            "probes/c.py": "from probes import a as lib\nprint(lib._X, lib.__name__)\n",
                            "ratings/__init__.py": "", "bench/run.py": "from probes.a import _X\n"})
    found = read_tree(root, also=("bench",)).private
    assert [f.split(": ", 1)[1] for f in found] == ["from probes.a import _f", "probes.a._X",
                                                     "from probes.a import _X"]


def test_the_checker_finds_upward_imports_plain_lazy_and_by_name(tmp_path):
    root = write(tmp_path, {"probes/__init__.py": "", "probes/store.py": (
        "import importlib\ndef f():\n    from ratings import db\n"
        "    return importlib.import_module('ratings.db')\n"),
        "ratings/__init__.py": "", "ratings/db.py": "", "ratings/app.py": "",
        "ratings/analysis/__init__.py": "", "ratings/analysis/stats.py": "from ratings import app, errors\n",
        "ratings/errors.py": ""})
    tree = read_tree(root)
    assert upward(tree.edges, tree.dynamic) == [
        "probes.store imports ratings.db",
        "ratings.analysis.stats imports ratings.app (the analysis never reads the rating app)",
        "probes/store.py:4: ratings.db (imported by name at run time)"]


if __name__ == "__main__":
    found = read_tree(ROOT, also=("benchmarks",))
    for module in sorted(found.modules):
        print(f"{module} -> {', '.join(sorted(found.edges[module])) or '-'}")
    problems = ([" <-> ".join(c) for c in circles(found.edges)] + found.private
                + upward(found.edges, found.dynamic))
    print("\n".join(["", "breaches:", *problems]) if problems else "\nno circles, no private names, no upward imports")
    sys.exit(1 if problems else 0)
