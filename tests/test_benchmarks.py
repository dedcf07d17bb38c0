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


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_tick_benchmark_measures_delivered_copies(durability: str) -> None:
    """tick.py's figure is the cost of reads whose copies all left, in either durability mode:
    it exits 1 when a copy did not leave (a read rejected, as a message invalid for the session's
    dictionary would be; in ``fsync`` mode, a background task the copies wait for not running)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tick.py"), "--reads", "50",
                           "--msgs", "2", "--targets", "2", "--durability", durability],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          stdin=subprocess.DEVNULL)
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
    # the per-read tail: ordered, and counted over the reads that were fed
    assert 0 < result["read_p50_us"] <= result["read_p99_us"] <= result["read_p999_us"]
    assert 0 <= result["reads_over_1ms"] <= 20


def test_syncwait_benchmark_measures_every_wait() -> None:
    """syncwait.py echoes every request in every mode and reports each mode's round trip; the
    modes that sync report their fdatasync too, and every figure is set against the no-wait
    floor. Kernel AIO is measured where the kernel allows it, and said to be left out where not."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "syncwait.py"), "--rounds",
                           "1", "--seconds", "0.2", "--rate", "500"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    modes = json.loads(lines[0])["modes"]
    if "aio" not in modes:
        assert "aio left out" in done.stderr
    assert {"none", "spin", "sleep", "inline", "thread"} <= set(modes) <= {
        "none", "spin", "sleep", "inline", "thread", "aio"}
    for mode, fig in modes.items():
        assert 0 < fig["p50_us"] <= fig["p90_us"] <= fig["p99_us"]
        assert (fig["fsync_p50_us"] is not None) == (mode in ("inline", "thread", "aio"))
        assert "wait_cost_us" in fig
    assert modes["none"]["wait_cost_us"] == 0.0
    # the 140 µs of the busy and the idle wait are in every round trip
    assert modes["spin"]["p50_us"] >= 140 and modes["sleep"]["p50_us"] >= 140


def test_syncwait_benchmark_builds_during_the_sync_when_asked() -> None:
    """--build-us adds the copies' CPU work to every echo: after the wait, or in the -early
    modes while the fdatasync runs; the floor holds it."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "syncwait.py"), "--rounds",
                           "1", "--seconds", "0.2", "--rate", "500", "--build-us", "150",
                           "--modes", "none,thread,thread-early"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["build_us"] == 150
    modes = result["modes"]
    assert set(modes) == {"none", "thread", "thread-early"}
    assert modes["none"]["p50_us"] >= 150
    assert modes["thread-early"]["fsync_p50_us"] is not None


def test_syncwait_benchmark_refuses_an_unknown_mode() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "syncwait.py"), "--modes",
                           "none,yield"], capture_output=True, text=True, timeout=60, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "unknown mode(s) yield" in done.stderr
