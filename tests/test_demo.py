"""`dcgateway demo` on a copy of the shipped config: keys made on first run, traffic flows through
the gateway to both targets, totals printed once a second, a clean stop; a second run reuses the
keys."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .fsmodes import loose_modes

REPO = Path(__file__).resolve().parents[1]


def run_demo(folder: Path, seconds: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcgateway", "demo", "--duration", str(seconds),
                           "--rate", "300", "--config", str(folder / "gateway.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          preexec_fn=lambda: os.umask(0o022))


def test_demo_shows_traffic_and_stops_cleanly(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(REPO / "config" / "groups.yaml", folder / "groups.yaml")
    text = (REPO / "config" / "gateway.yaml").read_text()
    (folder / "gateway.yaml").write_text(text.replace("port: 9878", "port: 0").replace("port: 9100", "port: 0"))

    proc = run_demo(folder, 4)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert re.search(r"metrics on http://127\.0\.0\.1:\d+/metrics", proc.stdout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) >= 3
    last = lines[-1]
    n_in = int(re.search(r"in\s+([\d,]+)", last).group(1).replace(",", ""))
    outs = [int(x.replace(",", "")) for x in re.findall(r"out\s+([\d,]+)", last)]
    assert n_in > 500 and len(outs) == 2 and all(o > 0 for o in outs)
    # the target simulators validated every message against their session's dictionary
    checked = re.search(r"^targets checked: (.*)$", proc.stdout, re.M)
    assert checked, proc.stdout[-2000:]
    per_target = re.findall(r"(\w+) ([\d,]+) copies, (\d+) invalid, (\d+) unflagged", checked[1])
    assert len(per_target) == 2 and all(int(c.replace(",", "")) > 0 and inv == dup == "0"
                                        for _, c, inv, dup in per_target), checked[1]
    # every simulator logs out at the stop, the sources too (a FIX Logout, not a dropped socket)
    log = (folder / "var" / "demo.log").read_text()
    for comp_id in ("ABC123N", "ABD123N", "CLR001N", "CLRFIX44"):
        assert f"session {comp_id}: Disconnect (peer logout)" in log, log[-3000:]
    assert "peer closed" not in log
    creds = json.loads((folder / "var" / "demo-credentials.json").read_text())
    assert set(creds) == {"ABC", "ABD", "CLR", "CLRFIX44"}
    assert (folder / "var" / "demo-credentials.json").stat().st_mode & 0o777 == 0o600

    again = run_demo(folder, 2)                      # keys reused, sequences reset by 141=Y
    assert again.returncode == 0, again.stderr
    assert json.loads((folder / "var" / "demo-credentials.json").read_text()) == creds
    assert "error" not in (folder / "var" / "demo.log").read_text().lower()
    # a run that included a sequence reset, started with a permissive umask: data_dir is private
    assert loose_modes(folder / "var") == []


def test_each_run_of_the_demo_gives_its_orders_new_ids(tmp_path, monkeypatch):
    """A copy routed in one run and never delivered reaches its target in the next (carried
    over the sequence reset): its order IDs must not be those of the next run's orders, or the
    target simulator takes it for a repeat sent without PossDupFlag."""
    from dcgateway import demo
    from dcgateway.config import load_config

    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(REPO / "config" / "groups.yaml", folder / "groups.yaml")
    shutil.copy(REPO / "config" / "gateway.yaml", folder / "gateway.yaml")
    config = load_config(folder / "gateway.yaml")
    creds = {s.comp_id: ("A" * 20, "Q" * 43)
             for s in config.sessions}
    prefixes = []
    for now in (1_800_000_000.0, 1_800_000_060.0):
        monkeypatch.setattr(demo.time, "time", lambda now=now: now)
        sources, _ = demo.simulators(config, 9878, 100.0, creds)
        assert sources
        prefixes.append({s.sender: s.flow.prefix for s in sources})
    first, second = prefixes
    assert first.keys() == second.keys()
    for sender in first:
        assert first[sender].startswith(f"{sender}-") and second[sender].startswith(f"{sender}-")
        assert first[sender] != second[sender]


class _Sim:
    """A simulator whose run never ends on stop() when ``stuck`` (what a slow stop looked like)."""

    def __init__(self, name: str, stuck: bool) -> None:
        self.sender = self.comp_id = name
        self.stuck = stuck
        self.calls: list[str] = []
        self._stopped = None

    async def run(self) -> None:
        import asyncio
        self._stopped = asyncio.Event()
        await self._stopped.wait()
        if self.stuck:
            await self._reconnect()

    async def _reconnect(self) -> None:
        import asyncio
        await asyncio.Event().wait()               # never set

    def stop(self) -> None:
        self.calls.append("stop")
        self._stopped.set()

    async def logout(self) -> None:
        self.calls.append("logout")
        if self.stuck:      # uvloop's answer to a write on a connection the peer just reset
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    async def close(self) -> None:
        self.calls.append("close")


def test_a_simulator_that_does_not_stop_is_named_with_where_it_waits_and_the_stop_goes_on(
        monkeypatch, caplog):
    import asyncio
    import logging

    from dcgateway import demo
    monkeypatch.setattr(demo, "STOP_STEP_S", 0.2)
    good, stuck, target = _Sim("SRC1", False), _Sim("SRC2", True), _Sim("TGT1", False)

    async def main() -> None:
        runs = {asyncio.create_task(s.run()): s for s in (target, good, stuck)}
        await asyncio.sleep(0)
        await demo.stop_simulators([good, stuck], [target], runs)
        for task in runs:
            task.cancel()

    with caplog.at_level(logging.WARNING, logger="dcgateway.demo"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    # named, with the innermost frame it waits in, not only its run()
    assert "SRC2 still running" in warnings[0] and " run > " in warnings[0] \
        and "_reconnect" in warnings[0], warnings
    assert "SRC2's logout failed (RuntimeError" in warnings[1], warnings
    # the sources are logged out and closed, the stuck one too; the target logs out by itself
    assert good.calls == stuck.calls == ["stop", "logout", "close"]
    assert target.calls == ["stop"]
