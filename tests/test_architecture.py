"""The package's shape, checked: no import cycles between modules, and the core parts never import the facade.

A cycle hidden behind a function-local import, or a part reaching back into ``lookalike.library``, is how a hub
grows again; both are read here from the source (module-level imports only, as Python runs them).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lookalike"
# the library's clients: the CLI, the HTTP service (every module of lookalike.api), the evaluation, the demo
CLIENTS = ("lookalike.cli", "lookalike.__main__", "lookalike.api", "lookalike.demo", "lookalike.evaluate")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, local_too: bool = False) -> set[str]:
    """The lookalike modules a file imports at module level (``local_too``: inside functions as well), as names
    of modules that exist (``from lookalike.x import y`` counts ``lookalike.x.y`` when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if local_too else iter(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.If):  # TYPE_CHECKING blocks are not run
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lookalike")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lookalike"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def all_imports(local_too: bool) -> dict[str, list[str]]:
    """``imports`` of every module, read in a fresh interpreter: CPython 3.11's parser keeps its recursion count
    per process, and a traceback printed by another thread at the same moment (3.11 parses source lines to
    place its carets) made ``ast.parse`` here fail with "AST constructor recursion depth mismatch" in CI."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_architecture as t; "
            "local = sys.argv[2] == '1'; "
            "print(json.dumps({str(p): sorted(t.imports(p, local)) for p in t.PACKAGE.rglob('*.py')}))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), "1" if local_too else "0"],
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(out.stdout)


def graph(local_too: bool = False) -> nx.DiGraph:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = all_imports(local_too)
    g = nx.DiGraph()
    for name, path in modules.items():
        g.add_node(name)
        for target in found[str(path)]:
            if target in modules and target != name and not name.startswith(target + "."):
                g.add_edge(name, target)
    return g


def test_no_import_cycles_between_modules() -> None:
    cycles = [c for c in nx.simple_cycles(graph()) if not all(m == "lookalike" for m in c)]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_core_parts_never_import_the_library_facade() -> None:
    """Only its clients (the CLI, the service, tools) hold a ``Library``; the parts get what they need."""
    g = graph(local_too=True)
    reaching = {m for m in g.predecessors("lookalike.library")
                if not any(m == c or m.startswith(c + ".") for c in CLIENTS)}  # fmt: skip
    assert not reaching, f"modules below the facade that import it: {sorted(reaching)}"
