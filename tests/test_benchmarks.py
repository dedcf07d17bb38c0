"""Every benchmark in benchmarks/ starts: its imports resolve against the current code and its
options parse (``--help``). Their figures are measured by running them, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py")
                    if not p.name.startswith("_") and p.name != "bare_relay.py")


def test_there_are_benchmarks() -> None:
    assert {"fanout.py", "codec.py", "recovery.py"} <= {p.name for p in BENCHMARKS}


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_starts(bench: Path) -> None:
    done = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def test_tick_benchmark_measures_delivered_copies() -> None:
    """tick.py's figure is the cost of reads whose copies all left: it exits 1 when a read was
    rejected (a message invalid for the session's dictionary measures the Reject path)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tick.py"), "--reads", "50",
                           "--msgs", "2", "--targets", "2"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"copies": 200' in done.stdout


def test_tick_benchmark_paces_reads_when_asked() -> None:
    """--pace-us idles after each read (cold caches, as at a moderate rate): the same copies
    leave, and the pace is part of the figure's record."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tick.py"), "--reads", "20",
                           "--msgs", "1", "--targets", "2", "--pace-us", "200"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["pace_us"] == 200 and result["copies"] == 40
