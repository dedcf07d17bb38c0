"""Build hook: compiles the hot-path modules listed in dcgateway/hotpath.py with mypyc.

Everything else about the package is declared in pyproject.toml. mypyc comes with mypy (a
build requirement, pinned like the test extra's); it needs a C compiler and the Python headers.
Where either is missing, or DCGATEWAY_PURE is set, the package installs as pure Python: the
compiled extensions are marked optional, so a failed compile leaves the .py modules in use.
"""

from __future__ import annotations

import glob
import os
import runpy
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "dcgateway_native"        # the name of the shared library mypyc builds for the group


def remove_built() -> None:
    """Delete the compiled modules an earlier in-place (editable) build left beside the
    sources, every one of them (the package has no other extension modules): a stale one would
    shadow the .py it was built from, even when this build stays pure or no longer compiles it."""
    for path in glob.glob(os.path.join(HERE, "dcgateway", "**", "*.so"), recursive=True):
        os.remove(path)
    for path in glob.glob(os.path.join(HERE, GROUP + "__mypyc.*.so")):
        os.remove(path)


def hot_path_extensions() -> list:
    hotpath = runpy.run_path(os.path.join(HERE, "dcgateway", "hotpath.py"))
    remove_built()
    if hotpath["pure_requested"]():
        print("dcgateway: DCGATEWAY_PURE set, installing pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("dcgateway: mypyc not available, installing pure Python", file=sys.stderr)
        return []
    files = [os.path.join("dcgateway", *name.split(".")[1:]) + ".py"
             for name in hotpath["COMPILED_MODULES"]]
    try:
        # --follow-imports=silent: the modules the compiled ones import are analysed but not
        # judged; the build environment lacks the third-party packages and stubs that the
        # project's own mypy run (scripts/test, strict) checks them with.
        extensions = mypycify(["--strict-bytes", "--follow-imports=silent", *files],
                              opt_level="3", group_name=GROUP)
    except BaseException as exc:          # mypy refused the sources: stay pure, say why
        print(f"dcgateway: mypyc failed ({exc!r}), installing pure Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True          # no compiler: a warning, and the .py modules stay
    return extensions


setup(ext_modules=hot_path_extensions())
