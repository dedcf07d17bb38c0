"""What a FIX session needs to remember: next inbound/outbound sequence numbers and the messages it
sent (for ResendRequest). FIX Vol. 2, "Message recovery".

:class:`SessionStore` is the interface the session engine calls synchronously; it must not block
for long. The durable implementation (``dcgateway.state.session_files.FileSessionStore``) buffers writes and is
made durable by the I/O shell with one ``sync()`` per batch of input (group commit), before any of
the bytes that batch produced are written to the socket. :class:`MemoryStore` is for tests and
for sessions that need no persistence.
"""

from __future__ import annotations

from typing import Protocol


class SessionStore(Protocol):
    @property
    def next_in(self) -> int:
        """Next MsgSeqNum expected from the counterparty."""

    @property
    def next_out(self) -> int:
        """Next MsgSeqNum the gateway will send."""

    def set_next_in(self, seq: int) -> None: ...

    def set_next_out(self, seq: int) -> None: ...

    def save_outbound(self, seq: int, raw: bytes) -> None:
        """Remember a sent message (complete bytes as sent) for resend, and set next_out=seq+1."""

    def get_outbound(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored messages with begin <= seq <= end, ascending; sequence numbers with nothing
        stored are simply absent (the session gap-fills them)."""

    def reset(self) -> None:
        """Both sequences back to 1 and the stored messages dropped (141=Y, weekly reset)."""

    # Optional: ``resend_limit() -> int``, the highest sequence number a ResendRequest may be
    # served up to right now (see dcgateway.fanout.TargetStore); absent means next_out - 1.
    # Optional: ``resend_ready() -> bool``, whether what a ResendRequest may be served may be
    # read now (a drop copy target's copies are durable): while False the answer waits
    # (``FixSession.resend_waiting``) and the shell asks again later; absent means always.
    # Optional: ``next_stored(first, end) -> int``, the first seq in first..end that may have a
    # message stored, or end + 1: a ResendRequest over a long run of nothing stored is then
    # answered by one GapFill, not one per slice.


class MemoryStore:
    """A :class:`SessionStore` in memory."""

    def __init__(self, next_in: int = 1, next_out: int = 1) -> None:
        self._next_in = next_in
        self._next_out = next_out
        self._sent: dict[int, bytes] = {}

    @property
    def next_in(self) -> int:
        return self._next_in

    @property
    def next_out(self) -> int:
        return self._next_out

    def set_next_in(self, seq: int) -> None:
        self._next_in = seq

    def set_next_out(self, seq: int) -> None:
        self._next_out = seq

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self._sent[seq] = raw
        self._next_out = seq + 1

    def get_outbound(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return [(s, self._sent[s]) for s in range(begin, end + 1) if s in self._sent]

    def next_stored(self, first: int, end: int) -> int:
        return min((s for s in self._sent if first <= s <= end), default=end + 1)

    def reset(self) -> None:
        self._next_in = 1
        self._next_out = 1
        self._sent.clear()
