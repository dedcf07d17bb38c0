"""The replicated journal's log: one JetStream stream, one writer at a time, appends pipelined,
and a fence that no stale writer can pass.

Why the sequencing cannot fork (docs/cluster.md, "Sequencing"): every record the gateway keeps
(a source message with the target sequence numbers it was given, a session's sequence marker, a
target's reset) is one message of one totally ordered stream, and a target's sequence is a
function of that stream (replaying it gives every target's next seq, as the embedded journal's
recovery does). Only the node holding the primary lease writes, and **every publish carries
``Nats-Expected-Last-Sequence``: the stream sequence its writer believes is the last one**.
and ``Nats-Expected-Last-Msg-Id``: the sequence and the message id of the record its writer
believes is the last one. JetStream's stream leader stores a message only if both are true.
Every record's message id ends with its writer's id (a random token per takeover), so the
expectation names the writer too: a sequence number alone could coincide (a stale writer's
predicted sequence may equal the new writer's current last), the writer's own message id
cannot. A writer that takes over first appends a takeover record after the last one it read;
from then on a stale writer (a node paused past its lease that wakes up) expects a record of
its own that is not the last one, and its publish is refused: it cannot add a record, so it
cannot give a target sequence number to a second message. The check is decided by the stream's
leader under the stream's own Raft log, so it does not depend on any node's clock.

Pipelining without reordering: the writer predicts the sequence of each record (it is the only
writer, so record ``n`` lands at ``last + n``) and sends each with the previous one as its
expectation, up to ``window`` unacknowledged. If one is lost or refused, every later one is
refused too (its expectation no longer holds): the stream never has a hole and never a record
out of order. The writer then stops, *resynchronises* (reads the stream's last sequence and
checks the record there carries its own writer id: otherwise it has been fenced out), counts what
was stored as acknowledged and sends the rest again. A source message's id is built from the
source, its sequence epoch and MsgSeqNum (and the writer), so a publish retried after a lost
acknowledgement that did land is dropped by the stream's duplicate window, and the chain
refuses it anyway.

Acknowledgements arrive on one subscription (one callback per ack, no Future or task per
message); ``on_acked(stream_seq)`` reports the highest sequence below which everything is stored
with the stream's replicas (JetStream acknowledges a publish once a quorum has it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from .connect import CONSUMER_ATTEMPT_S, new_consumer

log = logging.getLogger("dcgateway.cluster")

WRITER_HEADER = "Dcgw-Writer"
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
MSG_ID = "Nats-Msg-Id"
WRONG_LAST_SEQUENCE = 10071
#: Unacknowledged publishes in flight at most (throughput is about this many per acknowledgement
#: round trip; 8000 records are a few MB of buffers).
WINDOW = 8000
#: An ack not back within this is treated as lost: resynchronise.
ACK_TIMEOUT_S = 2.0


class Fenced(Exception):
    """Another writer appended to the stream: this one may not write any more."""


@dataclass(slots=True)
class Pending:
    seq: int                      # predicted stream sequence
    subject: str
    payload: bytes
    headers: dict[str, str]         # with its message id and the previous record's
    sent_at: float = 0.0


class ReplicatedLog:
    """The single-writer log on stream ``stream`` (module docstring). :meth:`take_over` makes
    this the writer; :meth:`append` returns the record's stream sequence at once and sends it
    with the next flush; ``on_acked(seq)`` reports durability, ``on_fenced()`` the end of this
    writer. Runs on one event loop; :meth:`run` is its background task."""

    def __init__(self, nc: Client, stream: str, control_subject: str, writer: str, *,
                 on_acked: Callable[[int], None], on_fenced: Callable[[], None],
                 window: int = WINDOW, ack_timeout: float = ACK_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=5)
        self.stream = stream
        self.control_subject = control_subject
        self.writer = f"{writer}.{secrets.token_hex(4)}"
        self.on_acked = on_acked
        self.on_fenced = on_fenced
        self.window = window
        self.ack_timeout = ack_timeout
        self.clock = clock
        self.next_seq = 0                 # sequence the next append will get
        self.last_id = ""                 # message id of the last record appended
        self.acked = 0                    # everything up to here is stored
        self._acked_id = (0, "")          # (seq, message id) of the last acked record known
        self.fenced = False
        self.queued: deque[Pending] = deque()       # appended, not sent yet
        self.inflight: deque[Pending] = deque()     # sent, not acknowledged, in order
        self._early: set[int] = set()
        self._wake = asyncio.Event()
        self._inbox = ""
        self._sub: Any = None
        self._resync_needed = False
        self.publishes = 0
        self.resyncs = 0
        self.ack_latencies: deque[float] = deque(maxlen=10_000)

    # -- taking over ----------------------------------------------------------------------------

    async def last_sequence(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def take_over(self, after: int | None = None, attempts: int = 20) -> int:
        """Become the writer: append a takeover record right after the stream's last record
        (``after`` when the caller has read exactly that far); returns the takeover record's
        sequence. From then on a stale writer's publishes are refused."""
        if self._sub is None:
            self._inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        for _ in range(attempts):
            last = after if after is not None else await self.last_sequence()
            body = json.dumps({"type": "takeover", "writer": self.writer, "after": last})
            takeover_id = f"{self.writer}.takeover"
            try:
                ack = await self.js.publish(self.control_subject, body.encode(), headers={
                    EXPECTED_LAST_SEQ: str(last), WRITER_HEADER: self.writer,
                    MSG_ID: takeover_id})
            except Exception as exc:
                if _err_code(exc) == WRONG_LAST_SEQUENCE and after is not None:
                    raise Fenced(f"the stream has records after {after}") from None
                log.warning("takeover of %s after %d: %s; retrying", self.stream, last, exc)
                await asyncio.sleep(0.2)
                continue
            self.next_seq = ack.seq + 1
            self.acked = ack.seq
            self._acked_id = (ack.seq, takeover_id)
            self.last_id = takeover_id
            self.fenced = False
            log.warning("writer %s took over stream %s at sequence %d", self.writer,
                        self.stream, ack.seq)
            return int(ack.seq)
        raise Fenced(f"could not take over stream {self.stream}")

    # -- appending ------------------------------------------------------------------------------

    def append(self, subject: str, payload: bytes, msg_id: str | None = None,
               headers: dict[str, str] | None = None) -> int:
        """Queue one record; its stream sequence (it is stored there or nowhere)."""
        if self.fenced:
            raise Fenced(f"writer {self.writer} was fenced out of {self.stream}")
        seq = self.next_seq
        self.next_seq = seq + 1
        rid = f"{msg_id}.{self.writer}" if msg_id is not None else f"{self.writer}.{seq}"
        hdrs = {WRITER_HEADER: self.writer, **(headers or {}), MSG_ID: rid,
                EXPECTED_LAST_MSG_ID: self.last_id, EXPECTED_LAST_SEQ: str(seq - 1)}
        self.last_id = rid
        self.queued.append(Pending(seq, subject, payload, hdrs))
        self._wake.set()
        return seq

    @property
    def unacked(self) -> int:
        return len(self.queued) + len(self.inflight)

    async def _send(self, p: Pending) -> None:
        p.sent_at = self.clock()
        await self.nc.publish(p.subject, p.payload, reply=f"{self._inbox}.{p.seq}",
                              headers=p.headers)
        self.publishes += 1

    async def flush(self) -> None:
        """Send what is queued, up to the window."""
        while self.queued and len(self.inflight) < self.window and not self._resync_needed:
            p = self.queued.popleft()
            self.inflight.append(p)
            await self._send(p)

    async def _on_ack(self, msg: Msg) -> None:
        try:
            seq = int(msg.subject.rsplit(".", 1)[1])
            doc = json.loads(msg.data)
        except (ValueError, IndexError):
            return
        if "error" in doc or doc.get("duplicate"):
            # refused (its expectation failed: an earlier record was lost or another writer
            # appended) or not stored (a duplicate id): find out where the stream stands
            self._resync_needed = True
            self._wake.set()
            return
        self._acked(seq)

    def _acked(self, seq: int) -> None:
        if seq <= self.acked:
            return
        self._early.add(seq)
        advanced = False
        now = self.clock()
        while self.acked + 1 in self._early:
            self._early.discard(self.acked + 1)
            self.acked += 1
            advanced = True
            while self.inflight and self.inflight[0].seq <= self.acked:
                p = self.inflight.popleft()
                self.ack_latencies.append(now - p.sent_at)
                self._acked_id = (p.seq, p.headers.get(MSG_ID, ""))
        if advanced:
            self.on_acked(self.acked)
            self._wake.set()

    @property
    def acked_mark(self) -> tuple[int, str]:
        """(sequence, message id) of the last acknowledged record; the id is "" when this
        writer did not send that record itself (:mod:`.marks`)."""
        seq, rid = self._acked_id
        return self.acked, rid if seq == self.acked else ""

    # -- failures: resynchronise or stop ----------------------------------------------------------

    async def resync(self) -> None:
        """After a lost or refused publish: what the stream holds decides. Its last record is
        ours: everything up to it is acknowledged, the rest is sent again. It is not ours:
        another writer took over, this one is fenced."""
        self.resyncs += 1
        last = await self.last_sequence()
        first = self.inflight[0].seq if self.inflight else self.acked + 1
        if last >= first or last > self.acked:
            msg = await self.js.get_msg(self.stream, last)
            if (msg.headers or {}).get(WRITER_HEADER) != self.writer:
                self._fence(f"record {last} was written by another writer")
                return
            self._acked_upto(last)
        elif last < self.acked:
            self._fence(f"the stream ends at {last}, before what it acknowledged ({self.acked})")
            return
        resend = list(self.inflight)
        self.inflight.clear()
        self.queued.extendleft(reversed(resend))
        self._early.clear()
        self._resync_needed = False
        log.warning("stream %s resynchronised at %d; sending %d records again", self.stream,
                    last, len(resend))

    def _acked_upto(self, seq: int) -> None:
        if seq > self.acked:
            self._early.update(range(self.acked + 1, seq + 1))
            self._acked(seq)

    def _fence(self, why: str) -> None:
        self.fenced = True
        self.queued.clear()
        self.inflight.clear()
        log.error("writer %s fenced out of %s: %s", self.writer, self.stream, why)
        self.on_fenced()

    async def run(self) -> None:
        """Send, watch for lost acks, resynchronise; until fenced or cancelled."""
        while not self.fenced:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races its inner wait, and this loop would then never end
                async with asyncio.timeout(0.2):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self.inflight and self.clock() - self.inflight[0].sent_at > self.ack_timeout:
                self._resync_needed = True
            try:
                if self._resync_needed:
                    await self.resync()
                if not self.fenced:
                    await self.flush()
            except Exception as exc:          # no quorum, reconnecting: try again shortly
                log.warning("stream %s: %s; retrying", self.stream, exc)
                self._resync_needed = True
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


def _err_code(exc: BaseException) -> int | None:
    code = getattr(exc, "err_code", None)
    return int(code) if code is not None else None


async def ensure_stream(js: Any, name: str, subjects: list[str], replicas: int,
                        max_age_s: float) -> None:
    """The journal's stream: ``replicas`` copies, file storage, records older than
    ``max_age_s`` dropped (the retention), duplicate ids remembered two minutes."""
    cfg = api.StreamConfig(name=name, subjects=subjects, num_replicas=replicas,
                           storage=api.StorageType.FILE, retention=api.RetentionPolicy.LIMITS,
                           max_age=max_age_s, duplicate_window=120.0,
                           discard=api.DiscardPolicy.OLD)
    try:
        await js.add_stream(cfg)
    except Exception:
        await js.stream_info(name)        # exists (another node made it): it must answer


Replay = Callable[[int, str, dict[str, str], bytes], Awaitable[None] | None]


async def replay(nc: Client, stream: str, subjects: str, upto: int, handle: Replay,
                 timeout: float = 60.0, batch: int = 2000) -> int:
    """Every record of ``stream`` up to sequence ``upto``, in order, to ``handle(seq, subject,
    headers, data)``; the number of records read. A pull consumer of its own (fetched in
    batches: in order, none dropped however slow ``handle`` is), deleted at the end; records
    already gone by retention are skipped, never reordered. ``timeout`` bounds the whole read
    (fetches are retried meanwhile: a stream leader may be being elected)."""
    if upto <= 0:
        return 0
    js = nc.jetstream(timeout=CONSUMER_ATTEMPT_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def subscribe() -> Any:
        return await js.pull_subscribe(subjects, stream=stream, config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0, max_waiting=1))
    psub = await new_consumer(subscribe, timeout, f"the read-back of stream {stream}")
    count = 0
    try:
        seq = 0
        while seq < upto:
            try:
                msgs = await psub.fetch(max(1, min(batch, upto - seq)), timeout=2.0)
            except (asyncio.TimeoutError, nats_errors.TimeoutError):
                if loop.time() > deadline:
                    raise
                continue
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq > upto:
                    break
                r = handle(seq, msg.subject, dict(msg.headers or {}), msg.data)
                if r is not None:
                    await r
                count += 1
    finally:
        try:
            await psub.unsubscribe()
        except Exception:
            pass
    return count
