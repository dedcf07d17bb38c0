"""The session store of a drop copy target: its inbound sequence and the session's own messages
live in its session file, its copies in the journal; the outbound counter, shared by the session
(admin messages) and the fan-out (one per copy), lives in the target's outbox
(:attr:`~.outbox.Outbox.next_out`, :meth:`~.outbox.Outbox.reserve`), where each copy reserves
its seq, and is read and set here for the session.

A sequence reset never drops a copy: copies routed to the target and never handed out to it
(target seq above the last one written) are *carried over*: after the reset's first message (the
Logon reply, seq 1) each is journaled again under the next new seq and goes out in order.
Until then they are kept in the target's fresh session file too, so a restart in between (a
weekly reset finds many targets offline) does not lose them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..fix.dropcopy import CopySource, build_copy
from ..fix.timefmt import utc_timestamp
from ..journal import Entry, Journal
from .outbox import decode_one

if TYPE_CHECKING:
    from ..state.session_files import FileSessionStore
    from .outbox import Outbox

#: ``carry_over(target, entries)``: journal ``entries`` again for ``target`` under new seqs.
CarryOver = Callable[[str, list[Entry]], None]


class TargetStore:
    """:class:`~dcgateway.fix.store.SessionStore` of a target session (module docstring)."""

    def __init__(self, outbox: Outbox, file: FileSessionStore, journal: Journal,
                 next_out: int) -> None:
        self.outbox = outbox
        self.file = file
        self.journal = journal
        outbox.next_out = next_out          # the outbound counter lives in the outbox
        self.carry_over: CarryOver | None = None
        self._carried: list[Entry] = self._still_to_carry()

    @property
    def next_in(self) -> int:
        return self.file.next_in

    @property
    def next_out(self) -> int:
        return self.outbox.next_out

    def set_next_in(self, seq: int) -> None:
        self.file.set_next_in(seq)

    def set_next_out(self, seq: int) -> None:
        self.file.set_next_out(seq)
        self.outbox.next_out = seq

    def _still_to_carry(self) -> list[Entry]:
        """After a restart: the copies the session file holds from the last reset that the
        journal does not have again. They are journaled right after the first message the
        session sends after the reset (its first stored seq), so the journal is asked for the
        seqs just after it, and a copy counts as there when its source, source seq and receipt
        time match (a source's seqs restart too, so the seq alone would not do); none found is
        carried twice, and one the journal lost (a crash before its commit) is carried again."""
        held = self.file.carried
        if not held:
            return []
        first = self.file.next_stored(1, self.outbox.next_out)
        if first >= self.outbox.next_out:
            return [Entry(0, src, seq, received, raw, 0) for src, seq, received, raw in held]
        done = {(e.source, e.source_seq, e.received) for e in self.journal.read_target(
            self.outbox.comp_id, first + 1, first + len(held), durable_only=False)}
        return [Entry(0, src, seq, received, raw, 0) for src, seq, received, raw in held
                if (src, seq, received) not in done]

    def save_outbound(self, seq: int, raw: bytes) -> None:
        self.file.save_outbound(seq, raw)
        self.outbox.next_out = max(self.outbox.next_out, seq + 1)
        if self._carried and self.carry_over is not None:
            carried, self._carried = self._carried, []
            self.carry_over(self.outbox.comp_id, carried)

    def resend_ready(self) -> bool:
        """Whether a ResendRequest may be answered now: every copy below the cursor at the
        Logon is durable (``fsync`` mode: the group commit under way may still be writing the
        last ones; the request waits for it, not the loop), and so is the note of the Logon
        (:meth:`attach_durable`)."""
        return (self.journal.durable_lsn >= self.outbox.attach_lsn
                and self.file.marker_synced)

    def resend_limit(self) -> int:
        """A ResendRequest is served up to what was handed out (or reserved when the target
        logged on, once durable: :meth:`resend_ready`); later seqs are on their way, in order."""
        return self.outbox.resendable_upto

    def next_stored(self, first: int, end: int) -> int:
        """The first seq in ``first..end`` that may hold a message: none in a margin left
        after a power loss (one GapFill covers it); past the journal's last copy for this
        target, only the session file's own messages; else ``first`` (no skipping)."""
        past = self.file.skipped_to(first)
        if past > first:
            return min(past, end + 1)
        if first <= self.journal.target_last_seq(self.outbox.comp_id):
            return first
        return self.file.next_stored(first, end)

    def get_outbound(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """The session's own messages and the copies, as first sent (52 = time received)."""
        out = dict(self.file.get_outbound(begin, end))
        o = self.outbox
        o.written_upto = max(o.written_upto, end)     # resent: delivered too
        for e in self.journal.read_target(o.comp_id, begin, end):
            msg = decode_one(e.raw)
            src = None if msg is None else o.source_for(CopySource(msg))
            if src is not None:             # else: gap-filled by the resend
                out[e.target_seq] = build_copy(src, o.front_end, o.begin_string,
                                               o.gateway_comp, o.comp_bytes, e.target_seq,
                                               utc_timestamp(e.received))
        return sorted(out.items())

    def reset(self) -> None:
        """Both sequences restart at 1; copies never handed out are carried over."""
        o = self.outbox
        undelivered = o.next_out - 1 - o.written_upto
        # (durable or not yet: journaled again, each copy waits for its new record)
        # (added to those of a reset whose Logon reply has not gone yet: a weekly reset, then
        # a Logon with 141=Y, carries both)
        self._carried += (self.journal.read_target(o.comp_id, o.written_upto + 1,
                                                   o.next_out - 1, durable_only=False)
                          if undelivered > 0 else [])
        # (kept in the fresh session file until journaled again: a restart meanwhile keeps them)
        self.file.reset([(e.source, e.source_seq, e.received, e.raw) for e in self._carried],
                        delivered=-1 if o.connected else 0)
        self.journal.reset_target(o.comp_id)
        o.next_out = 1
        o.reset()

    def note_delivered(self) -> None:
        """Remember (in the session file) the last seq handed out, so a reset after a restart
        knows which copies never reached the target."""
        self.file.set_delivered(self.outbox.written_upto)

    def note_attached(self) -> None:
        """Connected: what is handed out from now on is not recorded until the disconnect."""
        self.file.set_delivered(-1)

    def attach_durable(self) -> bool:
        """Whether the note of the Logon is on the disk (with ``fsync``; else always): until
        then no copy may leave, or a reset after a power loss could carry over, as never
        delivered, copies the target got."""
        return self.file.marker_synced

    def recovered_delivered(self) -> int:
        """After a restart: the last seq known handed out. Unknown (a crash while the target was
        connected) counts as everything: copies are then caught up or resent, never carried
        over a reset as if new (that could duplicate them without a flag)."""
        d = self.file.delivered
        last = self.outbox.next_out - 1
        return last if d is None or d < 0 else min(d, last)

    def sync(self) -> None:
        self.file.sync()

    def close(self) -> None:
        self.file.close()
