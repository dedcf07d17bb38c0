"""Issue 5: the crash-and-load soak. Two sources stream at a steady rate into a gateway
subprocess that is killed with SIGKILL several times, at seeded random moments, and restarted on
a new port each time; the simulators follow it (``.port``, auto reconnect). Afterwards each
target must hold exactly what its groups promise: nothing lost, each source in send order, a
gapless target sequence, any repeat flagged 43=Y (DESIGN.md "Data flow").

The outcome is one JSON line on stdout (``pytest -s`` shows it; also a ``record_property`` and,
with ``DCGW_SOAK_REPORT=<path>``, a file): messages sent, delivered and expected per target, lost,
unflagged and flagged duplicates, the gateway's ResendRequests to the sources, kills survived.

By default it is short (about 15 s of traffic, 4 kills) and part of every run. A longer soak::

    DCGW_SOAK_SECONDS=300 DCGW_SOAK_KILLS=20 .venv/bin/python -m pytest tests/simulators/test_soak.py -s

``DCGW_SOAK_SEED`` changes the kill moments (and the order flows).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time

import pytest

from dcgateway.config import load_config
from tests.integration.conftest import issue_keys

from .support import assert_exact, expected, gateway_folder, routing_table, source, target
from .test_gateway_restart import finish, never

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SECONDS = float(os.environ.get("DCGW_SOAK_SECONDS", "15"))
KILLS = int(os.environ.get("DCGW_SOAK_KILLS", "4"))
SEED = int(os.environ.get("DCGW_SOAK_SEED", "20261205"))
RATES = {"ABC123N": 1500.0, "ABD123N": 600.0}      # messages/s per source, steady
MIN_UPTIME = 0.4                                    # s a restarted gateway lives at least


def kill_moments(rng: random.Random, seconds: float, kills: int) -> list[float]:
    """One moment per equal slot of the traffic window (leaving a second at each end), so the
    kills spread over the whole run but land anywhere inside their slot."""
    width = max(seconds - 2.0, 0.5) / max(kills, 1)
    return [1.0 + i * width + rng.uniform(0.1, 0.9) * width for i in range(kills)]


def report_figures(wall: float, kills: int, sources, targets, want) -> dict:
    return {
        "soak": True,
        "seconds": SECONDS,
        "kills": kills,
        "sent": sum(len(s.sent_log) for s in sources),
        "delivered": {t.comp_id: len(t.delivered) for t in targets},
        "expected": {t.comp_id: len(want.get(t.comp_id, ())) for t in targets},
        "lost": sum(len(set(want.get(t.comp_id, ())) - set(t.delivered)) for t in targets),
        "unflagged_duplicates": sum(t.unflagged_duplicates for t in targets),
        "flagged_duplicates": sum(t.duplicates for t in targets),
        "possdup_copies_received": sum(t.counters["resent_received"]
                                       + t.counters["stale_possdup"] for t in targets),
        "resends_requested_by_gateway": sum(s.stats["resend_requests"] for s in sources),
        "resent_by_sources": sum(s.stats["resent"] for s in sources),
        "source_reconnects": {s.sender: s.stats["reconnects"] for s in sources},
        "target_logons": {t.comp_id: t.counters["logons"] for t in targets},
        "target_gap_requests": {t.comp_id: t.gaps_requested for t in targets},
        "seed": SEED,
        "wall_seconds": wall,
    }


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_soak_kill_9_under_steady_load_loses_nothing(tmp_path, gateway_process,
                                                            loop_errors, record_property,
                                                            durability):
    """In both local durability modes: kill -9 never loses what a target was sent nor what a
    source was told it need not send again (README "Durability modes")."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, ctx: loop_errors.append(ctx))
    rng = random.Random(SEED)
    wall0 = time.monotonic()
    folder = gateway_folder(tmp_path, extra=f"journal_durability: {durability}")
    creds = issue_keys(load_config(folder / "gateway.yaml"))
    gp = gateway_process(folder / "gateway.yaml")
    port = await asyncio.to_thread(gp.start)
    bound = SECONDS + 30 * (KILLS + 2)                  # hard bound on every wait below
    targets = [target(port, creds, "CLR001N"), target(port, creds, "CLRFIX44")]
    tasks = [asyncio.create_task(t.run(until=never, timeout=bound, logout=False))
             for t in targets]
    sources = [source(port, creds, "ABC123N", duration=SECONDS, rate=RATES["ABC123N"],
                      seed=SEED % 1000, auto_reconnect=True, reconnect_timeout=30),
               source(port, creds, "ABD123N", duration=SECONDS, rate=RATES["ABD123N"],
                      seed=SEED % 1000 + 1, auto_reconnect=True, reconnect_timeout=30)]
    runs = [asyncio.create_task(s.run()) for s in sources]
    t0 = loop.time()
    kills = 0
    for at in kill_moments(rng, SECONDS, KILLS):
        up_since = loop.time()
        await asyncio.sleep(max(MIN_UPTIME, t0 + at - loop.time()))
        assert not any(r.done() for r in runs), [r.result() for r in runs if r.done()]
        assert loop.time() - up_since >= MIN_UPTIME
        await asyncio.to_thread(gp.kill9)
        assert gp.proc is not None and gp.proc.returncode == -signal.SIGKILL
        kills += 1
        gp = gateway_process(folder / "gateway.yaml")
        port = await asyncio.to_thread(gp.start)
        for sim in (*sources, *targets):
            sim.port = port
    summaries = await asyncio.wait_for(asyncio.gather(*runs), bound)
    assert all(s["rejects"] == 0 and s["error"] is None for s in summaries), summaries
    want = expected(routing_table(folder), *sources)
    for t, task in zip(targets, tasks):
        await finish(t, task, len(want[t.comp_id]), timeout=bound)
    figures = report_figures(round(time.monotonic() - wall0, 1), kills, sources, targets, want)
    figures["journal_durability"] = durability
    line = json.dumps(figures, sort_keys=False)
    print(line, flush=True)
    record_property("soak", line)
    if os.environ.get("DCGW_SOAK_REPORT"):
        with open(os.environ["DCGW_SOAK_REPORT"], "w", encoding="utf-8") as fh:
            fh.write(line + "\n")

    assert kills == KILLS
    for t in targets:
        assert_exact(t, want[t.comp_id])
        # gapless after the last recovery: everything seen was consumed in sequence
        assert t.last_seq == t.highest_seen and not t._queue and t._pending is None, t.stats()
        assert t.counters["logons"] >= 2, t.stats()
    assert figures["lost"] == 0 and figures["unflagged_duplicates"] == 0, figures
    assert figures["sent"] >= 0.5 * SECONDS * sum(RATES.values()), figures   # the load was real
    assert figures["resends_requested_by_gateway"] >= 1, figures
    gp.signal(signal.SIGTERM)
    code, _ = await asyncio.to_thread(gp.wait)
    assert code == 0
