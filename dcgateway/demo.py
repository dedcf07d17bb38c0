"""``dcgateway demo``: the gateway with the demo configuration and the simulators, live totals.

What a new user's first command shows: on first run it issues a key pair for every Session ID of
the configuration (kept, mode 0600, in ``data_dir/demo-credentials.json`` and reused while they are
active), starts the gateway, one order-entry source simulator per source session and one
clearing-firm target simulator per target session, and prints once a second the messages in and
out, each target's copies and backlog, and the fan-out latency p99, until Ctrl-C (or
``--duration``), which stops everything cleanly (Logout on every session, journal flushed).

When gateway.yaml has a ``portal:`` section the self-service portal runs beside the gateway (in
the same event loop) and the demo prints its URL and, for every user not enrolled yet, a fresh
enrolment link (what ``dcgateway users invite`` makes). A busy portal port is reported and the
demo goes on without the portal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from . import hotpath
from .auth import logon_signer
from .config import GatewayConfig
from .fsutil import atomic_write, private_dir
from .gateway import Gateway
from .runtime import tune_for_latency
from .state import open_state
from .vocab import Role

log = logging.getLogger("dcgateway.demo")

#: The longest a step of the demo's stop may take: the simulators' runs ending, each source's
#: logout and close, the portal's stop.
STOP_STEP_S = 10.0
CREDENTIALS_FILE = "demo-credentials.json"


def demo_credentials(config: GatewayConfig) -> dict[str, tuple[str, str]]:
    """comp_id -> (access key id, secret); key pairs are created on first run and reused."""
    g = config.gateway
    path = g.data_dir / CREDENTIALS_FILE
    km = open_state(config).keys
    km.store.ensure_master_key()
    try:
        saved: dict[str, list[str]] = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    active = {i.access_key_id for i in km.list() if i.status == "active"}
    creds: dict[str, tuple[str, str]] = {}
    for scope in sorted({s.key_scope for s in config.sessions}):
        pair = saved.get(scope)
        if not pair or pair[0] not in active:
            live = [i for i in km.list(scope) if i.status == "active"]
            delete = live[0].access_key_id if len(live) >= 2 else None
            rec = km.create(scope, who="demo", delete=delete)
            pair = [rec.access_key_id, rec.secret_key]
            log.info("demo: created key pair %s for Session ID %s", rec.access_key_id, scope)
        saved[scope] = pair
        creds[scope] = (pair[0], pair[1])
    private_dir(g.data_dir)
    atomic_write(path, json.dumps(saved, indent=1).encode(), 0o600)
    return {s.comp_id: creds[s.key_scope] for s in config.sessions}


async def start_portal(config: GatewayConfig, out: Any) -> Any:
    """The portal beside the gateway (None without a ``portal:`` section or when its port is
    busy); prints its URL and how each user logs in the first time."""
    if config.portal is None:
        return None
    from .portal.accounts import enrol_url
    from .portal.server import PortalServer
    listen = config.portal.listen
    server = PortalServer(config)
    try:
        url = await server.start()
    except OSError as exc:
        print(f"portal: could not listen on {listen.host}:{listen.port} "
              f"({exc.strerror or exc}); the demo goes on without it", file=out, flush=True)
        return None
    accounts = server.app.state.web.accounts
    lines = [f"portal on {url}: log in with User, Password and a Code from an authenticator "
             "app; first enrol with your link (works once, valid 24 h):"]
    for name, person in sorted(accounts.people.items()):
        who = (f"{name} ({person.role}" + (f" of {', '.join(person.entities)})"
                                          if person.role != "operator" else ")"))
        rec = accounts.users.get(name)
        if rec is not None and rec.is_enrolled:
            lines.append(f"  {who}: enrolled; log in at {url}/login")
            continue
        token, _ = accounts.invite(name, time.time(), 24 * 3600.0)
        lines.append(f"  {who}: {enrol_url(url, token)}")
    print("\n".join(lines), file=out, flush=True)
    return server


def _p99_ms(values: list[float]) -> str:
    if not values:
        return "   - "
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(0.99 * len(values)))] * 1000:5.2f}"


class Totals:
    """One line a second: what went in, what went out to each target, backlog, latency."""

    def __init__(self, gw: Gateway, out: Any) -> None:
        self.gw = gw
        self.out = out
        self.t0 = time.monotonic()
        self.last_in = 0

    def line(self) -> str:
        gw = self.gw
        n_in = gw.fanout.messages_in
        rate = n_in - self.last_in
        self.last_in = n_in
        lat: list[float] = []
        parts = []
        for name, t in gw.outboxes.items():
            lat.extend(t.latencies)
            parts.append(f"{name} out {t.copies_written:>8,} backlog {t.backlog:>5,}")
        return (f"[{time.monotonic() - self.t0:6.0f}s] in {n_in:>9,} ({rate:>6,}/s) | "
                + " | ".join(parts) + f" | p99 {_p99_ms(lat)} ms")

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            print(self.line(), file=self.out, flush=True)


def simulators(config: GatewayConfig, port: int, rate: float,
               creds: dict[str, tuple[str, str]]) -> tuple[list[Any], list[Any]]:
    """A source simulator per source session and a target simulator per target session, each
    logging on with the demo's key pair and resetting its sequences; targets validate every
    message against their session's data dictionary."""
    from simulators.source import SourceSimulator
    from simulators.target import TargetSimulator

    sources: list[SourceSimulator] = []
    targets: list[TargetSimulator] = []
    gateway = config.gateway.comp_id
    # Order IDs unique across runs, as a firm's are across its trading day: a copy the previous
    # run routed and never delivered reaches its target after the sequence reset (carried
    # over), and the target simulator, which knows only this run, must not take it for a
    # repeat of this run's order with the same ID.
    run = _base36(int(time.time()) % 36 ** 4)      # 4 characters: about 19 days apart
    for sdef in config.sessions:
        signer = logon_signer(*creds[sdef.comp_id])
        if sdef.role == Role.TARGET:
            targets.append(TargetSimulator("127.0.0.1", port, sdef.comp_id, signer=signer,
                                           gateway=gateway, begin_string=sdef.begin_string,
                                           reset=True, dictionary=sdef.data_dictionary))
        else:
            sources.append(SourceSimulator("127.0.0.1", port, sdef.comp_id, signer=signer,
                                           target=gateway, begin_string=sdef.begin_string,
                                           rate=rate, seed=len(sources) + 1, reset=True,
                                           auto_reconnect=True, sync_at_end=False,
                                           mass_actions=sdef.profile == "ilink2",
                                           id_prefix=f"{sdef.comp_id}-{run}-"))
    return sources, targets


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if n == 0:
            return out


def checked_line(targets: list[Any]) -> str:
    """What the target simulators checked: every message valid in their session's dictionary,
    gapless, nothing repeated without PossDupFlag."""
    return "targets checked: " + "; ".join(
        f"{t.comp_id} {len(t.delivered):,} copies, {t.counters['format_errors_total']} invalid, "
        f"{t.unflagged_duplicates} unflagged duplicates" for t in targets)


async def bounded(step: Any, what: str) -> None:
    """Await one step of the demo's stop for at most STOP_STEP_S: a simulator or the portal that
    does not finish in time, or fails (uvloop raises RuntimeError for a write to a connection the
    peer has just reset), must not keep the demo (and the README's run command) from ending."""
    try:
        await asyncio.wait_for(step, STOP_STEP_S)
    except TimeoutError:
        log.warning("demo: %s did not finish within %gs; going on", what, STOP_STEP_S)
    except Exception as exc:             # noqa: BLE001 - one line, the stop goes on
        log.warning("demo: %s failed (%s: %s); going on", what, type(exc).__name__, exc)


def waiting_at(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: every coroutine frame from its own to the innermost one
    it awaits (``Task.get_stack`` shows only the outermost)."""
    frames: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(f"{frame.f_code.co_filename.rpartition('/')[2]}:{frame.f_lineno} "
                      f"{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames) or "?"


async def stop_simulators(sources: list[Any], targets: list[Any],
                          runs: dict[asyncio.Task[Any], Any]) -> None:
    """Stop every simulator's run, then log the sources out (as a firm's order entry does at
    the end of its day) and close them. A run still going after STOP_STEP_S is named in the
    log with where it waits, so a slow stop can be told from a stuck one."""
    for sim in (*sources, *targets):
        sim.stop()
    _, pending = await asyncio.wait(runs, timeout=STOP_STEP_S) if runs else (set(), set())
    for task in pending:
        log.warning("demo: simulator %s still running %gs after its stop, at %s",
                    getattr(runs[task], "comp_id", None) or getattr(runs[task], "sender", "?"),
                    STOP_STEP_S, waiting_at(task))
    for src in sources:
        await bounded(src.logout(), f"source {src.sender}'s logout")
        await bounded(src.close(), f"source {src.sender}'s close")


async def run_demo(config: GatewayConfig, *, rate: float, duration: float | None,
                   out: Any = sys.stdout) -> int:
    creds = demo_credentials(config)
    gw = Gateway(config)
    port = await gw.start()
    tune_for_latency()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = config.gateway.metrics.host
    hot = hotpath.describe()
    log.info("demo: gateway on %s:%d; %s", config.gateway.listen.host, port, hot)
    print(f"dcgateway demo: FIX on {config.gateway.listen.host}:{port}; metrics on "
          f"http://{host}:{gw.metrics_port}/metrics (health: /healthz); {hot}; Ctrl-C stops",
          file=out, flush=True)
    gw_done = asyncio.Event()
    serve = asyncio.create_task(gw.serve(gw_done))
    portal = await start_portal(config, out)
    sources, targets = simulators(config, port, rate, creds)
    totals = Totals(gw, out)
    runs = {asyncio.create_task(t.run(timeout=10 ** 9, logout=True)): t for t in targets}
    await asyncio.sleep(0.5)                   # targets first: they see every copy live
    runs.update({asyncio.create_task(s.run()): s for s in sources})
    ticker = asyncio.create_task(totals.run())
    try:
        await asyncio.wait_for(stop.wait(), duration)
    except asyncio.TimeoutError:
        pass
    print("stopping: simulators log out, then the gateway", file=out, flush=True)
    ticker.cancel()
    await stop_simulators(sources, targets, runs)
    if portal:
        await bounded(portal.stop(), "the portal's stop")
    gw_done.set()
    await serve
    for task in runs:
        if not task.done():
            task.cancel()
    print(totals.line(), file=out, flush=True)
    print(checked_line(targets), file=out, flush=True)
    return 0


def demo(config: GatewayConfig, *, rate: float = 500.0, duration: float | None = None) -> int:
    g = config.gateway
    os.umask(0o077)                       # everything under data_dir is private (0600/0700)
    private_dir(g.data_dir)
    os.close(os.open(Path(g.data_dir) / "demo.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    logging.basicConfig(level=logging.INFO, filename=str(Path(g.data_dir) / "demo.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"gateway log: {Path(g.data_dir) / 'demo.log'}", flush=True)
    return uvloop.run(run_demo(config, rate=rate, duration=duration))
