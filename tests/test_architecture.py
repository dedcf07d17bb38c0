"""The shape of the package, checked from its source text (nothing is imported): no import cycle
counting every import (module level, TYPE_CHECKING blocks and function-local ones alike); the
sans-I/O cores never import the shells (fix/ imports nothing of the package but fix/ and the
exception tree, nor I/O or the clock; the fan-out and the journal never import the network shell,
the runtime shells or the composition root); no module past 600 lines; the composition root
stays small."""

from __future__ import annotations

import ast
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "dcgateway"
IO_MODULES = {"asyncio", "socket", "time", "uvloop", "threading", "selectors", "ssl"}
SHELLS = ("dcgateway.net", "dcgateway.runtime", "dcgateway.gateway", "dcgateway.cli",
          "dcgateway.demo", "dcgateway.portal")
CORES = ("dcgateway.fanout", "dcgateway.journal", "dcgateway.routing")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module of the package ``path`` imports (absolute names), anywhere in the file."""
    mod = module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG_DIR.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges[name] = {m for m in imports(path) if m in mods and m != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_cores_never_import_the_shells():
    bad = [f"{m} imports {i}" for m, deps in graph().items() if m.startswith(CORES)
           for i in deps if i.startswith(SHELLS)]
    assert bad == []


def test_fix_is_pure():
    bad = []
    for path in (PKG_DIR / "fix").rglob("*.py"):
        for i in imports(path):
            top = i.split(".")[0]
            if top in IO_MODULES or i == "logging.config":
                bad.append(f"{path.name} imports {i}")
            if i.startswith("dcgateway.") and not i.startswith(("dcgateway.fix",
                                                                   "dcgateway.errors")):
                bad.append(f"{path.name} imports {i}")
    assert bad == []


def test_modules_stay_small_and_the_composition_root_only_composes():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PKG_DIR.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 600} == {}
    assert sizes["dcgateway.gateway"] <= 300


def test_the_checker_finds_a_cycle_and_a_forbidden_edge():
    """The checks above can fail: a two-module cycle and a core importing a shell are found."""
    edges = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert cycles(edges) == [["a", "b"]]
    fake = {"dcgateway.fanout.x": {"dcgateway.net.connection"}}
    assert [i for m, deps in fake.items() if m.startswith(CORES)
            for i in deps if i.startswith(SHELLS)] == ["dcgateway.net.connection"]
