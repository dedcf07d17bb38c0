"""The replicated journal: the :class:`~dcgateway.journal.Journal` seam on a JetStream stream.

What it is: every record the embedded journal writes (a source message with the target sequence
numbers the fan-out gave it, a source's inbound-sequence marker, a target's reset) is appended
to the cluster's journal stream through :class:`~.replog.ReplicatedLog` (one writer, fenced,
pipelined), plus one more kind the embedded journal keeps in session files: a session's
outbound sequence (the gateway's Heartbeats and replies consume sequence numbers too, and the
next node must continue after them). A record counts as durable, and ``on_durable`` says so,
once the stream acknowledged it: a quorum of its replicas holds it.

The node also appends each record to a local :class:`~dcgateway.journal.SegmentJournal`
without fsync: it is the read side (resends and catch-up read targets' copies back by target
seq from its indexes, as in one-process mode), rebuilt from the stream when the node takes over
(:func:`rebuild`), so the fan-out, outboxes and sessions run unchanged. Reads stop at the
replicated durable point, never at the local one.

Message ids: a source message's ``Nats-Msg-Id`` is ``<source>.<epoch>.<MsgSeqNum>``, the epoch
counting the source's sequence resets, so a publish retried after a lost acknowledgement is
stored once.

``sync()`` cannot block the event loop that receives the acknowledgements; it raises the
*barrier* instead: the fenced transports (:mod:`.fence`) hold every write to a client until
the durable point passes it, which is what a blocking sync buys in one-process mode (a target
that logs on is never served a copy, or a sequence number, the cluster could still forget).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..journal import Entry, Recovery, SegmentJournal
from ..runtime.process import cancel_and_wait
from .connect import Names
from .replog import ReplicatedLog, replay

log = logging.getLogger("dcgateway.cluster")

H_TYPE, H_SRC, H_SEQ, H_RECV, H_TGT = "Dcgw-Type", "Dcgw-Src", "Dcgw-Seq", "Dcgw-Recv", "Dcgw-Tgt"


class ClusterJournal:
    """:class:`~dcgateway.journal.Journal` on the replicated log (module docstring)."""

    #: durable means acknowledged by a quorum of the stream's replicas
    durability = "replicated"

    def __init__(self, local: SegmentJournal, names: Names, recovery: Recovery,
                 epochs: dict[str, int], session_out: dict[str, int],
                 session_in: dict[str, int]) -> None:
        self.local = local
        self.names = names
        self._recovery = recovery
        self.epochs = epochs
        self.session_out = session_out
        self.session_in = session_in
        self._sources = dict(recovery.source_next_in)
        self.log: ReplicatedLog | None = None
        self._pending: deque[tuple[int, int]] = deque()    # (stream seq, local lsn), in order
        self._durable = local.durable_lsn
        self.barrier = 0
        self.on_durable: Callable[[int], None] = lambda lsn: None
        self.on_stream_acked: Callable[[int], None] = lambda seq: None
        self.acked_stream_seq = 0

    # -- durability from the stream's acknowledgements ------------------------------------------

    def acked(self, stream_seq: int) -> None:
        """``ReplicatedLog.on_acked``: records up to ``stream_seq`` are replicated."""
        self.acked_stream_seq = stream_seq
        durable = self._durable
        pending = self._pending
        while pending and pending[0][0] <= stream_seq:
            durable = pending.popleft()[1]
        if not pending:
            # everything published is replicated: what the local journal holds beyond it is
            # its own bookkeeping (segment snapshots), never anything a client waits for
            durable = max(durable, self.local.appended_lsn)
        if durable > self._durable:
            self._durable = durable
            self.on_durable(durable)
        self.on_stream_acked(stream_seq)

    def _publish(self, lsn: int, subject: str, payload: bytes, msg_id: str | None = None,
                 headers: dict[str, str] | None = None) -> int:
        assert self.log is not None
        seq = self.log.append(subject, payload, msg_id, headers)
        self._pending.append((seq, lsn))
        return lsn

    @property
    def unreplicated(self) -> int:
        return len(self._pending)

    # -- the Journal protocol -------------------------------------------------------------------

    @property
    def appended_lsn(self) -> int:
        return self.local.appended_lsn

    @property
    def written_lsn(self) -> int:
        return self.local.written_lsn

    @property
    def durable_lsn(self) -> int:
        return self._durable

    @property
    def synced_lsn(self) -> int:
        """Replicated is this journal's disk: what a quorum holds survives this machine."""
        return self._durable

    @property
    def unsynced_bytes(self) -> int:
        """The local read side's (it is not what the cluster's durability rests on)."""
        return self.local.unsynced_bytes

    def recover(self) -> Recovery:
        return self._recovery

    def append(self, source: str, source_seq: int, received: float, raw: bytes,
               targets: Sequence[tuple[str, int]]) -> int:
        lsn = self.local.append(source, source_seq, received, raw, targets)
        if source_seq >= self._sources.get(source, 0):
            self._sources[source] = source_seq + 1
        hdrs = {H_TYPE: "app", H_SRC: source, H_SEQ: str(source_seq), H_RECV: repr(received),
                H_TGT: ",".join(f"{t}:{s}" for t, s in targets)}
        return self._publish(lsn, self.names.source_subject(source), raw,
                             f"{source}.{self.epochs.get(source, 0)}.{source_seq}", hdrs)

    def append_source_next_in(self, source: str, next_in: int) -> int:
        lsn = self.local.append_source_next_in(source, next_in)
        if next_in < self._sources.get(source, 1):        # a sequence reset: a new epoch
            self.epochs[source] = self.epochs.get(source, 0) + 1
        self._sources[source] = next_in
        body = {"type": "next_in", "source": source, "next_in": next_in,
                "epoch": self.epochs.get(source, 0)}
        return self._publish(lsn, self.names.marker_subject(source), json.dumps(body).encode())

    def append_session(self, comp_id: str, next_out: int | None = None,
                       next_in: int | None = None) -> int:
        """A session's own sequence numbers (module docstring); its stream sequence, which the
        session's writes wait for (it has no local record: its lsn is the current one)."""
        lsn = self.local.appended_lsn
        body: dict[str, Any] = {"type": "session", "comp_id": comp_id}
        if next_out is not None:
            body["next_out"] = self.session_out[comp_id] = next_out
        if next_in is not None:
            body["next_in"] = self.session_in[comp_id] = next_in
        assert self.log is not None
        seq = self.log.append(self.names.session_subject(comp_id), json.dumps(body).encode())
        self._pending.append((seq, lsn))
        return seq

    def flush_writes(self, upkeep: bool = True) -> int:
        return self.local.flush_writes(upkeep)

    def upkeep(self, idle: bool = False) -> None:
        self.local.upkeep(idle)

    def sync_to_disk(self) -> int:
        """The local read side only (it is rebuilt from the stream on a takeover)."""
        return self.local.sync_to_disk()

    def sync(self) -> int:
        """Non-blocking here (module docstring): raise the barrier writes wait behind."""
        if self._pending:
            self.barrier = max(self.barrier, self._pending[-1][1])
        return self._durable

    def read_target(self, target: str, from_seq: int, to_seq: int, *,
                    durable_only: bool = True) -> list[Entry]:
        got = self.local.read_target(target, from_seq, to_seq, durable_only=False)
        if not durable_only:
            return got
        out = []
        for e in got:
            if e.lsn > self._durable:
                break
            out.append(e)
        return out

    def target_last_seq(self, target: str) -> int:
        return self.local.target_last_seq(target)

    def reset_target(self, target: str) -> None:
        self.local.reset_target(target)
        self._publish(self.local.appended_lsn, self.names.target_subject(target),
                      json.dumps({"type": "reset", "target": target}).encode())

    def prune(self, before: float) -> int:
        return self.local.prune(before)       # the stream drops old records by its max_age

    @property
    def checkpoint_due(self) -> bool:
        return self.local.checkpoint_due

    def checkpoint(self) -> bool:
        return self.local.checkpoint()

    def hand_rolls_to(self, worker: bool) -> None:
        """Nothing to hand over: the local read side is not fsynced, so its rolls are quick
        (and no committer thread runs here)."""

    @property
    def roll_due(self) -> bool:
        return False

    def roll(self) -> bool:
        return False

    def close(self) -> None:
        self.local.close()


class ClusterCommitter:
    """The :class:`~dcgateway.journal.Committer` of the replicated journal: hands appended
    records to the log (one flush per wake-up, however many were appended) and runs the log's
    resynchronisation; durability is reported by the acknowledgements."""

    def __init__(self, journal: ClusterJournal, on_durable: Callable[[int], None],
                 serving: Callable[[], bool] = lambda: True) -> None:
        self.journal = journal
        journal.on_durable = on_durable
        self.serving = serving
        self._wake = asyncio.Event()

    def notify(self) -> None:
        self._wake.set()

    def commit_now(self) -> None:
        """The acknowledgements, not this call, make records durable: hand them to the log."""
        self._wake.set()

    def sync_state(self) -> tuple[float, int]:
        """(no fsync runs here, records published and not yet acknowledged by the stream)."""
        return 0.0, self.journal.unreplicated

    async def run(self) -> None:
        log_ = self.journal.log
        assert log_ is not None
        runner = asyncio.ensure_future(log_.run())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                j = self.journal.local
                j.flush_writes()
                j.sync()                              # no fsync: marks the local copy written
                await log_.flush()
                if j.checkpoint_due:
                    j.checkpoint()
        finally:
            await cancel_and_wait(runner)

    async def flush(self, timeout: float | None = None) -> int:
        """Until everything appended so far is replicated (bounded by ``timeout``)."""
        target = self.journal.appended_lsn
        self.notify()
        async with asyncio.timeout(timeout if timeout is not None else 30):
            while (self.journal.durable_lsn < target and self.journal.unreplicated
                   and self.serving() and not (self.journal.log and self.journal.log.fenced)):
                await asyncio.sleep(0.005)
                self.notify()
        return self.journal.durable_lsn


async def rebuild(nc: Any, names: Names, directory: Path, upto: int) -> ClusterJournal:
    """A fresh local journal in ``directory`` from the stream's records 1..``upto`` (the
    takeover's read): the sequence state every target and source had when the last writer
    stopped."""
    if directory.exists():
        shutil.rmtree(directory)
    local = SegmentJournal(directory, fsync=False)
    local.recover()
    sources: dict[str, int] = {}
    targets: dict[str, int] = {}
    epochs: dict[str, int] = {}
    session_out: dict[str, int] = {}
    session_in: dict[str, int] = {}
    count = 0

    def apply(seq: int, subject: str, headers: dict[str, str], data: bytes) -> None:
        nonlocal count
        count += 1
        kind = headers.get(H_TYPE)
        if kind == "app":
            source, source_seq = headers[H_SRC], int(headers[H_SEQ])
            assigns = [(t, int(s)) for t, s in (a.rsplit(":", 1) for a in
                                                  headers.get(H_TGT, "").split(",") if a)]
            local.append(source, source_seq, float(headers[H_RECV]), data, assigns)
            if source_seq >= sources.get(source, 0):
                sources[source] = source_seq + 1
            for t, s in assigns:
                targets[t] = s + 1
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        t = doc.get("type")
        if t == "next_in":
            local.append_source_next_in(doc["source"], doc["next_in"])
            sources[doc["source"]] = doc["next_in"]
            epochs[doc["source"]] = doc.get("epoch", 0)
        elif t == "reset":
            local.reset_target(doc["target"])
            targets[doc["target"]] = 1
        elif t == "session":
            if "next_out" in doc:
                session_out[doc["comp_id"]] = doc["next_out"]
            if "next_in" in doc:
                session_in[doc["comp_id"]] = doc["next_in"]
        if local.appended_lsn - local.durable_lsn > 10_000:
            local.sync()

    await replay(nc, names.journal, f"{names.prefix}.>", upto, apply)
    local.sync()
    recovery = Recovery(count, 1, 0, 0.0, sources, targets, local.appended_lsn)
    log.info("journal rebuilt from the stream: %d records up to %d", count, upto)
    return ClusterJournal(local, names, recovery, epochs, session_out, session_in)


def make_log(nc: Any, names: Names, node_id: str, journal: ClusterJournal,
             on_fenced: Callable[[], None]) -> ReplicatedLog:
    log_ = ReplicatedLog(nc, names.journal, f"{names.prefix}.ctl", node_id,
                         on_acked=journal.acked, on_fenced=on_fenced)
    journal.log = log_
    return log_
