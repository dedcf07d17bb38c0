"""The send-side fence of a cluster node: nothing reaches a client unless this node holds the
lease, and nothing that carries a sequence number the cluster could still forget.

Every connection a node serves gets a :class:`FencedTransport` in front of its socket (from the
acceptor's ``admit`` hook, before the Logon is processed). Its ``write``:

* drops the bytes and aborts the socket when the node's lease is not valid *now* (checked on the
  node's own monotonic clock, :meth:`~.leases.LeaseManager.holds`): a node woken from SIGSTOP
  after its lease ran out, whose event loop runs a timer or a read before the lease watchdog,
  still sends nothing;
* holds the bytes, in order, while the replicated journal is behind the connection's barrier:
  the journal's ``sync`` barrier (a target just logged on: what it may ask for must be
  replicated first) and the session's own latest sequence record (its Heartbeat or Logon reply
  consumed a number the next node must not give again). :class:`Gate` releases them when the
  stream acknowledges (typically a millisecond later); drop copies are already held back by the
  outbox until their records are replicated, so they pass straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..net.connection import FixConnection
from .journal import ClusterJournal

log = logging.getLogger("dcgateway.cluster")


class Gate:
    """What every fenced transport of the node consults, and who wakes them."""

    def __init__(self, journal: ClusterJournal, lease_ok: Callable[[], bool]) -> None:
        self.journal = journal
        self.lease_ok = lease_ok
        self.waiting: set[FencedTransport] = set()
        self.transports: set[FencedTransport] = set()
        journal.on_stream_acked = self.acked
        self.dropped_writes = 0

    def acked(self, stream_seq: int) -> None:
        if self.waiting:
            for t in list(self.waiting):
                t.release()

    def lost(self) -> None:
        """The lease is gone: every client connection is cut now, without another byte."""
        for t in list(self.transports):
            t.cut()


class FencedTransport:
    """Wraps a connection's transport (module docstring); everything else is delegated."""

    def __init__(self, inner: Any, gate: Gate, store: Any) -> None:
        self._inner = inner
        self._gate = gate
        self._store = store              # the session's store (its ``barrier_seq``)
        self._held: list[bytes] = []
        self._close_after = False
        self._cut = False
        gate.transports.add(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _behind(self) -> bool:
        j = self._gate.journal
        return j.durable_lsn < j.barrier or \
            j.acked_stream_seq < getattr(self._store, "barrier_seq", 0)

    def write(self, data: bytes) -> None:
        if self._cut:
            return
        if not self._gate.lease_ok():
            self._gate.dropped_writes += 1
            self.cut()
            return
        if self._held or self._behind():
            self._held.append(data)
            self._gate.waiting.add(self)
            return
        self._inner.write(data)

    def release(self) -> None:
        if self._cut or self._behind():
            return
        if not self._gate.lease_ok():
            self.cut()
            return
        held, self._held = self._held, []
        self._gate.waiting.discard(self)
        if held:
            self._inner.write(b"".join(held))
        if self._close_after:
            self._inner.close()

    def close(self) -> None:
        if self._held and not self._cut:
            self._close_after = True         # after what is held (a Logout) is written
            return
        self._gate.transports.discard(self)
        self._inner.close()

    def abort(self) -> None:
        self.cut()

    def cut(self) -> None:
        """Abort the socket now: nothing held, nothing more."""
        self._cut = True
        self._held = []
        self._gate.waiting.discard(self)
        self._gate.transports.discard(self)
        self._inner.abort()

    def get_write_buffer_size(self) -> int:
        return int(self._inner.get_write_buffer_size()) + sum(map(len, self._held))


def fence_connection(conn: FixConnection, gate: Gate, store: Any) -> None:
    """Put the fence in front of ``conn``'s socket (once)."""
    if conn.transport is not None and not isinstance(conn.transport, FencedTransport):
        conn.transport = FencedTransport(conn.transport, gate, store)  # type: ignore[assignment]


class MarkingStore:
    """A session's store, as the cluster node gives it to the session: every outbound sequence
    number the session uses (its own messages) is recorded in the replicated journal first
    (``barrier_seq``: the fence holds the message until that record is replicated), and a
    target's inbound sequence too, so the next node continues both. Everything else is the
    wrapped store's."""

    def __init__(self, inner: Any, journal: ClusterJournal, comp_id: str,
                 mark_inbound: bool) -> None:
        self._inner = inner
        self._journal = journal
        self._comp_id = comp_id
        self._mark_inbound = mark_inbound
        self.barrier_seq = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def next_in(self) -> int:
        return int(self._inner.next_in)

    @property
    def next_out(self) -> int:
        return int(self._inner.next_out)

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self._inner.save_outbound(seq, raw)
        self.barrier_seq = self._journal.append_session(self._comp_id, next_out=seq + 1)

    def set_next_out(self, seq: int) -> None:
        self._inner.set_next_out(seq)
        self.barrier_seq = self._journal.append_session(self._comp_id, next_out=seq)

    def set_next_in(self, seq: int) -> None:
        self._inner.set_next_in(seq)
        if self._mark_inbound:
            self._journal.append_session(self._comp_id, next_in=seq)

    def reset(self) -> None:
        self._inner.reset()
        self.barrier_seq = self._journal.append_session(self._comp_id, next_out=1, next_in=1)
