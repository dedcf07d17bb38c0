"""Composition root: config -> stores -> authenticator -> acceptor -> tasks.

Nothing else in the package builds long-lived objects or reads the clock for them: this module
wires every piece together (DESIGN.md rule 4), runs every task under one TaskGroup (rule 5), and
owns the process-level concerns: uvloop through a loop factory (never a global policy), signal
handlers (SIGTERM/SIGINT: graceful stop with a Logout to every session), and shutdown order.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import resource
import signal
import ssl
import time
from datetime import datetime, timedelta
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import uvloop
from prometheus_client import CollectorRegistry

from .auth import KeyStore, LogonAuthenticator, NoticeLog, NOTICES_FILE_NAME
from .auth.canonical import required_tags
from .auth.verify import SessionAuth
from .config import Administrator, GatewayConfig, load_groups
from .errors import ConfigError, DcGatewayError
from .fanout import Fanout, TargetState, TargetStore
from .fsutil import atomic_write, private_dir, stat_signature
from .journal import GroupCommitter, Journal
from .metrics import GatewayMetrics, KeyStatus, SessionStatus, Snapshot, TargetStatus
from .net.http import serve_http
from .routing import RoutingTable
from .notify import ExpiryNotifier, LogMailer, SmtpMailer
from .fix.session import (AuthFailed, Disconnect, LoggedOn, LoggedOut, ProtocolError,
                          ResendRequested, ResendServed, SessionConfig, SessionRejectSent)
from .net.acceptor import Acceptor, AcceptorSettings, SessionSlot
from .store import FileSessionStore

log = logging.getLogger("dcgateway")

STATUS_FILE_NAME = "status.json"
#: Journal retention: at least this long, and through the current week (ILINK.md: 48 hours).
RETENTION_S = 48 * 3600


def build_authenticator(config: GatewayConfig, keystore: KeyStore) -> LogonAuthenticator:
    """The iLink-style HMAC authenticator for every configured session (ILINK.md)."""
    g = config.gateway
    sessions = {s.comp_id: SessionAuth(s.key_scope, required_tags(s.profile))
                for s in config.sessions}
    return LogonAuthenticator(keystore, sessions, state_dir=g.data_dir,
                              sending_time_tolerance_s=g.sending_time_tolerance_s)


def key_owners(config: GatewayConfig) -> Callable[[str], tuple[str, tuple[Administrator, ...]] | None]:
    """Session ID (key scope) -> (entity, its administrators), for expiry notices."""
    by_scope = {s.key_scope: s.entity for s in config.sessions}

    def owner(session_id: str) -> tuple[str, tuple[Administrator, ...]] | None:
        name = by_scope.get(session_id)
        ent = config.entity(name) if name else None
        return None if ent is None else (ent.name, ent.administrators)
    return owner


def session_config(config: GatewayConfig, sdef: Any) -> SessionConfig:
    g = config.gateway
    return SessionConfig(
        begin_string=sdef.begin_string.encode(),
        our_comp_id=g.comp_id.encode(),
        their_comp_id=sdef.comp_id.encode(),
        heartbeat_min=g.heartbeat_min_s,
        heartbeat_max=g.heartbeat_max_s,
    )


def server_ssl_context(tls: Any) -> ssl.SSLContext | None:
    """TLS on the FIX listener when ``gateway.tls`` is configured (standard library ssl)."""
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.ca_file is not None:
        ctx.load_verify_locations(str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return ctx


def metrics_token(path: Path | None) -> bytes | None:
    """The bearer token ``/metrics`` requires, read from ``gateway.metrics_token_file`` (kept out
    of gateway.yaml: it is a secret). An empty or unreadable file stops the start with a reason
    that names the file, never the token."""
    if path is None:
        return None
    try:
        token = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"gateway.metrics_token_file {path}: cannot read it "
                          f"({exc.strerror})") from None
    if not token or not all(0x21 <= b <= 0x7e for b in token):
        raise ConfigError(f"gateway.metrics_token_file {path}: expected one line of printable "
                          "ASCII (the bearer token), without spaces")
    return token


#: Descriptors kept for everything but FIX connections: journal segments and indexes, session
#: files, the metrics server and its scrapers, the key store, logs.
FD_RESERVE = 128


def fit_descriptor_limit(max_connections: int, sessions: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, then bound the FIX connections to what
    fits under it, so a flood of connections meets a clean refusal instead of EMFILE in the
    journal, the metrics server or the key store."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    room = max(16, soft - FD_RESERVE - 2 * sessions)
    if room < max_connections:
        log.warning("max_connections lowered from %d to %d to fit the open-file limit (%d)",
                    max_connections, room, soft)
        return room
    return max_connections


def tune_gc() -> None:
    """Latency: the hot path allocates no reference cycles, so the cyclic GC's full collections
    (tens of ms once a burst leaves many objects alive) buy nothing; freeze what start-up built
    and make collections rare. Called once the gateway is up (run and demo)."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def week_start_before(config: GatewayConfig, now: float) -> float:
    """Epoch seconds of the most recent configured start of week at or before ``now``."""
    ws = config.gateway.week_start
    local = datetime.fromtimestamp(now, ws.tz)
    day = local.date() - timedelta(days=(local.weekday() - ws.day) % 7)
    start = datetime.combine(day, ws.time, ws.tz)
    if start.timestamp() > now:
        start = datetime.combine(day - timedelta(days=7), ws.time, ws.tz)
    return start.timestamp()


class _PushFirst:
    """What /metrics collects: the hot path's counters are handed over first, so a scrape never
    shows them up to a second stale."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    def collect(self):
        self.gateway.push_metrics()
        return self.gateway.registry.collect()


class Gateway:
    """A running gateway. ``start()`` binds the listener; ``serve(stop)`` runs until ``stop`` is
    set, then shuts down gracefully. Tests drive it in-process with port 0."""

    def __init__(self, config: GatewayConfig, *, clock: Callable[[], float] = time.time,
                 authenticator: Any = None) -> None:
        self.config = config
        self.clock = clock
        self.counts: Counter[str] = Counter()
        g = config.gateway
        self.data_dir = Path(g.data_dir)
        private_dir(self.data_dir)
        self.keystore = KeyStore(g.keystore.path, g.keystore.master_key_file)
        if self.keystore.ensure_master_key():
            log.info("created master key %s (mode 0600)", g.keystore.master_key_file)
        if authenticator is None:
            authenticator = build_authenticator(config, self.keystore)
        self.authenticator = authenticator
        mailer = (SmtpMailer(g.smtp.host, g.smtp.port, g.smtp.sender) if g.smtp is not None
                  else LogMailer())
        self.notifier = ExpiryNotifier(self._key_records, NoticeLog(self.data_dir / NOTICES_FILE_NAME),
                                       key_owners(config), mailer, clock=clock)
        t0 = time.monotonic()
        self.journal = Journal(self.data_dir / "journal")
        recovery = self.journal.recover()
        self.table = RoutingTable.build(config.groups, {sd.comp_id: sd for sd in config.sessions})
        self.slots: dict[str, SessionSlot] = {}
        self.targets: dict[str, TargetState] = {}
        for sdef in config.sessions:
            self.slots[sdef.comp_id] = self._make_slot(sdef, recovery)
        self.fanout = Fanout(self.journal, self.table, self.targets, clock=clock,
                             notify=lambda: self.committer.notify())
        self.fanout.sources = {k: v for k, v in self.slots.items() if v.role == "source"}
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics.from_config(self.registry, config)
        self.metrics.snapshot = self._metrics_snapshot
        self._pushed: dict[str, int] = {}     # what the metrics pump already counted
        for name, t in self.targets.items():
            t.observe_latencies = functools.partial(self.metrics.observe_fanout_latencies, name)
        self._locked: set[str] = set()
        self.journal_ok = True
        self._http: Any = None
        self.metrics_port: int | None = None
        self.committer: Any = None            # needs the running loop: made in start()
        self.recovery_seconds = time.monotonic() - t0
        self.metrics.recovered(self.recovery_seconds)
        log.info("recovered journal in %.3fs: %d records in %d segments (%d torn bytes cut); "
                 "groups version %s", self.recovery_seconds, recovery.records, recovery.segments,
                 recovery.torn_bytes, self.table.version)
        self.acceptor = Acceptor(
            AcceptorSettings(our_comp_id=g.comp_id, logon_timeout=g.logon_timeout_s,
                             max_message_size=g.max_message_size,
                             write_buffer_high=g.write_buffer_high,
                             write_buffer_low=g.write_buffer_low,
                             max_connections=g.max_connections,
                             max_inbound_rate=g.max_inbound_msgs_per_s,
                             max_pending_logons=g.max_pending_logons,
                             max_pending_logons_per_address=g.max_pending_logons_per_address,
                             pre_logon_idle=g.pre_logon_idle_s),
            self.slots, clock=clock, app_sink=self.fanout.on_app, authenticator=authenticator,
            on_event=self._on_event)
        self.port: int | None = None
        self._connected_since: dict[str, float] = {}

    def _make_slot(self, sdef: Any, recovery: Any) -> SessionSlot:
        """A session's slot. A source's next inbound seq comes from the journal (what was
        durably accepted), never from its session file; a target's next outbound seq is the
        larger of its session file's (admin messages) and the journal's (copies)."""
        store = FileSessionStore(self.data_dir / "sessions" / f"{sdef.comp_id}.log")
        if store.recovered_torn_bytes:
            log.warning("session %s: dropped a torn record (%d bytes) at the end of %s",
                        sdef.comp_id, store.recovered_torn_bytes, store.path)
        cfg = session_config(self.config, sdef)
        if sdef.role == "source":
            store.set_next_in(recovery.source_next_in.get(sdef.comp_id, 1))
            return SessionSlot(sdef.comp_id, sdef.role, cfg, store)
        target = TargetState(sdef.comp_id, sdef.begin_string, sdef.profile,
                             self.config.gateway.comp_id, self.journal, self.clock,
                             self.config.gateway.target_max_pending)
        next_out = max(store.next_out, recovery.target_next_seq.get(sdef.comp_id, 1))
        target.store = TargetStore(target, store, self.journal, next_out)
        target.written_upto = next_out - 1
        self.targets[sdef.comp_id] = target
        return SessionSlot(sdef.comp_id, sdef.role, cfg, target.store, target=target)

    # -- groups reload ----------------------------------------------------------------------

    def reload_groups(self) -> bool:
        """Re-read the groups file and swap the routing table whole (SIGHUP, or the file
        changed). A bad file is refused with every problem logged; the old table stays."""
        try:
            groups = load_groups(self.config.groups_file, self.config.sessions, self.config.entities)
            table = RoutingTable.build(groups, {sd.comp_id: sd for sd in self.config.sessions})
        except (ConfigError, DcGatewayError, OSError) as exc:
            self.counts["reload_failed"] += 1
            self.metrics.reload(False)
            log.error("groups reload refused, keeping version %s: %s", self.table.version, exc)
            return False
        if table.version != self.table.version:
            self.config = self.config.with_groups(groups)
            self.table = table
            self.fanout.swap_table(table)
            self.metrics.set_groups(groups)
            log.info("groups reloaded: version %s (%d groups)", table.version, len(groups))
        self.counts["reloads"] += 1
        self.metrics.reload(True)
        return True

    async def watch_groups(self, interval: float = 1.0) -> None:
        """Reload when the groups file changes (the CLI replaces it atomically: new inode)."""
        seen = stat_signature(self.config.groups_file)
        while True:
            await asyncio.sleep(interval)
            sig = stat_signature(self.config.groups_file)
            if sig != seen:
                seen = sig
                self.reload_groups()

    async def retention(self, interval: float = 3600.0) -> None:
        """Drop journal segments older than 48 hours and than the start of the week."""
        while True:
            await asyncio.sleep(interval)
            before = min(self.clock() - RETENTION_S, week_start_before(self.config, self.clock()))
            removed = self.journal.prune(before)
            if removed:
                log.info("journal retention: removed %d old segments", removed)

    async def weekly_reset(self) -> None:
        """Sequences reset weekly at gateway.week_start (ILINK.md: beginning of week is 34=1)."""
        while True:
            now = self.clock()
            nxt = week_start_before(self.config, now) + 7 * 86400
            await asyncio.sleep(max(1.0, nxt - now))
            if self.clock() >= nxt - 1:
                await self.reset_sequences("weekly sequence reset")

    async def reset_sequences(self, reason: str) -> None:
        """Log every session out, then reset every session's sequences to 1 (both directions);
        the journal keeps the old week's messages until retention drops them."""
        log.warning("%s: logging out every session and resetting sequences", reason)
        self.acceptor.refusing = f"{reason} in progress; log on again in a minute"
        try:
            await self._reset_all(reason)
        finally:
            self.acceptor.refusing = None

    async def _reset_all(self, reason: str) -> None:
        for slot in self.slots.values():
            conn = slot.connection
            if conn is not None and conn.session is not None and not conn.session.closed:
                conn.session.logout(reason, self.clock())
                conn.pump(self.clock())
        for _ in range(50):                  # bounded wait for the Logout handshakes
            if all(sl.connection is None for sl in self.slots.values()):
                break
            await asyncio.sleep(0.1)
        for slot in self.slots.values():
            if slot.connection is not None:
                slot.connection.close(reason, abort=True)
        await asyncio.sleep(0)                # let connection_lost run for the aborted ones
        await self.committer.flush(timeout=30)
        for slot in self.slots.values():
            try:
                slot.store.reset()
                if slot.role == "source":
                    self.journal.append_source_next_in(slot.comp_id, 1)
            except Exception as exc:
                log.error("sequence reset of %s failed: %s", slot.comp_id, exc)
        self.committer.notify()
        await self.committer.flush(timeout=30)
        self.counts["sequence_resets"] += 1

    def _source_marker(self, name: str, slot: SessionSlot, *, durable: bool = False) -> None:
        """Journal the source's next inbound seq (never raises: a failing disk is logged; the
        journal then still holds an older, lower value, which only costs a ResendRequest).
        ``durable``: fsync it now, before the caller's reply leaves (a sequence reset, 141=Y:
        after a crash the journal must not expect the old, higher seq of a source that was told
        it starts again at 1; a rare, blocking fsync, as for a target's Logon)."""
        try:
            self.journal.append_source_next_in(name, slot.store.next_in)
            if durable:
                self.journal.sync()           # on the owner thread, it writes the buffer first
            self.committer.notify()
        except Exception as exc:
            log.error("could not journal the inbound sequence of %s: %s", name, exc)

    def _on_durable(self, lsn: int) -> None:
        self.journal_ok = True
        self.fanout.on_durable(lsn)

    def _on_journal_error(self, exc: Exception) -> None:
        self.counts["journal_errors"] += 1
        self.journal_ok = False
        self.metrics.journal_error()
        log.error("journal: %s (copies are held until the disk recovers)", exc)

    # -- metrics ------------------------------------------------------------------------------

    def _delta(self, key: str, total: int) -> int:
        d = total - self._pushed.get(key, 0)
        self._pushed[key] = total
        return d

    def push_metrics(self) -> None:
        """Hand the hot path's plain counters to Prometheus (once a second and before a scrape):
        nothing on the per-message path calls into prometheus_client."""
        m, f = self.metrics, self.fanout
        for (source, cat), n in f.in_counts.items():
            d = self._delta(f"in:{source}:{cat}", n)
            if d:
                m.messages_in(source, cat, d)
        for group, n in f.group_counts.items():
            d = self._delta(f"group:{group}", n)
            if d:
                m.group_copy(group, d)
        records = self._delta("journal:records", f.messages_in)
        nbytes = self._delta("journal:bytes", f.journal_bytes)
        if records:
            m.journal_append(records, nbytes)
        for name, t in self.targets.items():
            for cat, n in t.out_counts.items():
                d = self._delta(f"out:{name}:{cat}", n)
                if d and cat is not None:
                    m.messages_out(name, cat, d)
        for name, slot in self.slots.items():
            d = self._delta(f"bin:{name}", slot.bytes_in)
            if d:
                m.bytes_in(name, d)
            d = self._delta(f"bout:{name}", slot.bytes_out)
            if d:
                m.bytes_out(name, d)

    def _metrics_snapshot(self) -> Snapshot:
        self.push_metrics()
        locked = set(self.authenticator.locked_sessions()) \
            if hasattr(self.authenticator, "locked_sessions") else set()
        sessions = [SessionStatus(name, slot.connection is not None and
                                  slot.connection.session is not None,
                                  slot.store.next_in, slot.store.next_out, name in locked)
                    for name, slot in self.slots.items()]
        targets = [TargetStatus(name, t.backlog, t.spill_from is not None)
                   for name, t in self.targets.items()]
        keys = []
        try:
            for r in self.keystore.snapshot().values():
                if r.deleted is None:
                    keys.append(KeyStatus(r.access_key_id, r.session_id, r.expires.timestamp()))
        except DcGatewayError:
            pass                              # an unreadable key store: no key series
        return Snapshot(sessions, targets, keys, self.journal_ok)

    def health(self) -> tuple[bool, str]:
        if not self.acceptor.listening:
            return False, "FIX listener is down"
        if not self.journal_ok:
            return False, "journal is not writable"
        return True, "ok"

    async def metrics_pump(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.push_metrics()

    def _key_records(self) -> list:
        return list(self.keystore.snapshot().values())

    def write_status(self) -> None:
        """data_dir/status.json: pid and connected sessions, for `dcgateway sessions list`."""
        doc = {"pid": os.getpid(), "port": self.port,
               "connected": {k: v for k, v in sorted(self._connected_since.items())}}
        try:
            atomic_write(self.data_dir / STATUS_FILE_NAME, json.dumps(doc).encode(), 0o600)
        except OSError as exc:
            log.warning("could not write %s: %s", STATUS_FILE_NAME, exc)

    # -- event sinks ------------------------------------------------------------------------

    def _on_event(self, slot: SessionSlot | None, ev: Any) -> None:
        name = slot.comp_id if slot is not None else "-"
        self.metrics.session_event(slot.comp_id if slot is not None else None, ev)
        if isinstance(ev, LoggedOn):
            log.info("session %s logged on (HeartBtInt=%d%s)", name, ev.heartbeat_interval,
                     ", sequences reset" if ev.reset else "")
            if slot is not None and slot.role == "source":
                if ev.reset:                  # 141=Y: the journal must know it starts again at 1
                    self._source_marker(name, slot, durable=True)
                if self.fanout.sources_held and slot.connection is not None:
                    slot.connection.hold_reading("journal")   # the journal is behind
            self.counts["logons"] += 1
            self._connected_since[name] = self.clock()
            self.write_status()
        elif isinstance(ev, AuthFailed):            # logged by the authenticator (rate limited)
            self.counts[f"auth_failed:{ev.reason}"] += 1
            is_locked = getattr(self.authenticator, "is_locked", None)
            if is_locked is not None and name not in self._locked and is_locked(name):
                self.metrics.port_closure(name)
            self._locked = set(getattr(self.authenticator, "locked_sessions", lambda: [])())
        elif isinstance(ev, (LoggedOut, Disconnect)):
            log.info("session %s: %s (%s)", name, type(ev).__name__, ev.reason)
            if (isinstance(ev, Disconnect) and slot is not None and slot.role == "source"
                    and slot.connection is None and self.committer is not None):
                # admin messages consumed seqs too: the restart should expect exactly this
                self._source_marker(name, slot)
            if slot is not None and slot.connection is None and \
                    self._connected_since.pop(name, None) is not None:
                self.write_status()
        elif isinstance(ev, SessionRejectSent):
            log.warning("session %s: sent Reject for seq %d (reason %d: %s)", name, ev.ref_seq,
                        ev.reason, ev.text)
            self.counts["rejects_sent"] += 1
        elif isinstance(ev, ProtocolError):
            log.warning("session %s: protocol error %s: %s", name, ev.kind, ev.text)
            self.counts[f"protocol_error:{ev.kind}"] += 1
        elif isinstance(ev, ResendServed):
            log.info("session %s: served ResendRequest %d..%d (%d resent, %d gap-filled)", name,
                     ev.begin, ev.end, ev.resent, ev.gap_filled)
        elif isinstance(ev, ResendRequested):
            log.info("session %s: sent ResendRequest %d..%d", name, ev.begin, ev.end)
        elif isinstance(ev, tuple) and ev and ev[0] == "refused":
            self.counts[f"refused:{ev[1]}"] += 1

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> int:
        g = self.config.gateway
        self.committer = GroupCommitter(self.journal, asyncio.get_running_loop(), self._on_durable,
                                        on_error=self._on_journal_error,
                                        on_fsync=self.metrics.fsync,
                                        max_delay=g.journal_commit_delay_s)
        self.acceptor.max_connections = fit_descriptor_limit(g.max_connections,
                                                             len(self.slots))
        self.port = await self.acceptor.start(g.listen.host, g.listen.port,
                                              ssl=server_ssl_context(g.tls))
        self._http = await serve_http(g.metrics.host, g.metrics.port, _PushFirst(self),
                                      self.health, ssl=server_ssl_context(g.metrics_tls),
                                      bearer_token=metrics_token(g.metrics_token_file))
        self.metrics_port = self._http.sockets[0].getsockname()[1]
        log.info("metrics on %s://%s:%d/metrics (health: /healthz)",
                 "https" if g.metrics_tls else "http", g.metrics.host, self.metrics_port)
        self.write_status()
        return self.port

    async def serve(self, stop: asyncio.Event) -> None:
        if self.port is None:
            await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                committer = tg.create_task(self.committer.run(), name="journal-commit")
                background = [
                    tg.create_task(self.acceptor.run_timers(), name="session-timers"),
                    tg.create_task(self.notifier.run(), name="key-expiry-notices"),
                    tg.create_task(self.watch_groups(), name="groups-watch"),
                    tg.create_task(self.retention(), name="journal-retention"),
                    tg.create_task(self.weekly_reset(), name="weekly-reset"),
                    tg.create_task(self.metrics_pump(), name="metrics-pump"),
                ]
                await stop.wait()
                log.info("stopping: logging out every session")
                await self.acceptor.shutdown()
                for task in background:
                    task.cancel()
                await self.committer.flush()
                committer.cancel()
                if self._http is not None:
                    self._http.close()
                    await self._http.wait_closed()
        finally:
            self.close()

    def close(self) -> None:
        for slot in self.slots.values():
            slot.store.close()
        self.journal.close()
        try:
            (self.data_dir / STATUS_FILE_NAME).unlink()
        except OSError:
            pass


async def _main(config: GatewayConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gw = Gateway(config)
    loop.add_signal_handler(signal.SIGHUP, gw.reload_groups)
    t0 = time.monotonic()
    port = await gw.start()
    log.info("dcgateway %s listening on %s:%d (%d sessions; started in %.3fs)",
             config.gateway.comp_id, config.gateway.listen.host, port, len(gw.slots),
             time.monotonic() - t0)
    tune_gc()
    print(f"dcgateway listening on {config.gateway.listen.host}:{port}", flush=True)
    await gw.serve(stop)
    log.info("stopped cleanly")
    return 0


def run(config: GatewayConfig) -> int:
    """Run the gateway in the foreground until SIGTERM/SIGINT; returns the exit code."""
    os.umask(0o077)                       # everything under data_dir is private (0600/0700)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(config))
