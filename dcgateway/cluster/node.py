"""One node of the cluster (``dcgateway run --node ID``): standby until it holds the primary
lease, then the gateway on the replicated journal until it stops or loses the lease.

Why one primary serves every session (docs/cluster.md): a target's sequence must be one
function of one totally ordered stream with one writer at a time, and a source's copies must
reach targets on other nodes in order; with every session on the lease holder, the gateway's
own fan-out (route once, give each target its next seq, journal, release when durable) runs
unchanged, on the replicated journal. The other nodes are hot in everything but the journal:
they listen, authenticate each Logon against the cluster's key pairs and answer it with a
Logout naming the node that serves the session, and the simulators (any FIX engine with a list
of addresses) go there.

Taking over: the lease is free once a standby has observed it unchanged for ``lease_s`` while
the leases bucket answered it (:mod:`.leases`: a NATS server's loss does not move it). The new
primary reads the stream to its end into a fresh local journal (the sequence state of every source,
target and session), appends its takeover record (from then on the old writer is fenced out),
builds the gateway on that journal and serves: sources are asked for what was not replicated
(their next expected seq comes from the stream), targets continue on their own sequence and get
whatever they missed as resends (43=Y, 122). Losing the lease (or being fenced) cuts every
client connection at once (:mod:`.fence`) and the node goes back to standby.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from typing import Any

from ..config import GatewayConfig
from ..gateway import Gateway
from ..net.connection import FixConnection, SessionSlot
from ..runtime import cancel_and_wait, unless_stopped
from ..vocab import Role
from .connect import Names, connect_at_start
from .fence import Gate, MarkingStore, fence_connection
from .journal import ClusterCommitter, ClusterJournal, make_log, rebuild
from .kvmirror import open_bucket
from .leases import PRIMARY, LeaseManager, open_leases
from .marks import (
    MARK_FILE_NAME,
    MARK_KEY,
    Mark,
    MarkFile,
    StreamBehind,
    raise_shared_mark,
    shared_mark,
    stream_problem,
)
from .metrics import ClusterMetrics
from .replog import Fenced, ReplicatedLog, ensure_stream
from .standby import Standby

log = logging.getLogger("dcgateway.cluster")

#: The journal stream keeps records this long: the venue's 48 hours through a whole week.
STREAM_MAX_AGE_S = 9 * 86400.0
#: After a failed takeover the node gives the lease up and does not take it again for this
#: long, doubling with each failure in a row up to the bound (another node tries meanwhile).
TAKEOVER_BACKOFF_S = 1.0
TAKEOVER_BACKOFF_MAX_S = 60.0

#: What a node is doing (its presence entry's ``state``, ``cluster status``, ``/healthz``).
STANDBY, TAKING_OVER, SERVING, BACKING_OFF = "standby", "taking over", "serving", "backing off"
#: ... and refusing: the journal stream holds less than was acknowledged (:mod:`.marks`)
REFUSING = "refusing"
#: How often the serving node moves its acknowledged mark (:mod:`.marks`)
MARK_EVERY_S = 0.5


def elsewhere_text(comp_id: str, holder: dict[str, Any] | None) -> str:
    """The Logout text for a session another node serves (clients parse ``at HOST:PORT``);
    while nobody serves yet (the lease is free, or its holder is still taking over), the
    client is told to log on again, not sent to a node that would not answer."""
    if holder is None or holder.get("state", SERVING) != SERVING:
        return (f"no node serves session {comp_id} right now (taking over); log on again in "
                "a second")
    return (f"session {comp_id} is served by node {holder.get('node')} at "
            f"{holder.get('address')}; log on there")


class ClusterNode:
    """The node process's life (module docstring). ``run(stop)`` until ``stop`` is set."""

    def __init__(self, config: GatewayConfig) -> None:
        assert config.cluster is not None and config.cluster.this_node is not None
        self.config = config
        self.cluster = config.cluster
        self.me = config.cluster.this_node
        self.names = Names(config.cluster.name)
        self.leases: LeaseManager | None = None
        self.holders: dict[str, dict[str, Any] | None] = {}
        self.gateway: Gateway | None = None
        self.journal: ClusterJournal | None = None
        self.metrics = ClusterMetrics(self)
        self._primary = asyncio.Event()
        self._nc: Any = None
        self._lease_nc: Any = None
        self.phase = "connecting to"        # what it does before it is up (a stop names it)
        self._lost = asyncio.Event()
        self.takeovers = 0
        self.takeover_failures = 0          # in all (the counter)
        self._failures_in_row = 0           # since the last takeover that served
        self.backoff_s = 0.0                # the hold-off after the last failure
        self.state = STANDBY
        self._standby: Standby | None = None
        self.refusal = ""                   # why it refuses to serve (REFUSING)
        self.stream_missing = 0             # acknowledged records the stream lacks
        self.mark_file = MarkFile(config.gateway.data_dir / MARK_FILE_NAME, self.names.journal)
        self._marks_kv: Any = None

    # -- leases -----------------------------------------------------------------------------------

    def _acquired(self, name: str) -> None:
        self._primary.set()

    def _on_lost(self, name: str) -> None:
        self._primary.clear()
        self._lost.set()
        if self.state in (SERVING, TAKING_OVER):
            self.state = STANDBY            # published when the run loop is back in standby

    def serving(self) -> bool:
        """Whether this node holds the primary lease now (the send path's check); it serves
        clients only once its takeover is done (:attr:`state` is ``serving``)."""
        return self.leases is not None and self.leases.holds(PRIMARY)

    def health(self) -> tuple[bool, str]:
        """``/healthz`` of a node that does not serve: up, and what it is doing; 503 while it
        refuses to serve from a stream that lost acknowledged records (an operator must act)."""
        if self.state == REFUSING:
            return False, f"refusing to serve: {self.refusal}"
        if self.state == BACKING_OFF:
            return True, (f"standing by (backing off after {self._failures_in_row} failed "
                          f"takeover{'s' if self._failures_in_row != 1 else ''})")
        return True, "taking over" if self.state == TAKING_OVER else "standing by"

    async def _set_state(self, state: str) -> None:
        """What this node does now, published in its presence entry at once (``cluster
        status`` and the other nodes' Logouts read it); best effort, bounded."""
        self.state = state
        if self.leases is None:
            return
        self.leases.info["state"] = state
        if state == REFUSING:
            self.leases.info["refusal"] = self.refusal
        else:
            self.leases.info.pop("refusal", None)
        try:
            await asyncio.wait_for(self.leases.announce(), 2.0)
        except Exception as exc:
            log.debug("announcing state %s: %s", state, exc)

    def _holder(self) -> dict[str, Any] | None:
        """The serving node as its lease and presence say; None when free, held by this
        node's own previous life (killed: its lease has not run out yet), or held by a node
        that does not serve yet (taking over): those serve nobody."""
        h = self.holders.get(PRIMARY)
        if h is None:
            return None
        if h.get("node") == self.me.node_id:
            return h if self.state == SERVING and self.serving() else None
        return h if h.get("state", SERVING) == SERVING else None

    async def _watch_holder(self) -> None:
        """Who holds the primary lease, and whether it serves yet (its presence entry's
        state), for the Logouts this node answers with."""
        assert self.leases is not None
        while True:
            try:
                h = await self.leases.holder(PRIMARY)
                if h is not None and h.get("node") != self.me.node_id:
                    seen = await self.leases.presence(str(h.get("node")))
                    h = {**h, "state": (seen or {}).get("state", SERVING if seen else None)}
                self.holders[PRIMARY] = h
            except Exception as exc:
                log.debug("reading the primary lease: %s", exc)
            await asyncio.sleep(0.25)

    # -- the node's life --------------------------------------------------------------------------

    async def _setup(self, stop: asyncio.Event) -> None:
        """Connect (:class:`~.connect.ClusterUnavailable` when no NATS server answers in a
        bounded time), then make sure the journal stream and the leases bucket exist; that is
        retried (NATS may be electing leaders after a restart) until it works or ``stop``."""
        self._nc = await connect_at_start(self.cluster, f"dcgateway-{self.me.node_id}")
        while not stop.is_set():
            self.phase = "preparing the journal stream and the leases bucket on"
            try:
                js = self._nc.jetstream(timeout=5)
                await ensure_stream(js, self.names.journal, [f"{self.names.prefix}.>"],
                                    self.cluster.replicas, STREAM_MAX_AGE_S)
                # the leases on a connection of their own: a renewal must never queue behind
                # thousands of journal publishes and their acknowledgements
                self._lease_nc = self._lease_nc or await connect_at_start(
                    self.cluster, f"dcgateway-{self.me.node_id}-leases")
                kv = await open_leases(self._lease_nc.jetstream(timeout=5),
                                       self.names.bucket("leases"), self.cluster.replicas,
                                       self.cluster.lease_s)
                self._marks_kv = await open_bucket(self._lease_nc.jetstream(timeout=5),
                                                   self.names.bucket("marks"),
                                                   self.cluster.replicas)
                self.leases = LeaseManager(kv, self.me.node_id, self.cluster.lease_s,
                                           info={"address": str(self.me.listen),
                                                 "metrics": str(self.me.metrics),
                                                 "state": self.state},
                                           want=[PRIMARY], on_acquired=self._acquired,
                                           on_lost=self._on_lost)
                return
            except Exception as exc:
                log.warning("node %s: the cluster is not ready (%s); retrying",
                            self.me.node_id, exc or type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _start(self, stop: asyncio.Event) -> bool:
        """:meth:`_setup` until done or ``stop``: False when stopped first (a signal while it
        connects stops the node at once: a graceful stop, logged with what it was doing); a
        node that cannot connect raises (exit 1 with one ``error:`` line). Either way it closes
        what it opened."""
        try:
            await unless_stopped(self._setup(stop), stop)
        except BaseException:
            await self._close_nats()
            raise
        if self.leases is None or stop.is_set():
            await self._close_nats()
            log.warning("node %s stopped (SIGTERM or SIGINT) before it was up: it was %s the "
                        "cluster's NATS servers (%s)", self.me.node_id, self.phase,
                        ", ".join(self.cluster.nats.servers))
            return False
        return True

    async def run(self, stop: asyncio.Event) -> int:
        if not await self._start(stop):
            return 0
        assert self.leases is not None
        tasks = [asyncio.create_task(self.leases.run(), name="leases"),
                 asyncio.create_task(self._watch_holder(), name="lease-holder")]
        try:
            while not stop.is_set():
                try:
                    await self._standby_until_primary(stop)
                except Exception as exc:      # the cluster's state cannot be read, ...
                    log.error("node %s cannot stand by (%s); retrying",
                              self.me.node_id, exc or type(exc).__name__)
                    await asyncio.sleep(1.0)
                    continue
                if stop.is_set():
                    break
                try:
                    await self._serve_as_primary(self._nc, stop)
                except Exception as exc:      # a NATS timeout while taking over, ...
                    await self._takeover_failed(exc)
                finally:
                    if self._standby is not None and self._standby.stopped:
                        self._standby = None
                    if self.state not in (BACKING_OFF, REFUSING):
                        await self._set_state(STANDBY)
        finally:
            await cancel_and_wait(*tasks)
            if self._standby is not None:
                await self._standby.stop()
            await self._give_up_lease()
            await self._close_nats()
        return 0

    async def _close_nats(self) -> None:
        for conn in (self._nc, self._lease_nc):
            try:
                if conn is not None:
                    await asyncio.wait_for(conn.close(), 5)
            except Exception as exc:
                log.warning("closing the NATS connection: %s", exc)

    async def _takeover_failed(self, exc: BaseException) -> None:
        """The lease is given up at once, so another node can try, and this node does not
        take it again for a while (doubling, bounded): holding a lease it cannot serve with,
        or winning it back every second, would keep every client away (a livelock). A stream
        that lost acknowledged records is refused the same way, louder: it may catch up when
        the servers that hold the records come back, and the node tries again by itself."""
        if isinstance(exc, StreamBehind):
            await self._refuse(exc)
            return
        self.takeover_failures += 1
        self._next_backoff()
        await self._give_up_lease()
        log.error("node %s could not take over (%s): it gave the primary lease up for another "
                  "node and will not take it again for %.1fs (%d failed takeovers in a row)",
                  self.me.node_id, exc or type(exc).__name__, self.backoff_s,
                  self._failures_in_row)
        await self._set_state(BACKING_OFF)

    def _next_backoff(self) -> float:
        self._failures_in_row += 1
        delay = min(TAKEOVER_BACKOFF_MAX_S,
                    TAKEOVER_BACKOFF_S * 2 ** min(self._failures_in_row - 1, 16))
        self.backoff_s = delay * random.uniform(0.9, 1.1)    # two nodes do not stay in step
        if self.leases is not None:
            self.leases.hold_off(PRIMARY, self.backoff_s)
        return self.backoff_s

    async def _refuse(self, exc: StreamBehind) -> None:
        self.takeover_failures += 1
        self.refusal, self.stream_missing = str(exc), exc.missing
        delay = self._next_backoff()
        await self._give_up_lease()
        log.critical(
            "node %s REFUSES TO SERVE: %s. Serving from this stream would lose copies and give "
            "their target sequence numbers again. This node keeps its local journal (%s) and "
            "tries again in %.1fs: bring back the NATS servers that hold the missing records "
            "(the stream catches up by itself). If the records are gone for good, stop every "
            "node, keep %s (it holds the records up to the acknowledged one), reconcile the "
            "targets, then delete %s on every node and the key %s of bucket %s before "
            "starting again.", self.me.node_id, exc, self.config.gateway.data_dir / "journal",
            delay, self.config.gateway.data_dir / "journal", MARK_FILE_NAME, MARK_KEY,
            self.names.bucket("marks"))
        await self._set_state(REFUSING)

    async def _check_marks(self, js: Any, first: int, last: int) -> None:
        """Refuse (:class:`~.marks.StreamBehind`) a stream that lacks a record this node, or
        the cluster, saw acknowledged; the node's own mark is shared so that every other
        node refuses that stream too."""
        local = self.mark_file.read()
        shared = await shared_mark(self._marks_kv, self.names.journal)
        for mark, where in ((local, f"this node's {self.mark_file.path}"),
                            (shared, f"the cluster's {self.names.bucket('marks')}/{MARK_KEY}")):
            if mark is None:
                continue
            problem = await stream_problem(js, self.names.journal, first, last, mark)
            if problem is not None:
                if local is not None and (shared is None or shared.seq < local.seq):
                    try:
                        await asyncio.wait_for(raise_shared_mark(self._marks_kv, local), 5)
                    except Exception as exc:
                        log.warning("sharing the journal mark: %s", exc)
                raise StreamBehind(f"{problem[0]} (as {where} says)", problem[1])

    async def _keep_marks(self, replog: Any) -> None:
        """While serving: the acknowledged mark, in the node's file and in the cluster."""
        shared = 0
        while True:
            self._write_mark(replog)
            written = self.mark_file.written
            if written is not None and written.seq > shared:
                try:
                    await asyncio.wait_for(raise_shared_mark(self._marks_kv, written), 2)
                    shared = written.seq
                except Exception as exc:
                    log.debug("sharing the journal mark: %s", exc)
            await asyncio.sleep(MARK_EVERY_S)

    def _write_mark(self, replog: Any) -> None:
        seq, rid = replog.acked_mark
        if seq <= 0:
            return
        try:
            self.mark_file.write(Mark(self.names.journal, seq, rid))
        except OSError as exc:
            log.error("cannot write the journal mark %s: %s", self.mark_file.path, exc)

    async def _give_up_lease(self) -> None:
        if self.leases is not None and self.leases.held:
            self._primary.clear()
            try:
                await asyncio.wait_for(self.leases.release(PRIMARY), 5)
            except Exception as exc:
                log.warning("releasing the lease: %s", exc)

    async def _standby_until_primary(self, stop: asyncio.Event) -> None:
        """Listen and answer every correctly signed Logon with the serving node's address,
        until this node holds the primary lease (or ``stop``). The standby listener stays up
        through the takeover (its Logouts then say "taking over") until the gateway is about
        to listen in its place."""
        if self._standby is None:
            standby = Standby(self.config, lambda comp: elsewhere_text(comp, self._holder()),
                              self.metrics, self.health)
            try:
                await standby.start()
            except BaseException:
                await standby.stop()
                raise
            self._standby = standby
            log.info("node %s standing by on %s", self.me.node_id, self.me.listen)
        while not self.serving() and not stop.is_set():
            left = (self.leases.holding_off(PRIMARY)
                    if self.leases is not None and self.state == BACKING_OFF else 0.0)
            if self.state == BACKING_OFF and not left:
                await self._set_state(STANDBY)      # it takes the lease again when free
            waits = [asyncio.ensure_future(self._primary.wait()),
                     asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=left + 0.05 if left else None,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _serve_as_primary(self, nc: Any, stop: asyncio.Event) -> None:
        t0 = time.monotonic()
        self._lost.clear()
        await self._set_state(TAKING_OVER)
        taken = await self._take_over_journal(nc)
        if taken is None:
            return
        journal, replog, last = taken
        gw, gate, marks = await self._start_gateway(journal, replog)
        log.warning("node %s serves every session (took over in %.3fs at stream sequence %d)",
                    self.me.node_id, time.monotonic() - t0, last)
        gw_stop = asyncio.Event()

        async def until_lost() -> None:
            await asyncio.wait([asyncio.ensure_future(self._lost.wait()),
                                asyncio.ensure_future(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if self._lost.is_set():
                gate.lost()
            gw_stop.set()
        watcher = asyncio.create_task(until_lost())
        try:
            await gw.serve(gw_stop)
        finally:
            await cancel_and_wait(watcher, marks)
            self._write_mark(replog)          # the last acknowledgements, before it goes
            await replog.close()
            self.gateway = None
        if self._lost.is_set():
            log.error("node %s stopped serving (lease lost or journal fenced)", self.me.node_id)

    async def _take_over_journal(self, nc: Any
                                 ) -> tuple[ClusterJournal, ReplicatedLog, int] | None:
        """The stream checked against what was acknowledged (before the local copy is replaced),
        the local journal rebuilt from it, and the writer's role taken: (journal, log, the
        stream's last sequence); None when the lease went meanwhile."""
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(self.names.journal)
        last = int(info.state.last_seq)
        await self._check_marks(js, int(info.state.first_seq), last)
        journal = await rebuild(nc, self.names, self.config.gateway.data_dir / "journal", last)

        def fenced() -> None:
            self._lost.set()
        replog = make_log(nc, self.names, self.me.node_id, journal, fenced)
        try:
            await replog.take_over(after=last)
        except Fenced as exc:
            await replog.close()
            raise Fenced(f"could not take over the journal: {exc}") from None
        if not self.serving():
            await replog.close()
            return None
        return journal, replog, last

    async def _start_gateway(self, journal: ClusterJournal, replog: ReplicatedLog
                             ) -> tuple[Gateway, Gate, asyncio.Task[None]]:
        """The gateway on the rebuilt journal, listening in the standby's place: (gateway, its
        fence gate, the task keeping the acknowledged marks)."""
        shutil.rmtree(self.config.gateway.data_dir / "sessions", ignore_errors=True)  # a cache
        gw = Gateway(self.config, journal=journal,
                     committer_factory=lambda g: ClusterCommitter(journal, g._on_durable,
                                                                  self.serving))
        self.gateway, self.journal = gw, journal
        gw.reload_groups()               # the cluster's groups, not the file's: they may differ
        self._adopt_sessions(gw, journal)
        gate = Gate(journal, self.serving)

        def admit(slot: SessionSlot, conn: FixConnection) -> str | None:
            if not self.serving():
                return elsewhere_text(slot.comp_id, self._holder())
            fence_connection(conn, gate, slot.store)
            return None
        gw.acceptor.admit = admit
        self.metrics.attach(gw.registry)
        self.takeovers += 1
        if self._standby is not None:                 # the gateway listens in its place
            await self._standby.stop()
        marks = asyncio.create_task(self._keep_marks(replog), name="journal-marks")
        try:
            await gw.start()
        except BaseException:
            await cancel_and_wait(marks)
            raise
        self._failures_in_row = 0
        self.backoff_s = 0.0
        self.refusal, self.stream_missing = "", 0
        await self._set_state(SERVING)
        return gw, gate, marks

    def _adopt_sessions(self, gw: Gateway, journal: ClusterJournal) -> None:
        """Every session continues the sequence numbers the stream recorded, and records its
        own from now on (:class:`~.fence.MarkingStore`)."""
        for comp_id, slot in gw.slots.items():
            store = slot.store
            out = journal.session_out.get(comp_id)
            if out is not None and out > store.next_out:
                store.set_next_out(out)
            if slot.role == Role.TARGET:
                nin = journal.session_in.get(comp_id)
                if nin is not None:
                    store.set_next_in(nin)
            slot.store = MarkingStore(store, journal, comp_id, slot.role == Role.TARGET)


def run_node(config: GatewayConfig) -> int:
    """``dcgateway run --node``: the node in the foreground until SIGTERM/SIGINT."""
    from ..runtime import run_until_signalled

    async def main(stop: asyncio.Event) -> int:
        node = ClusterNode(config)
        print(f"dcgateway node {node.me.node_id} on {node.me.listen}", flush=True)
        return await node.run(stop)

    return run_until_signalled(main)
