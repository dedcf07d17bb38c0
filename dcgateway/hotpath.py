"""Which modules of the hot path are compiled, and whether this process runs them compiled.

The modules named in :data:`COMPILED_MODULES` are plain, strictly typed Python. When the
project is installed on a machine with a C compiler and the Python headers, ``setup.py``
compiles them with mypyc (which ships with mypy) into extension modules that sit beside their
``.py`` files and take precedence on import; the Python source is the same code, so without a
compiler the install simply keeps the pure-Python modules. Setting ``DCGATEWAY_PURE=1`` at
install time skips the compilation; setting it when a process starts makes that process load
the ``.py`` files even where compiled modules are present (:func:`prefer_pure`, called by the
package's ``__init__``), which is how the suite checks the fallback and how an operator rules
the compiled code out.

This module imports nothing from the package: ``setup.py`` reads :data:`COMPILED_MODULES`
from it before the package is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: Dotted names of the compiled modules: framing and CheckSum, the FIX session, validation, the
#: copy builder, routing, the fan-out, and the journal's record path: the code each message and
#: each copy runs through. The rest of the package stays interpreted, and so do classes other
#: code subclasses (``fix.store.MemoryStore``): a compiled class cannot have interpreted
#: subclasses.
COMPILED_MODULES: tuple[str, ...] = (
    "dcgateway.fix.tags",
    "dcgateway.fix.timefmt",
    "dcgateway.fix.codec",
    "dcgateway.fix.validate",
    "dcgateway.fix.session_types",
    "dcgateway.fix.session_admin",
    "dcgateway.fix.resend",
    "dcgateway.fix.session_sequence",
    "dcgateway.fix.session_logon",
    "dcgateway.fix.session",
    "dcgateway.fix.dropcopy",
    "dcgateway.routing",
    "dcgateway.fanout.outbox",
    "dcgateway.fanout.router",
    "dcgateway.journal.base",
    "dcgateway.journal.format",
    "dcgateway.journal.index",
    "dcgateway.journal.upkeep",
    "dcgateway.journal.roll",
    "dcgateway.journal.segment",
)

PURE_ENV = "DCGATEWAY_PURE"


def pure_requested() -> bool:
    """True when ``DCGATEWAY_PURE`` is set to anything but empty or ``0``."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' ``.py`` files, ahead of the extension modules beside them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_MODULES or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for folder in path:
            source = os.path.join(folder, leaf + ".py")
            if os.path.isfile(source):
                loader = importlib.machinery.SourceFileLoader(fullname, source)
                return importlib.util.spec_from_file_location(fullname, source, loader=loader)
        return None


def prefer_pure() -> None:
    """With ``DCGATEWAY_PURE`` set, make this process import the ``.py`` of every compiled
    module (idempotent; must run before the first of them is imported)."""
    if pure_requested() and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def compiled_modules() -> list[str]:
    """The hot-path modules this process has loaded from compiled extension modules."""
    out = []
    for name in COMPILED_MODULES:
        module = sys.modules.get(name)
        if module is not None and not (getattr(module, "__file__", "") or "").endswith(".py"):
            out.append(name)
    return out


def stale_modules() -> list[str]:
    """Compiled modules whose ``.py`` beside them is newer (by more than a second, so that an
    install that unpacks both is not caught): a source edited after the in-place build, which
    this process does not run. ``scripts/test`` and ``scripts/run`` rebuild them; so does
    ``pip install -e .``."""
    out = []
    for name in compiled_modules():
        path = getattr(sys.modules[name], "__file__", None) or ""
        source = os.path.join(os.path.dirname(path), name.rpartition(".")[2] + ".py")
        try:
            if os.stat(source).st_mtime > os.stat(path).st_mtime + 1.0:
                out.append(name)
        except OSError:
            continue
    return out


def describe() -> str:
    """One line for logs and ``--version``: compiled or pure Python, and why."""
    for name in COMPILED_MODULES:
        __import__(name)
    done = compiled_modules()
    if len(done) == len(COMPILED_MODULES):
        stale = stale_modules()
        if stale:
            return (f"hot path compiled (mypyc), but {len(stale)} module(s) older than their "
                    f"source, e.g. {stale[0]}: rebuild with pip install -e .")
        return "hot path compiled (mypyc)"
    if not done:
        why = f"{PURE_ENV} set" if pure_requested() else "not compiled at install"
        return f"hot path pure Python ({why})"
    return f"hot path partly compiled ({len(done)} of {len(COMPILED_MODULES)} modules)"
