"""The outbox, sans I/O and without an event loop: its run queue (what one take may hand out),
budgeted takes, session messages interleaved by seq, retransmissions at once, spilling to the
journal and catching up from it, the stall bound, a sequence reset that carries undelivered
copies over."""

from __future__ import annotations

from dcgateway.fanout import PendingCopies
from dcgateway.fix import codec
from dcgateway.fix.dropcopy import CopySource

SOURCE = CopySource(codec.Decoder().feed(codec.encode_fields(
    "FIX.4.2", "8", [(49, "S"), (56, "GW"), (34, 1)], [(17, "E1")]))[0])


def queue(*items: tuple[int, int]) -> PendingCopies:
    q = PendingCopies()
    for seq, lsn in items:
        q.append((seq, lsn, SOURCE, 0.0, "execution"))
    return q


def seqs(run) -> list[int]:
    return [item[0] for item in run]


def test_run_stops_at_the_first_copy_not_yet_durable():
    q = queue((1, 10), (2, 11), (3, 11), (4, 12), (5, 13))
    assert seqs(q.take_run(1, 11, 1000)) == [1, 2, 3]
    assert len(q) == 2 and q.first()[0] == 4
    assert q.take_run(4, 11, 1000) == []                # 4's record is not durable yet
    assert seqs(q.take_run(4, 13, 1000)) == [4, 5]
    assert not q and len(q) == 0


def test_run_is_bounded_and_must_start_at_the_cursor():
    q = queue(*[(s, s) for s in range(1, 11)])
    assert q.take_run(2, 100, 1000) == []               # the writer's cursor is elsewhere
    assert seqs(q.take_run(1, 100, 4)) == [1, 2, 3, 4]
    assert seqs(q.take_run(5, 100, 4)) == [5, 6, 7, 8]
    assert seqs(q.take_run(9, 100, 4)) == [9, 10]


def test_a_hole_in_the_seqs_leaves_the_run_to_the_one_at_a_time_path():
    # seq 3 belongs to a session message (Heartbeat...) that must go between 2 and 4
    q = queue((1, 1), (2, 1), (4, 2))
    assert q.take_run(1, 5, 1000) == []
    assert len(q) == 3 and q.first()[0] == 1            # nothing taken
    q.pop_first()
    q.pop_first()
    assert seqs(q.take_run(4, 5, 1000)) == [4]


def test_taken_items_are_released():
    q = queue(*[(s, s) for s in range(1, 10_001)])
    for first in range(1, 10_001, 1000):
        assert seqs(q.take_run(first, 10**9, 1000)) == list(range(first, first + 1000))
        assert len(q._items) - q._head == 10_000 - (first + 999)
        assert q._head <= 4096 or q._head * 2 <= len(q._items)   # compacted as it goes
    assert not q and q._items == []


# -- the outbox with a real journal, no event loop --------------------------------------------

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from dcgateway.fanout import MAX_ADMIN_QUEUED, Fanout, Outbox, TargetStore  # noqa: E402
from dcgateway.fix.codec import Decoder, encode_fields  # noqa: E402
from dcgateway.fix.session_types import Outgoing  # noqa: E402
from dcgateway.journal import SegmentJournal  # noqa: E402
from dcgateway.routing import RoutingTable  # noqa: E402
from dcgateway.state.session_files import FileSessionStore  # noqa: E402

NOW = 1_780_000_000.0


def order(i: int) -> bytes:
    return encode_fields("FIX.4.2", "D", [(49, "SRC"), (56, "DCGW"), (34, i),
                                          (52, "20260601-10:00:00.000")],
                         [(11, f"C{i}"), (55, "ESZ6"), (54, 1), (38, 1), (40, 1),
                          (60, "20260601-10:00:00")])


def decode(raw: bytes) -> list:
    return [m for m in Decoder().feed(raw)]


class Rig:
    """One target T (profile fix) fed by source SRC, a real journal, no event loop."""

    def __init__(self, root: Path, max_pending: int = 10_000) -> None:
        self.journal = SegmentJournal(root / "journal")
        self.journal.recover()
        self.outbox = Outbox("T", "FIX.4.4", "fix", "DCGW", self.journal, max_pending)
        self.file = FileSessionStore(root / "T.log")
        self.store = TargetStore(self.outbox, self.file, self.journal, 1)
        self.outbox.store = self.store
        self.fanout = Fanout(self.journal, RoutingTable.build((), {}), {"T": self.outbox},
                             notify=lambda: None)
        self.store.carry_over = self.fanout.carry_over
        self.src_seq = 0

    def copies(self, n: int) -> list[int]:
        """Journal n source messages, each routed to T; returns their target seqs."""
        from dcgateway.fix.dropcopy import CopySource
        seqs = []
        for _ in range(n):
            self.src_seq += 1
            raw = order(self.src_seq)
            (msg,) = decode(raw)
            seq = self.outbox.reserve()
            lsn = self.journal.append("SRC", self.src_seq, NOW, raw, [("T", seq)])
            self.outbox.add_copy(seq, lsn, CopySource(msg), NOW, "order")
            seqs.append(seq)
        return seqs

    def durable(self) -> int:
        return self.journal.sync()

    def take_all(self, budget: int = 1 << 30) -> list:
        return decode(b"".join(self.outbox.take(self.journal.durable_lsn, NOW + 1, budget)))


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.file.close()
    r.journal.close()


def seqs_of(msgs) -> list[int]:
    return [m.seq_num for m in msgs]


def test_copies_leave_only_once_durable_and_in_order(rig):
    rig.outbox.attach()
    rig.copies(3)
    assert rig.outbox.take(rig.journal.durable_lsn, NOW) == []    # appended, not durable
    assert not rig.outbox.ready(rig.journal.durable_lsn)
    rig.durable()
    assert rig.outbox.ready(rig.journal.durable_lsn)
    out = rig.take_all()
    assert seqs_of(out) == [1, 2, 3] and all(m.msg_type == b"D" for m in out)
    assert rig.outbox.written_upto == 3 and rig.outbox.backlog == 0


def test_a_take_is_bounded_by_its_budget_and_the_rest_follows(rig):
    rig.outbox.attach()
    rig.outbox.pushback = True                     # a backlog built while its socket was full
    rig.copies(50)
    rig.outbox.pushback = False
    rig.durable()
    first = decode(b"".join(rig.outbox.take(rig.journal.durable_lsn, NOW, budget=1000)))
    assert 1 <= len(first) < 50
    assert rig.outbox.ready(rig.journal.durable_lsn)            # the shell takes again later
    rest = rig.take_all()
    assert seqs_of(first + rest) == list(range(1, 51))


def test_a_take_hands_out_every_copy_queued_since_the_last_one_whatever_its_budget(rig):
    """A target that takes what it is sent must not be outrun by the sources: the shell fits
    the budget to how long a take runs (a busy machine makes every take look slow), and a
    budget smaller than what each turn brings would let the queue grow until it spills."""
    rig.outbox.attach()
    rig.copies(40)
    rig.durable()
    assert seqs_of(rig.take_all(budget=1)) == list(range(1, 41))
    rig.copies(30)                                 # the next turn: 30 more, 10 of them...
    rig.durable()
    rig.copies(10)                                 # ...not durable yet when the take runs
    assert seqs_of(rig.take_all(budget=1)) == list(range(41, 71))
    rig.durable()
    assert seqs_of(rig.take_all(budget=1)) == list(range(71, 81))   # still owed: all of them
    rig.outbox.pushback = True                     # copies queued while the socket is full...
    rig.copies(40)
    rig.outbox.pushback = False
    rig.durable()
    first = rig.take_all(budget=1000)              # ...are a backlog: the budget bounds it
    assert 1 <= len(first) < 40
    rest = rig.take_all()
    assert seqs_of(first + rest) == list(range(81, 121))


def test_session_messages_interleave_by_seq_and_retransmissions_go_at_once(rig):
    rig.outbox.attach()
    rig.copies(2)                                  # seqs 1, 2
    hb = rig.outbox.reserve()                       # seq 3: the session's Heartbeat
    rig.copies(1)                                  # seq 4
    heartbeat = encode_fields("FIX.4.4", "0", [(49, "DCGW"), (56, "T"), (34, hb),
                                                (52, "20260601-10:00:01.000")])
    resent = encode_fields("FIX.4.4", "4", [(49, "DCGW"), (56, "T"), (34, 1), (43, "Y"),
                                             (52, "20260601-10:00:01.000")], [(123, "Y"), (36, 2)])
    rig.outbox.add_session([Outgoing(hb, False, heartbeat), Outgoing(1, True, resent)])
    out = rig.take_all()                           # nothing durable yet: only the resend
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"4")]
    rig.durable()
    out = rig.take_all()
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"D"), (2, b"D"), (3, b"0"), (4, b"D")]


def test_a_slow_target_spills_to_the_journal_and_catches_up_without_gaps(tmp_path):
    r = Rig(tmp_path, max_pending=10)
    r.outbox.attach()
    r.outbox.pushback = True                       # its socket pushes back
    r.copies(25)
    assert r.outbox.spill_from is not None and not r.outbox.pending
    r.durable()
    r.outbox.pushback = False
    got = []
    for _ in range(100):                           # bounded takes, as the shell would
        got += decode(b"".join(r.outbox.take(r.journal.durable_lsn, NOW, budget=2000)))
        if not r.outbox.ready(r.journal.durable_lsn):
            break
    assert seqs_of(got) == list(range(1, 26))
    assert r.outbox.spill_from is None             # caught up: back to memory
    r.copies(2)
    r.durable()
    assert seqs_of(r.take_all()) == [26, 27]
    r.file.close()
    r.journal.close()


def test_a_catch_up_that_ends_on_its_budget_at_the_last_copy_leaves_the_journal(tmp_path):
    """The take that hands out the last reserved copy from the journal ends the catch-up even
    when its budget ran out on that copy (no later take would come: nothing is ready), so the
    next copies queue in memory again."""
    r = Rig(tmp_path, max_pending=10)
    r.outbox.attach()
    r.outbox.pushback = True
    r.copies(25)
    assert r.outbox.spill_from is not None
    r.durable()
    r.outbox.pushback = False
    got: list = []
    while len(got) < 25:                           # budget 1: one copy a take, the last included
        got += decode(b"".join(r.outbox.take(r.journal.durable_lsn, NOW, budget=1)))
        assert len(got) < 26
    assert seqs_of(got) == list(range(1, 26))
    assert not r.outbox.ready(r.journal.durable_lsn)
    assert r.outbox.spill_from is None and not r.outbox.pending
    r.copies(2)
    assert len(r.outbox.pending) == 2              # queued in memory, not read back
    r.file.close()
    r.journal.close()


def test_a_target_that_never_reads_its_session_messages_is_stalled(rig):
    rig.outbox.attach()
    rig.copies(1)                                  # seq 1, never durable: everything queues
    items = [Outgoing(rig.outbox.reserve(), False, b"x") for _ in range(MAX_ADMIN_QUEUED + 1)]
    rig.outbox.add_session(items)
    assert rig.outbox.stalled and rig.outbox.take(10**9, NOW) == []


def test_a_sequence_reset_carries_undelivered_copies_over_after_the_logon_reply(rig):
    rig.outbox.attach()
    rig.copies(3)
    rig.durable()
    assert seqs_of(rig.take_all()) == [1, 2, 3]
    rig.store.note_delivered()
    rig.outbox.detach()                            # offline: two more copies wait for it
    rig.copies(2)                                  # seqs 4, 5 (journal only)
    rig.durable()
    rig.outbox.attach()
    rig.store.reset()                              # it logs on with 141=Y
    assert rig.store.next_out == 1
    logon_reply = encode_fields("FIX.4.4", "A", [(49, "DCGW"), (56, "T"), (34, 1),
                                                  (52, "20260601-10:00:02.000")], [(98, 0)])
    rig.store.save_outbound(1, logon_reply)        # the reply takes seq 1 ...
    rig.outbox.add_session([Outgoing(1, False, logon_reply)])
    rig.durable()
    out = rig.take_all()                           # ... the carried copies the next ones
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"A"), (2, b"D"), (3, b"D")]
    assert [m.get(11) for m in out[1:]] == [b"C4", b"C5"]
    assert all(m.header.get(43) is None for m in out)   # never delivered: not duplicates


def test_a_weekly_reset_then_a_logon_with_141_y_carries_the_copies_over_once(rig):
    """The weekly reset finds the target offline with two copies it never received; before
    any Logon reply went, the target logs on with 141=Y (a second reset): those copies still
    follow its Logon reply, once each."""
    rig.outbox.attach()
    rig.copies(1)
    rig.durable()
    assert seqs_of(rig.take_all()) == [1]
    rig.store.note_delivered()
    rig.outbox.detach()
    rig.copies(2)                                  # seqs 2, 3: never delivered
    rig.durable()
    rig.store.reset()                              # the weekly reset (offline)
    rig.outbox.attach()
    rig.store.reset()                              # its Logon says 141=Y
    logon_reply = encode_fields("FIX.4.4", "A", [(49, "DCGW"), (56, "T"), (34, 1),
                                                  (52, "20260601-10:00:02.000")], [(98, 0)])
    rig.store.save_outbound(1, logon_reply)
    rig.outbox.add_session([Outgoing(1, False, logon_reply)])
    rig.durable()
    out = rig.take_all()
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"A"), (2, b"D"), (3, b"D")]
    assert [m.get(11) for m in out[1:]] == [b"C2", b"C3"]


def test_a_reset_after_delivery_carries_nothing(rig):
    rig.outbox.attach()
    rig.copies(2)
    rig.durable()
    rig.take_all()
    rig.store.note_delivered()
    rig.outbox.detach()
    rig.outbox.attach()
    rig.store.reset()
    rig.store.save_outbound(1, b"reply")
    assert rig.store.next_out == 2 and rig.journal.target_last_seq("T") == 0


def test_a_few_waiting_copies_go_the_short_way_with_the_same_result(rig, tmp_path):
    """A source at a moderate rate commits one message per read: the take of a lone copy
    (no session message waiting) is the common case and must equal the general path's."""
    rig.outbox.attach()
    rig.copies(1)
    assert rig.outbox.take(rig.journal.durable_lsn, NOW) == []    # not durable: nothing
    assert len(rig.outbox.pending) == 1 and rig.outbox.cursor == 1
    rig.durable()
    (one,) = rig.take_all()
    assert one.seq_num == 1 and rig.outbox.cursor == 2 and rig.outbox.written_upto == 1
    assert not rig.outbox.pending and rig.outbox.copies_written == 1
    assert rig.outbox.out_counts["order"] == 1 and len(rig.outbox._lats) == 1
    # three more, the last not durable yet: none goes until all may (then in one take)
    rig.copies(2)
    rig.durable()
    rig.copies(1)
    assert rig.outbox.take(rig.journal.durable_lsn, NOW + 1) != []       # the run path: 2, 3
    assert rig.outbox.cursor == 4 and len(rig.outbox.pending) == 1
    rig.durable()
    assert seqs_of(rig.take_all()) == [4] and rig.outbox.copies_written == 4
    # the same copies made by the run path (more than FEW_COPIES queued) are byte for byte
    # the same
    from dcgateway.fanout.outbox import FEW_COPIES
    other = Rig(tmp_path / "other")
    try:
        other.outbox.attach()
        other.copies(FEW_COPIES + 1)
        other.durable()
        many = other.take_all()
        assert seqs_of(many) == list(range(1, FEW_COPIES + 2))
        assert many[0].raw == one.raw
    finally:
        other.file.close()
        other.journal.close()


def test_waiting_copies_behind_a_session_message_wait_their_turn(rig):
    rig.outbox.attach()
    hb = rig.outbox.reserve()                      # seq 1: a Heartbeat queued in its turn
    rig.copies(1)                                 # seq 2
    rig.durable()
    rig.outbox.add_session([Outgoing(hb, False, b"8=FIX.4.4\x01HB\x01")])
    out = rig.outbox.take(rig.journal.durable_lsn, NOW)
    assert out[0] == b"8=FIX.4.4\x01HB\x01" and len(out) == 2
    assert decode(out[1])[0].seq_num == 2


def test_no_copy_leaves_before_the_note_of_the_logon_is_durable(rig):
    """With a background sync attached, the target's Logon note (its "delivered" marker) is
    on the disk only after a round: until then its session messages go, its copies (live or
    read back from the journal) wait, and so does the answer to a ResendRequest."""
    rig.copies(2)                                  # seqs 1, 2: before the Logon
    rig.file.sync_soon = lambda: None              # a background sync (never run here)
    rig.outbox.attach()
    assert rig.outbox.held_at >= 0 and not rig.store.resend_ready()
    reply = rig.outbox.reserve()                   # seq 3: the Logon reply
    logon = encode_fields("FIX.4.4", "A", [(49, "DCGW"), (56, "T"), (34, reply),
                                            (52, "20260601-10:00:01.000")], [(98, 0), (108, 30)])
    rig.outbox.add_session([Outgoing(reply, False, logon)])
    rig.copies(2)                                  # seqs 4, 5: live
    rig.durable()
    assert seqs_of(rig.take_all()) == [3]          # the Logon reply only
    assert not rig.outbox.ready(rig.journal.durable_lsn)
    rig.outbox.spill_from = rig.outbox.cursor      # read back from the journal: held too
    assert rig.take_all() == [] and not rig.outbox.ready(rig.journal.durable_lsn)
    ticket = rig.file.begin_sync()                 # the round: the marker reaches the disk
    assert ticket is not None
    os.fdatasync(ticket[0])
    os.close(ticket[0])
    rig.file.end_sync(ticket, None, 0.0)
    assert rig.store.resend_ready()
    assert seqs_of(rig.take_all()) == [4, 5] and rig.outbox.held_at == -1


def test_a_resend_waits_for_the_copies_below_the_logon_to_be_durable(rig):
    """``fsync`` mode: the Logon no longer makes the journal durable on the loop; a
    ResendRequest for what lies below it waits until the group commit covers it."""
    rig.copies(2)                                  # seqs 1, 2: appended, not durable
    rig.outbox.attach()
    assert rig.journal.durable_lsn < rig.outbox.attach_lsn
    assert not rig.store.resend_ready() and rig.outbox.held_at == -1   # (no background sync)
    rig.durable()
    assert rig.store.resend_ready()
    assert [e.target_seq for e in rig.journal.read_target("T", 1, 2)] == [1, 2]


def _restart(r: Rig, root: Path) -> Rig:
    """The gateway restarts: the journal and the session file reopened from the disk."""
    r.file.close()
    r.journal.close()
    again = Rig.__new__(Rig)
    again.journal = SegmentJournal(root / "journal")
    rec = again.journal.recover()
    again.outbox = Outbox("T", "FIX.4.4", "fix", "DCGW", again.journal, 10_000)
    again.file = FileSessionStore(root / "T.log")
    next_out = max(again.file.next_out, rec.target_next_seq.get("T", 1))
    again.store = TargetStore(again.outbox, again.file, again.journal, next_out)
    again.outbox.store = again.store
    again.outbox.written_upto = again.store.recovered_delivered()     # (as make_slot does)
    again.fanout = Fanout(again.journal, RoutingTable.build((), {}), {"T": again.outbox},
                          notify=lambda: None)
    again.store.carry_over = again.fanout.carry_over
    again.src_seq = r.src_seq
    return again


def _logon_reply(r: Rig) -> list:
    reply = encode_fields("FIX.4.4", "A", [(49, "DCGW"), (56, "T"), (34, 1),
                                            (52, "20260601-10:00:02.000")], [(98, 0)])
    r.outbox.attach()
    r.store.save_outbound(1, reply)
    r.outbox.add_session([Outgoing(1, False, reply)])
    r.durable()
    return r.take_all()


def test_copies_carried_over_a_weekly_reset_survive_a_restart_before_the_logon(tmp_path):
    """The weekly reset finds the target offline with copies it never received; the gateway
    restarts before the target logs on again: the copies still follow its Logon reply, once."""
    r = Rig(tmp_path)
    r.outbox.attach()
    r.copies(1)
    r.durable()
    r.take_all()
    r.store.note_delivered()
    r.outbox.detach()
    r.copies(2)                                    # seqs 2, 3: never delivered
    r.durable()
    r.store.reset()                                # the weekly reset (offline)
    r = _restart(r, tmp_path)
    out = _logon_reply(r)
    assert [(m.seq_num, m.msg_type) for m in out] == [(1, b"A"), (2, b"D"), (3, b"D")]
    assert [m.get(11) for m in out[1:]] == [b"C2", b"C3"]
    r = _restart(r, tmp_path)                      # carried: not again after a restart
    assert len(r.file.carried) == 2 and r.store._carried == []
    r.file.close()
    r.journal.close()


def test_after_a_restart_copies_already_carried_are_not_carried_twice(tmp_path):
    """The copies were journaled again after the Logon reply; the gateway restarts: the store
    finds them in the journal right after its first message and carries none twice, even
    when the new week reuses a carried copy's source seq (sources restart at 1 too)."""
    r = Rig(tmp_path)
    r.copies(2)                                    # source seqs 1, 2: never delivered
    r.durable()
    r.store.reset()                                # the weekly reset (offline)
    r.src_seq = 0                                  # the source starts the week at 1 as well
    r.copies(1)                                    # new week: source seq 1 again, target seq 1
    r.durable()
    reply = encode_fields("FIX.4.4", "0", [(49, "DCGW"), (56, "T"), (34, 2),
                                            (52, "20260601-10:00:02.000")])
    r.outbox.attach()
    r.store.save_outbound(2, reply)               # its first message after the reset
    r.outbox.add_session([Outgoing(2, False, reply)])
    r.durable()
    out = [(m.seq_num, m.get(11)) for m in r.take_all() if m.msg_type == b"D"]
    assert out == [(3, b"C1"), (4, b"C2")]         # carried right after its first message
    r = _restart(r, tmp_path)
    assert len(r.file.carried) == 2 and r.store._carried == []
    r.file.close()
    r.journal.close()


def test_copies_whose_carry_the_journal_lost_are_carried_again(tmp_path):
    """The process stopped after the first message of the new sequence was recorded but
    before the carried copies reached the journal: the next start carries them."""
    r = Rig(tmp_path)
    r.copies(2)
    r.durable()
    r.store.reset()
    r.store.carry_over = None                      # (nothing journaled: the crash)
    r.outbox.attach()
    r.store.save_outbound(1, b"8=FIX.4.4\x019=5\x0135=A\x0110=000\x01")
    r = _restart(r, tmp_path)
    assert [e.source_seq for e in r.store._carried] == [1, 2]
    r.file.close()
    r.journal.close()


def test_a_restart_before_the_carry_keeps_copies_whose_source_seq_came_again(tmp_path):
    """Sources restart at 1 with the week: a new-week copy from the same source and seq as a
    carried one, routed before the restart, is not taken for the carried one."""
    r = Rig(tmp_path)
    r.copies(2)                                    # source seqs 1, 2: never delivered
    r.durable()
    r.store.reset()                                # the weekly reset (offline)
    r.src_seq = 0
    r.copies(1)                                    # new week: source seq 1 again (target seq 1)
    r.durable()
    r = _restart(r, tmp_path)
    assert [e.source_seq for e in r.store._carried] == [1, 2]
    r.file.close()
    r.journal.close()


def test_new_week_copies_of_an_offline_target_are_carried_by_a_141_y_after_a_restart(tmp_path):
    """The weekly reset records that nothing of the new sequence was delivered (the target is
    offline): after a restart, its Logon with 141=Y carries the new week's copies over, rather
    than count them delivered."""
    r = Rig(tmp_path)
    r.store.reset()                                # the weekly reset (offline)
    r.copies(2)                                    # new week: target seqs 1, 2, never delivered
    r.durable()
    r = _restart(r, tmp_path)
    assert r.outbox.written_upto == 0
    r.outbox.attach()
    r.store.reset()                                # its Logon says 141=Y
    out = _logon_reply(r)
    assert [(m.seq_num, m.get(11)) for m in out if m.msg_type == b"D"] == [(2, b"C1"), (3, b"C2")]
    r.file.close()
    r.journal.close()
