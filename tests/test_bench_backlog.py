"""benchmarks/backlog.py: its helpers, and one tiny run end to end (500 copies behind, about two
seconds; the real benchmark takes minutes: run it by hand)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks.backlog import (
    BEHIND,
    LIVE,
    SPILL,
    health_figures,
    healthz,
    pct_ms,
    read_monitor,
    rss_mb,
    tenths,
    vm_rss_kb,
)
from benchmarks.fanout import write_config
from dcgateway.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_config_copies_everything_from_the_source_to_both_targets(tmp_path):
    (tmp_path / "keys").mkdir()
    cfg = load_config(write_config(tmp_path / "gw", tmp_path, 2, []))
    assert [g.targets for g in cfg.groups] == [(LIVE, BEHIND)]
    assert all(s.begin_string == "FIX.4.2" for s in cfg.sessions)


def test_percentiles_windows_and_monitor_samples():
    assert pct_ms([], 0.5) is None
    assert pct_ms([3_000_000, 1_000_000, 2_000_000], 0.5) == 2.0
    assert pct_ms(list(range(1, 101)), 0.99) == round(99 / 1e6, 2)
    assert tenths(25) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18), (18, 21),
                          (21, 24), (24, 25)]
    assert tenths(1) == [(0, 1)]
    rss, hz = read_monitor("rss 10 2048\nhz 11 1.5 200\nhz 12 9.0 503\ngarbage\nrss x y\n")
    assert rss == [(10, 2048)] and hz == [(11, 1.5, 200), (12, 9.0, 503)]
    assert rss_mb(rss, 0, 10) == [2.0] and rss_mb(rss, 11, 20) == []
    assert health_figures(hz, 0, 20) == {"polls": 2, "failures": 1, "max_ms": 9.0,
                                         "p50_ms": 9.0}
    assert vm_rss_kb(os.getpid()) > 0


def test_the_spill_pattern_matches_the_gateways_warning():
    line = ("WARNING dcgateway.fanout: target CLR1 is slow: 100000 copies queued; serving it from "
            "the journal until it catches up")
    assert SPILL.findall(line) == ["CLR1"]


def test_healthz_reads_the_status_and_says_0_without_an_answer():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    assert healthz(port, timeout=5) == 200
    t.join(5)
    srv.close()
    assert healthz(port, timeout=1) == 0


def test_a_tiny_run_end_to_end():
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "backlog.py"), "--behind", "500",
                        "--tail", "0.2", "--settle", "0.1", "--max-seconds", "30"],
                       capture_output=True, text=True, timeout=90, cwd=REPO,
                       stdin=subprocess.DEVNULL)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and out["ok"], (out, p.stderr[-2000:])
    cu = out["catch_up"]
    assert out["accumulate"]["sent"] == 500 and cu["caught_up"]
    assert cu["b_received"] == cu["b_total"] > 500
    assert cu["b_gaps"] == cu["b_dups"] == cu["a_lost"] == 0
