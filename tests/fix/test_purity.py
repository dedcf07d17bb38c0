"""DESIGN.md rule 1: dcgateway/fix/ is sans-I/O. It must not import asyncio, socket, time,
threading, selectors or logging configuration, directly or through another module."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

FIX_DIR = pathlib.Path(__file__).resolve().parents[2] / "dcgateway" / "fix"
FORBIDDEN = {"asyncio", "socket", "time", "uvloop", "threading", "selectors", "ssl", "logging.config"}


def test_fix_modules_import_nothing_forbidden():
    offenders = []
    files = sorted(FIX_DIR.glob("*.py"))
    assert files, "no modules found under dcgateway/fix"
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN - {"logging.config"}:
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == []


def test_importing_fix_package_loads_no_io_module():
    code = ("import sys; before=set(sys.modules); import dcgateway.fix.codec, dcgateway.fix.tags, "
            "dcgateway.fix.store, dcgateway.fix.timefmt; "
            "import importlib, pkgutil, dcgateway.fix as f; "
            "[importlib.import_module('dcgateway.fix.'+m.name) for m in pkgutil.iter_modules(f.__path__)]; "
            "print(' '.join(sorted(set(sys.modules)-before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not ({"asyncio", "socket", "uvloop", "selectors"} & set(out)), out
