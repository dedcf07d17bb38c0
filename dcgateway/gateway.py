"""Composition root: config -> state -> journal -> routing -> fan-out -> net, and nothing else.

This is the only module that builds long-lived objects and wires them together (no module-level
singletons anywhere), runs every task under one TaskGroup, and decides the start-up and shutdown
order (SIGTERM/SIGINT: a Logout to every session, then the journal flushed; SIGHUP: reload the
groups); the process around it (umask, the uvloop runner, the signals) is
:mod:`dcgateway.runtime.process`. What the pieces do is in their own modules: the data flow in
:mod:`dcgateway.fanout` and :mod:`dcgateway.runtime.flow`, events in
:mod:`dcgateway.runtime.events`, schedules in :mod:`dcgateway.runtime.maintenance`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from . import hotpath
from .auth import LogonAuthenticator, SessionAuth
from .auth.canonical import required_tags
from .config import GatewayConfig
from .errors import DcGatewayError, JournalError, StoreError
from .fanout import Fanout, Outbox, SendingTimes
from .fix.dictionary import DictionaryCache
from .fsutil import private_dir
from .journal import Committer, GroupCommitter, Journal, Recovery, SegmentJournal
from .metrics import GatewayMetrics
from .net.acceptor import Acceptor
from .net.connection import SessionSlot
from .net.http import serve_http
from .routing import RoutingTable
from .runtime import (
    UNWRITABLE_TEXT,
    EventSink,
    Flow,
    JournalHealth,
    Maintenance,
    MetricsPump,
    SessionFileSync,
    StatusFile,
    acceptor_settings,
    adapt_copies,
    copy_describer,
    expiry_notifier,
    fit_descriptor_limit,
    listening,
    log_recovery,
    make_slot,
    metrics_token,
    run_until_signalled,
    scrape_state,
    server_ssl_context,
    session_files,
    tune_for_latency,
    wake_on_source_reads,
)
from .state import open_state

log = logging.getLogger("dcgateway")
#: How long the start waits for status.json to be written (a slow disk only delays it).
STATUS_START_S = 1.0

#: How long a stop waits for the journal to become durable (a stalled disk does not hold it).
STOP_FLUSH_S = 10.0


class Gateway:
    """A running gateway. ``start()`` binds the listeners; ``serve(stop)`` runs until ``stop``
    is set, then shuts down gracefully. Tests drive it in-process with port 0. The cluster
    (:mod:`dcgateway.cluster`) passes its replicated ``journal`` and ``committer_factory``."""

    def __init__(self, config: GatewayConfig, *, clock: Callable[[], float] = time.time,
                 authenticator: LogonAuthenticator | None = None,
                 journal: Journal | None = None,
                 committer_factory: Callable[[Gateway], Committer] | None = None) -> None:
        self.config = config
        self.clock = clock
        g = config.gateway
        self.data_dir = private_dir(Path(g.data_dir))
        self.state = open_state(config)
        if self.state.keys.store.ensure_master_key():
            log.info("created master key %s (mode 0600)", g.keystore.master_key_file)
        self.authenticator = authenticator or LogonAuthenticator(
            self.state.keys.store,
            {s.comp_id: SessionAuth(s.key_scope, required_tags(s.profile))
             for s in config.sessions},
            closures=self.state.closures, sending_time_tolerance_s=g.sending_time_tolerance_s)
        self.dictionaries = DictionaryCache()
        t0 = time.monotonic()
        self.journal: Journal = (journal if journal is not None else SegmentJournal(
            self.data_dir / "journal", durability=g.journal_durability))
        self._committer_factory = committer_factory
        recovery = self.journal.recover()
        self.health = JournalHealth(self.journal, self.data_dir / "journal", self._journal_ok)
        self.sending_times = SendingTimes()      # one 52 per millisecond for every target
        self.slots: dict[str, SessionSlot] = {
            s.comp_id: make_slot(config, s, self.data_dir, self.journal, recovery,
                                 self.dictionaries, self.sending_times)
            for s in config.sessions}
        self.outboxes: dict[str, Outbox] = {
            name: slot.outbox for name, slot in self.slots.items() if slot.outbox is not None}
        table = RoutingTable.build(config.groups, {sd.comp_id: sd for sd in config.sessions})
        self.fanout = Fanout(self.journal, table, self.outboxes, notify=self._notify)
        adapt_copies(config.sessions, self.outboxes, self.dictionaries)
        self.flow = Flow(self.fanout, self.journal, self.slots, clock)
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics.from_config(self.registry, config)
        self.session_sync = SessionFileSync(session_files(self.slots.values()),
                                            on_round=self.metrics.session_files_fsync,
                                            after_round=self.flow.on_files_synced)
        self.metrics.snapshot = lambda: scrape_state(self.slots, self.outboxes,
                                                     self.state.keys.store,
                                                     self.state.closures, self.health.ok)
        self.pump = MetricsPump(self.metrics, self.fanout, self.outboxes, self.slots)
        self.status = StatusFile(self.data_dir, clock, self._sequences,
                                 sessions=list(self.slots), groups_version=table.version)
        self.events = EventSink(self.metrics, self.status, self.authenticator.is_locked)
        self.events.describe_copy = copy_describer(self.journal)
        self.flow.acceptor_event = self.events
        self.acceptor = Acceptor(acceptor_settings(config), self.slots, clock=clock,
                                 app_sink=self.flow.on_app, authenticator=self.authenticator,
                                 on_event=self._on_event)
        self.maintenance = Maintenance(config, self.state.groups, self.fanout, self.journal,
                                       self.metrics, self.acceptor, self.slots, clock)
        self.maintenance.on_reload = self.status.groups_reloaded
        self.notifier = expiry_notifier(config, self.state.keys.store, self.data_dir, clock)
        self.committer: Committer | None = None   # needs the running loop: start()
        self._http: Any = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._recovered(recovery, time.monotonic() - t0, table.version)

    def _recovered(self, recovery: Recovery, seconds: float, version: str) -> None:
        self.recovery_seconds = seconds
        self.metrics.recovered(seconds)
        log_recovery(recovery, seconds, version)

    # -- wiring callbacks -----------------------------------------------------------------------

    def _sequences(self) -> dict[str, tuple[int, int]]:
        """(next_in, next_out) of every session, for status.json."""
        return {n: (s.store.next_in, s.store.next_out) for n, s in self.slots.items()}

    def _notify(self) -> None:
        if self.committer is not None:
            self.committer.notify()

    def _on_event(self, slot: SessionSlot | None, ev: Any) -> None:
        self.flow.on_event(slot, ev)
        self.events(slot, ev)

    def _on_durable(self, lsn: int) -> None:
        self.health.committed()
        self.flow.on_durable(lsn)

    def _on_journal_error(self, exc: Exception) -> None:
        self.metrics.journal_error()
        self.health.failed(str(exc))

    def _journal_ok(self, ok: bool) -> None:
        if ok:
            self.acceptor.refusals.pop("journal_unwritable", None)
        else:
            self.acceptor.refusals["journal_unwritable"] = UNWRITABLE_TEXT

    def reload_groups(self) -> bool:
        return self.maintenance.reload_groups()

    def health_check(self) -> tuple[bool, str]:
        return self.health.check(self.acceptor.listening)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> int:
        g = self.config.gateway
        self.committer = (self._committer_factory(self) if self._committer_factory is not None
                          else GroupCommitter(self.journal, asyncio.get_running_loop(),
                                              self._on_durable, on_error=self._on_journal_error,
                                              on_fsync=self.metrics.fsync,
                                              on_wait=self.metrics.commit_wait,
                                              max_delay=g.journal_commit_delay_s,
                                              fsync_interval=g.journal_fsync_interval_s))
        self.maintenance.committer = self.committer
        self.flow.commit = self.committer.commit_now
        wake_on_source_reads(self.slots.values(), self.committer)
        self.pump.journal_state = self.committer.sync_state
        self.health.probe()
        self.acceptor.max_connections = fit_descriptor_limit(g.max_connections,
                                                             len(self.slots))
        fix_tls, metrics_tls = server_ssl_context(g.tls), server_ssl_context(g.metrics_tls)
        token = metrics_token(g.metrics_token_file)
        with listening("gateway.listen", g.listen.host, g.listen.port):
            self.port = await self.acceptor.start(g.listen.host, g.listen.port, ssl=fix_tls)
        with listening("gateway.metrics", g.metrics.host, g.metrics.port):
            self._http = await serve_http(g.metrics.host, g.metrics.port, self.registry,
                                          self.health_check, ssl=metrics_tls,
                                          bearer_token=token, before_scrape=self.pump.push)
        self.metrics_port = self._http.sockets[0].getsockname()[1]
        log.info("metrics on %s://%s:%d/metrics (health: /healthz)",
                 "https" if g.metrics_tls else "http", g.metrics.host, self.metrics_port)
        self.status.port = self.port
        self.status.write()
        self.status.flush(timeout=STATUS_START_S)   # readers find it once "listening" is said
        return self.port

    async def serve(self, stop: asyncio.Event) -> None:
        if self.port is None:
            await self.start()
        assert self.committer is not None
        try:
            async with asyncio.TaskGroup() as tg:
                committer = tg.create_task(self.committer.run(), name="journal-commit")
                background = [tg.create_task(coro, name=name) for name, coro in (
                    ("session-timers", self.acceptor.run_timers()),
                    ("session-files-sync", self.session_sync.run()),
                    ("key-expiry-notices", self.notifier.run()),
                    ("groups-watch", self.maintenance.watch_groups()),
                    ("journal-retention", self.maintenance.retention()),
                    ("weekly-reset", self.maintenance.weekly_reset()),
                    ("journal-health", self.health.watch()),
                    ("metrics-pump", self._every_second()))]
                await stop.wait()
                log.info("stopping: logging out every session")
                await self.acceptor.shutdown()
                for task in background:
                    task.cancel()
                await self._flush_before_stop()
                committer.cancel()
                if self._http is not None:
                    self._http.close()
                    await self._http.wait_closed()
        finally:
            self.close()

    async def _flush_before_stop(self, timeout: float | None = None) -> None:
        """The journal made durable before the stop, bounded: on a disk that cannot be written
        the stop goes on (what was not journaled is asked for again from the sources when they
        log on to the next start; nothing was acknowledged to them for it)."""
        assert self.committer is not None
        timeout = STOP_FLUSH_S if timeout is None else timeout
        try:
            await self.committer.flush(timeout=timeout)
        except (TimeoutError, JournalError) as exc:
            j = self.journal
            log.error("stopping without a durable journal (%s): %d records not on the disk; "
                      "the sources are asked for them again at the next start",
                      str(exc) or f"not flushed within {timeout:g}s"
                      + (f": {self.health.reason}" if self.health.reason else ""),
                      j.appended_lsn - j.durable_lsn)

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.pump.push()
            self.status.tick()
            self.events.noisy.flush()

    def close(self) -> None:
        failed: list[str] = []
        for slot in self.slots.values():
            try:
                slot.store.close()
            except (StoreError, OSError) as exc:
                failed.append(f"session {slot.comp_id}: {exc}")
        try:
            self.journal.close()
        except (JournalError, OSError) as exc:
            failed.append(f"journal in {self.data_dir / 'journal'}: {exc}")
        self.status.remove()
        self.state.close()
        if failed:
            raise DcGatewayError("stopped, but could not close cleanly (it is recovered at the "
                                 "next start): " + "; ".join(failed))


async def _serve(config: GatewayConfig, stop: asyncio.Event) -> int:
    gw = Gateway(config)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gw.reload_groups)
    t0 = time.monotonic()
    port = await gw.start()
    log.info("dcgateway %s listening on %s:%d (%d sessions; started in %.3fs; %s)",
             config.gateway.comp_id, config.gateway.listen.host, port, len(gw.slots),
             time.monotonic() - t0, hotpath.describe())
    tune_for_latency()
    print(f"dcgateway listening on {config.gateway.listen.host}:{port}", flush=True)
    await gw.serve(stop)
    log.info("stopped cleanly")
    return 0


def run(config: GatewayConfig) -> int:
    """Run the gateway in the foreground until SIGTERM/SIGINT (SIGHUP reloads the groups);
    returns the exit code."""
    return run_until_signalled(lambda stop: _serve(config, stop))
