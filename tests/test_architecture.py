"""The layers of shared/DESIGN.md, checked rather than hoped for: the import-linter contract in
pyproject.toml (`lint-imports`), no import cycles between lmforge's modules, and no hidden
function-level imports of lmforge modules outside the CLI (an import inside a function must
say why on its line, e.g. an optional heavy dependency)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lmforge"


def test_import_layers_contract():
    grimp = pytest.importorskip("grimp")  # noqa: F841 (import-linter's graph library)
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    r = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _module_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")
    g = grimp.build_graph("lmforge", include_external_packages=False,
                          exclude_type_checking_imports=True)  # (hints only, never run)
    return {m: {i for i in g.find_modules_directly_imported_by(m)} for m in g.modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out, counter = set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next((w for w in it if w in graph), None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_between_modules():
    graph = _module_graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    graph = {m: {i for i in deps if not (m.startswith(i + ".") and i != "lmforge")}
             for m, deps in graph.items() if m != "lmforge"}
    assert _cycles(graph) == []


def _function_level_lmforge_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            own = (isinstance(node, ast.ImportFrom) and (node.level > 0 or
                                                         (node.module or "").startswith("lmforge"))) \
                or (isinstance(node, ast.Import) and any(a.name.startswith("lmforge") for a in node.names))
            if own and "#" not in lines[node.lineno - 1]:
                found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_no_unexplained_function_level_imports_outside_the_cli():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if "cli" in path.relative_to(PKG).parts:
            continue
        bad += [f"{path.relative_to(ROOT)}:{n}: {line}" for n, line in
                _function_level_lmforge_imports(path)]
    assert bad == [], "function-level imports of lmforge modules need a comment saying why:\n" \
        + "\n".join(bad)


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 60


def test_modules_and_functions_stay_readable():
    """One concept per module, a function readable in one screen: no module over
    MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES (split it instead)."""
    long_modules, long_functions = [], []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}: {n}")
    assert long_modules == [] and long_functions == [], long_modules + long_functions
