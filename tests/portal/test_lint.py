"""ruff and mypy over the portal and its users store, in the test command (DESIGN rule 11).
The rest of the package is linted by its own owners; ``--follow-imports=silent`` keeps mypy's
answer about these files only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = ["dcgateway/portal", "dcgateway/state/users.py"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff():
    pytest.importorskip("ruff", reason="ruff is in the test extra (pip install -e .[test])")
    done = _run("ruff", "check", "--no-cache", *FILES, "tests/portal")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    pytest.importorskip("mypy", reason="mypy is in the test extra (pip install -e .[test])")
    done = _run("mypy", "--follow-imports=silent", "--ignore-missing-imports",
                "--no-incremental", *FILES)
    assert done.returncode == 0, done.stdout + done.stderr
