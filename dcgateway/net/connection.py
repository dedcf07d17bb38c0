"""One TCP connection: bytes in -> FixSession -> events and bytes out.

The protocol object does no FIX work itself. Before Logon it decodes just enough to find the first
message and asks the :class:`~dcgateway.net.acceptor.Acceptor` to bind the connection to a
configured session; from then on every read is one batch:

    session.receive_data(chunk)  ->  acceptor.dispatch(events)  ->  store.sync()  ->  transport.write()

so a whole read's worth of messages costs one fsync and one write (docs/architecture.md "what keeps Python
fast"), and no byte that the batch produced reaches the peer before the state behind it is durable.

Backpressure: the transport's write-buffer watermarks bound what we buffer for a peer. While the
buffer is above the high mark we stop reading from that peer (``pause_reading``), so a client that
floods requests but does not read the answers cannot grow our memory (docs/architecture.md rule 5).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import StoreError
from ..fanout import TAKE_BUDGET
from ..fix.codec import DecodeError, Decoder, RawMessage
from ..fix.session_types import SessionConfig

if TYPE_CHECKING:
    from ..fanout import Outbox
    from ..fix.session import FixSession

log = logging.getLogger("dcgateway.net")


@dataclass
class SessionSlot:
    """A configured session as the network shell sees it: its durable store, its outbox when
    it is a drop copy target, and, while logged on, its connection."""

    comp_id: str
    role: str
    config: SessionConfig
    store: Any                                  # a SessionStore with sync() and close()
    connection: FixConnection | None = None
    logons: int = 0
    outbox: Outbox | None = None                # a drop copy target's outbound stream
    bytes_in: int = 0                           # cumulative, read by the metrics pump
    bytes_out: int = 0
    #: called for each read of a logged-on connection that the session is about to parse (a
    #: source's: the journal committer's ``expect_append``), None for nothing
    before_read: Callable[[], None] | None = None


class ConnectionOwner(Protocol):
    """What a connection needs of the acceptor that made it (a narrow seam: the acceptor
    imports this module, never the other way round)."""

    settings: Any

    @property
    def write_buffer_limits(self) -> tuple[int, int]: ...

    @property
    def logon_timeout(self) -> float: ...

    def connection_opened(self, conn: FixConnection) -> None: ...

    def connection_closed(self, conn: FixConnection, exc: Exception | None) -> None: ...

    def refused(self, conn: FixConnection, reason: str) -> None: ...

    def bind(self, conn: FixConnection, first: RawMessage, now: float) -> FixSession | None: ...

    def dispatch(self, conn: FixConnection, events: list[Any], now: float) -> None: ...

    def on_event(self, slot: SessionSlot | None, ev: Any) -> None: ...


#: The hold on a source's reads while the journal is behind (``hold_reading``): of our making,
#: so the peer's silence meanwhile is not held against it (``FixSession.excuse_silence``).
JOURNAL_HOLD = "journal"
#: Bytes of non-FIX input accepted before a Logon before the connection is dropped.
MAX_PRE_LOGON_GARBAGE = 4096
#: A read at least this large ends the connection's turn (see ``FixConnection._end_turn``).
TURN_READ_BYTES = 16 * 1024
#: After close(), how long the write buffer may take to drain before the connection is aborted
#: (a peer that stopped reading must not keep its session bound).
CLOSE_GRACE_S = 2.0
#: A drop copy target's take is fitted to about this much of the loop's time, so that a target
#: catching up from the journal shares the loop with live copies, commits and /metrics.
TAKE_SLICE_S = 0.002
#: A ResendRequest whose answer is not durable yet (a target that just logged on, in ``fsync``
#: mode: the group commit under way) is looked at again after this long (seconds), then twice
#: as long each time, up to ``RESEND_WAIT_MAX_S`` (a stalled disk costs a few looks a second).
RESEND_WAIT_S = 0.002
RESEND_WAIT_MAX_S = 0.05
#: The smallest take (bytes): a catching-up target always makes progress.
MIN_TAKE_BUDGET = 4096
#: A target catching up from the journal waits this many times as long as its last take before
#: the next one (1.0: catch-up takes at most about half of the loop's time). A large
#: ResendRequest is answered the same way, a slice (``SessionConfig.resend_slice``) at a time.
CATCHUP_REST_RATIO = 1.0


def _bytes_waiting(transport: asyncio.BaseTransport) -> int:
    """Bytes already in the socket's receive queue (FIONREAD): a client's Logon that
    arrived with its connection. 0 when it cannot be known (TLS: the handshake is read by
    the transport first)."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(buf, sys.byteorder)


class FixConnection(asyncio.Protocol):
    __slots__ = ("acceptor", "clock", "transport", "peer", "address", "session", "slot",
                 "connected_at", "heard", "_decoder", "_closing", "_lost", "_paused", "_holds",
                 "close_reason", "close_after_pump", "_window", "_window_n", "_feed_scheduled",
                 "_take_budget", "_resend_scheduled", "_resend_wait", "_held_out", "_close_held")

    def __init__(self, acceptor: ConnectionOwner, clock: Callable[[], float],
                 max_message_size: int) -> None:
        self.acceptor = acceptor
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address = "?"                        # peer host, set by the acceptor
        self.heard = False                       # any byte received yet
        self.session: FixSession | None = None
        self.slot: SessionSlot | None = None
        self.connected_at = clock()
        self._decoder = Decoder(max_message_size)
        self._closing = False
        self._lost = False
        self.close_after_pump = False             # set by the fan-out: Logout out, then close
        self._window = 0.0                        # inbound rate limit: start of this second
        self._window_n = 0                        # messages received in it
        self._paused = False
        self._holds: set[str] = set()         # reasons to stop reading from this peer
        self._feed_scheduled = False          # a drop copy target's next take is on the loop
        self._take_budget = TAKE_BUDGET       # bytes per take, fitted to TAKE_SLICE_S
        self._resend_scheduled = False        # the next slice of a ResendRequest is on the loop
        self._resend_wait = 0.0               # the last wait for a not yet durable answer
        #: what is written while the output is held (:meth:`hold_output`), None when it is not
        self._held_out: list[bytes] | None = None
        self._close_held = False              # close() came while the output was held
        self.close_reason = ""

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance.
        self.transport = tr = cast(asyncio.Transport, transport)
        peer = tr.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        high, low = self.acceptor.write_buffer_limits
        tr.set_write_buffer_limits(high=high, low=low)
        self.heard = _bytes_waiting(transport) > 0
        self.acceptor.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            now = self.clock()
            self.heard = True
            if self.session is None:
                self._before_logon(data, now)
            else:
                slot = self.slot
                assert slot is not None
                slot.bytes_in += len(data)
                if self.acceptor.settings.max_inbound_rate and self._over_rate(data, now):
                    return
                if slot.before_read is not None:
                    slot.before_read()
                self.session.receive_data(data, now)
                self.pump(now)
                if len(data) >= TURN_READ_BYTES and not self._closing:
                    self._end_turn()
        except StoreError as exc:              # a full or failing disk: no traceback, a reason
            log.error("session %s: %s; disconnecting it", self.name, exc)
            self.close("cannot store session state")
        except Exception:                      # never let a bug escape into the loop
            log.exception("internal error on connection %s (%s); closing it", self.peer, self.name)
            self.close("internal error")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._lost = True
        try:
            self.acceptor.connection_closed(self, exc)
        except Exception:                      # never into the loop's exception handler
            log.exception("internal error closing %s", self.name)

    def pause_writing(self) -> None:
        self._paused = True
        outbox = self.slot.outbox if self.slot is not None else None
        if outbox is not None:
            # A drop copy target is still read while it drains its copies: its Heartbeats and
            # TestRequests must be heard (its queued session messages are bounded).
            outbox.pushback = True
        else:
            self.hold_reading("write_buffer")

    def resume_writing(self) -> None:
        self._paused = False
        self.release_reading("write_buffer")
        outbox = self.slot.outbox if self.slot is not None else None
        if outbox is not None:
            outbox.pushback = False
            self.kick()
        self._resend_later(0.0)

    def kick(self) -> None:
        """A drop copy target has something to write: take it on the next turn of the loop
        (once, however many commits or drains asked meanwhile), so each target gets at most one
        budgeted take per turn."""
        if not self._feed_scheduled and not self._closing:
            self._feed_scheduled = True
            asyncio.get_running_loop().call_soon(self.feed)

    def push(self, batch: list[tuple[FixConnection, bytes]] | None = None,
             now: float | None = None) -> None:
        """Copies became durable: take them now (the commit ran in its own callback, so this
        saves a loop turn per commit), unless a take is already due on this turn. With
        ``batch``, what is taken is appended to it for the caller to write (see :meth:`feed`);
        ``now``: the caller's clock reading (one per commit, not one per target).

        A drop copy target: write what its outbox hands out now (one budgeted take), and if
        more is ready, take again on the next turn of the loop, so a target catching up shares
        the loop with every other session, the journal and the metrics endpoint.

        ``batch``: append ``(self, bytes)`` instead of writing, so that a commit builds every
        target's copies before the first write wakes a reader (on a busy machine the woken
        reader may take this CPU, and the copies still to build would wait for it)."""
        if self._feed_scheduled:
            return
        outbox = self.slot.outbox if self.slot is not None else None
        if outbox is None or self._paused or self._closing or self.transport is None:
            return
        try:
            session = self.session
            if session is not None and session.logout_seq and \
                    outbox.cursor > session.logout_seq:
                return      # our Logout is out: nothing more on this connection (FIX Vol. 2)
            durable = outbox.journal.durable_lsn
            catching_up = outbox.spill_from is not None
            t0 = time.perf_counter()
            out = outbox.take(durable, self.clock() if now is None else now, self._take_budget)
            took = time.perf_counter() - t0
            if took > TAKE_SLICE_S / 2 or self._take_budget < TAKE_BUDGET:
                self._fit_budget(took)      # (a quick take at the full budget changes nothing)
            if out:
                data = out[0] if len(out) == 1 else b"".join(out)
                if batch is None:
                    self.write_raw(data)
                else:
                    batch.append((self, data))
            if outbox.ready(durable) and not self._paused and not self._closing:
                if catching_up:
                    # reading back from the journal: rest as long as the take ran, so catch-up
                    # uses at most about half of the loop and live copies, commits and the other
                    # sessions keep their latency however slow the machine
                    self._feed_scheduled = True
                    asyncio.get_running_loop().call_later(took * CATCHUP_REST_RATIO, self.feed)
                else:
                    self.kick()
        except Exception:                      # one target's fault must not stop the others
            log.exception("internal error feeding %s; closing it", self.name)
            self.close("internal error", abort=True)

    def feed(self) -> None:
        """The take :meth:`kick` scheduled (see :meth:`push`)."""
        self._feed_scheduled = False
        self.push()

    def _resend_later(self, delay: float) -> None:
        """The session is answering a large ResendRequest: its next slice on a later turn of the
        loop (after ``delay``), unless our writes to the peer are paused (resume_writing asks
        again) or one is already due."""
        session = self.session
        if (session is None or not session.resend_backlog or self._resend_scheduled
                or self._paused or self._closing):
            return
        self._resend_scheduled = True
        asyncio.get_running_loop().call_later(delay, self._continue_resend)

    def _continue_resend(self) -> None:
        self._resend_scheduled = False
        session = self.session
        if session is None or self._paused or self._closing:
            return
        try:
            now = self.clock()
            t0 = time.perf_counter()
            session.continue_resend(now)
            self.pump(now, resend_rest=(time.perf_counter() - t0) * CATCHUP_REST_RATIO)
        except StoreError as exc:
            log.error("session %s: %s; disconnecting it", self.name, exc)
            self.close("cannot store session state")
        except Exception:                      # never let a bug escape into the loop
            log.exception("internal error answering a ResendRequest on %s; closing it", self.name)
            self.close("internal error")

    def _fit_budget(self, took: float) -> None:
        """Keep one take near TAKE_SLICE_S of the loop, whatever a copy costs here (a copy read
        back from the journal and translated for the target's dictionary costs several times a
        live one, and machines differ): shrink the byte budget in proportion when a take ran
        long, grow it back a quarter at a time when takes are quick."""
        budget = self._take_budget
        if took > TAKE_SLICE_S:
            self._take_budget = max(MIN_TAKE_BUDGET, int(budget * TAKE_SLICE_S / took))
        elif took < TAKE_SLICE_S / 2 and budget < TAKE_BUDGET:
            self._take_budget = min(TAKE_BUDGET, budget + budget // 4 + 1)

    # -- helpers ----------------------------------------------------------------------------

    def _end_turn(self) -> None:
        """Let the rest of the loop run before the next read from this peer. libuv reads a busy
        socket up to 32 times per loop iteration (uvloop's buffer is 256 KiB: up to 8 MiB of
        messages) before any other callback, so the journal's group commit and the writes to the
        targets would wait for all of it while appended records pile up; one read per turn keeps
        commits, copies and other peers interleaved with a flooding source."""
        self.hold_reading("turn")
        asyncio.get_running_loop().call_soon(self.release_reading, "turn")

    def hold_reading(self, reason: str) -> None:
        """Stop reading from the peer (TCP pushes back on it) until every reason is released:
        our write buffer to it is full, or the journal is too far behind (fanout.py)."""
        if not self._holds and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._holds.add(reason)

    def release_reading(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    @property
    def name(self) -> str:
        return self.slot.comp_id if self.slot is not None else "unbound"

    @property
    def write_paused(self) -> bool:
        return self._paused

    def _before_logon(self, data: bytes, now: float) -> None:
        """The first message must be a valid Logon: anything the decoder could not frame before
        it (garbage, a wrong BodyLength or CheckSum: FIX Test Case 1S.d) disconnects at once,
        and so does a first frame that would not fit ``MAX_PRE_LOGON_GARBAGE``."""
        held = self._decoder.buffered             # earlier reads of a Logon still arriving
        items = self._decoder.feed(data)
        if items and isinstance(items[0], DecodeError):
            self.acceptor.refused(self, "invalid_first_message")
            self.close(f"invalid first message ({items[0].kind})", abort=True)
            return
        if not items:
            if self._decoder.buffered > MAX_PRE_LOGON_GARBAGE:
                self.acceptor.refused(self, "garbage_before_logon")
                self.close("no Logon in the first bytes", abort=True)
            return
        first = items[0]
        assert isinstance(first, RawMessage)
        session = self.acceptor.bind(self, first, now)
        if session is None:
            return                             # refused: the acceptor answered and closed
        self.session = session
        self.slot.bytes_in += held + len(data)  # type: ignore[union-attr]
        session.receive_messages(items, now)
        tail = self._decoder.take_pending()
        if tail:
            session.receive_data(tail, now)
        self.pump(now)

    def _over_rate(self, data: bytes, now: float) -> bool:
        """Per-session inbound rate limit (``max_inbound_msgs_per_s``): messages are counted by
        their trailers, in one-second windows. Past the limit the peer is logged out with the
        reason and disconnected; what it sent in that chunk is not processed (a source is asked
        for it again when it logs on)."""
        if now - self._window >= 1.0:
            self._window, self._window_n = now, 0
        self._window_n += data.count(b"\x0110=")
        limit = self.acceptor.settings.max_inbound_rate
        if self._window_n <= limit:
            return False
        text = f"inbound message rate above {limit}/s"
        log.warning("session %s: %s; logging it out", self.name, text)
        self.acceptor.refused(self, "rate_limit")
        assert self.session is not None
        if not self.session.closed:
            self.session.logout(text, now)
        self.close_after_pump = True
        self.pump(now)
        return True

    def pump(self, now: float, resend_rest: float = 0.0) -> None:
        """Hand the session's events on, make its state durable, then write its bytes (a drop
        copy target's through its outbox, in sequence order with the copies); a ResendRequest
        answered in part goes on on a later turn, after ``resend_rest`` seconds."""
        session = self.session
        assert session is not None and self.slot is not None
        events = session.events()
        if events:
            self.acceptor.dispatch(self, events, now)
        self.slot.store.sync()
        outbox = self.slot.outbox
        if outbox is None:
            out = session.data_to_send()
            if out:
                self.write_raw(out)
        else:
            items = session.items_to_send()
            if items and not self._closing:
                outbox.add_session(items)
                if outbox.stalled:
                    log.warning("target %s is not reading: %d session messages queued; "
                                "disconnecting", self.name, len(outbox.admin))
                    self.close("target not reading", abort=True)
                    return
                self.feed()
        if session.closed or self.close_after_pump:
            self.close(self.close_reason or "session closed")
        elif session.resend_backlog and session.resend_waiting:
            if not self._resend_scheduled:     # (a tick meanwhile does not shorten the wait)
                self._resend_wait = min(RESEND_WAIT_MAX_S, max(RESEND_WAIT_S,
                                                               self._resend_wait * 2))
                self._resend_later(self._resend_wait)
        else:
            self._resend_wait = 0.0
            if session.resend_backlog:
                self._resend_later(resend_rest)

    def tick(self, now: float) -> None:
        if self._closing:
            return
        try:
            if self.session is None:
                idle = self.acceptor.settings.pre_logon_idle
                if not self.heard and idle and now - self.connected_at > idle:
                    self.acceptor.refused(self, "idle_before_logon")
                    self.close("nothing received within %gs" % idle, abort=True)
                elif now - self.connected_at > self.acceptor.logon_timeout:
                    self.acceptor.refused(self, "logon_timeout")
                    self.close("no Logon within %gs" % self.acceptor.logon_timeout, abort=True)
                return
            if JOURNAL_HOLD in self._holds or self._held_out is not None:
                # unread, or our Logon reply not sent yet, because of us: not the peer's silence
                self.session.excuse_silence(now)
            self.session.on_timer(now)
            self.pump(now)
        except StoreError as exc:
            log.error("session %s: %s; disconnecting it", self.name, exc)
            self.close("cannot store session state")
        except Exception:
            log.exception("internal error on timer of %s; closing it", self.name)
            self.close("internal error")

    def write_fed(self, data: bytes) -> None:
        """Write what :meth:`feed` put in a batch; a fault closes only this target, as it
        would have inside :meth:`feed`."""
        try:
            transport = self.transport
            if transport is not None and not self._closing:
                transport.write(data)
                if self.slot is not None:
                    self.slot.bytes_out += len(data)
        except Exception:                      # one target's fault must not stop the others
            log.exception("internal error writing to %s; closing it", self.name)
            self.close("internal error", abort=True)

    def write_raw(self, data: bytes) -> None:
        if self._held_out is not None:
            if not self._closing:
                self._held_out.append(data)
            return
        if self.transport is not None and not self._closing:
            self.transport.write(data)
            if self.slot is not None:
                self.slot.bytes_out += len(data)

    def hold_output(self) -> None:
        """Keep what is written from now on, in order, until :meth:`release_output`: a source's
        Logon reply that must wait for a journal record to be durable (its 141=Y), while the
        loop and every other session go on."""
        if self._held_out is None:
            self._held_out = []

    def release_output(self) -> None:
        """Write what was held (and close, if close() came meanwhile)."""
        held, self._held_out = self._held_out, None
        tr = self.transport
        if tr is None or self._lost or (self._closing and not self._close_held):
            return                             # (aborted meanwhile: nothing goes out)
        if held:
            data = b"".join(held)
            tr.write(data)
            if self.slot is not None:
                self.slot.bytes_out += len(data)
        if self._close_held:
            self._close_held = False
            tr.close()

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close after what is buffered is written (a Logout), or at once with ``abort``; a
        peer that does not drain it within CLOSE_GRACE_S is aborted. While the output is held,
        the close waits for its release (within the same grace)."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        if self.transport is not None:
            if abort:
                self.transport.abort()
                return
            if self._held_out is not None:
                self._close_held = True        # release_output writes it, then closes
            else:
                self.transport.close()         # flushes what is buffered, then closes
            try:
                asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.abort_if_open)
            except RuntimeError:               # no running loop (shutdown): nothing to wait for
                pass

    def abort_if_open(self) -> None:
        """Drop the connection now if it is still open (a closed peer that never drained)."""
        if not self._lost and self.transport is not None:
            self._close_held = False           # (held output, if any, never goes out)
            log.warning("connection %s (%s) did not drain within %gs of closing; aborted",
                        self.peer, self.name, CLOSE_GRACE_S)
            self.transport.abort()
