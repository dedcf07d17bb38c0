"""dcgateway.net.connection without sockets: FixConnection driven through a recording fake
transport, a fake owner (the ConnectionOwner seam), a fake session and a settable clock, the way
uvicorn tests its protocols. The behaviours over real sockets are in tests/integration; these pin
the shell's own logic: the pre-Logon cap, one read per loop turn, the reasons to hold reading,
writes and closes, and a drop copy target's budgeted feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from dcgateway.errors import StoreError
from dcgateway.fanout import TAKE_BUDGET
from dcgateway.fix.codec import encode_fields
from dcgateway.net import connection as connection_module
from dcgateway.net.connection import (
    CATCHUP_REST_RATIO,
    CLOSE_GRACE_S,
    JOURNAL_HOLD,
    MAX_PRE_LOGON_GARBAGE,
    MIN_TAKE_BUDGET,
    RESEND_WAIT_MAX_S,
    RESEND_WAIT_S,
    TAKE_SLICE_S,
    TURN_READ_BYTES,
    FixConnection,
)

from . import fakes
from .fakes import FakeClock, FakeOutbox, FakeOwner, FakeTransport


def logon() -> bytes:
    return encode_fields(b"FIX.4.2", b"A", [(49, b"SRC1"), (56, b"DCGW"), (34, 1),
                                            (52, b"20250615-12:00:00.000")], [(98, 0), (108, 30)])


def connect(owner: FakeOwner | None = None, clock: FakeClock | None = None,
            transport: FakeTransport | None = None) -> tuple[FixConnection, FakeTransport]:
    conn = FixConnection(owner or FakeOwner(), clock or FakeClock(), 64 * 1024)
    tr = transport or FakeTransport()
    conn.connection_made(tr)  # type: ignore[arg-type]
    return conn, tr


def bound(owner: FakeOwner | None = None, clock: FakeClock | None = None,
          outbox: FakeOutbox | None = None) -> tuple[FixConnection, FakeTransport, FakeOwner]:
    """A connection bound by its Logon (through the owner's bind, as the acceptor does)."""
    owner = owner or FakeOwner()
    owner.slot.outbox = outbox  # type: ignore[assignment]
    conn, tr = connect(owner, clock)
    conn.data_received(logon())
    assert conn.session is owner.session
    tr.writes.clear()
    return conn, tr, owner


@contextlib.contextmanager
def call_later_spy() -> Iterator[list[tuple[float, Any]]]:
    """Record the running loop's call_later calls instead of scheduling them."""
    loop = asyncio.get_running_loop()
    calls: list[tuple[float, Any]] = []
    loop.call_later = lambda delay, cb, *args, **kw: calls.append((delay, cb))  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del loop.call_later


@pytest.fixture
def perf(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The connection's perf_counter (what it times takes with), set by the test."""
    pc = FakeClock(100.0)
    monkeypatch.setattr(connection_module, "time", SimpleNamespace(perf_counter=pc))
    return pc


@pytest_asyncio.fixture
async def loop(loop_errors: list[dict[str, Any]]) -> asyncio.AbstractEventLoop:
    """The running loop; anything reaching its exception handler fails the test."""
    running = asyncio.get_running_loop()
    running.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    return running


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- connection_made ----------------------------------------------------------------------------

def test_connection_made_names_the_peer_sets_the_watermarks_and_registers() -> None:
    owner = FakeOwner()
    conn, tr = connect(owner)
    assert conn.peer == "192.0.2.1:40001"
    assert tr.limits == owner.write_buffer_limits
    assert owner.opened == [conn]
    assert not conn.heard and conn.name == "unbound"
    unix, _ = connect(transport=FakeTransport(peer="/run/gw.sock"))
    assert unix.peer == "/run/gw.sock"


def test_bytes_already_waiting_in_the_socket_count_as_heard() -> None:
    """FIONREAD on the socket's descriptor (a pipe stands in for it): a Logon that arrived with
    the connection marks it heard at once; over TLS the count is not known, so it is not."""
    r, w = os.pipe()
    try:
        sock = SimpleNamespace(fileno=lambda: r)
        silent, _ = connect(transport=FakeTransport(socket=sock))
        assert not silent.heard
        os.write(w, b"8=FIX.4.2\x01")
        waiting, _ = connect(transport=FakeTransport(socket=sock))
        assert waiting.heard
        tls, _ = connect(transport=FakeTransport(socket=sock, sslcontext=object()))
        assert not tls.heard
    finally:
        os.close(r)
        os.close(w)


# -- before the Logon ----------------------------------------------------------------------------

def test_a_first_frame_is_buffered_up_to_the_cap_and_refused_one_byte_past_it() -> None:
    """A frame start that announces a large body is kept while it fits MAX_PRE_LOGON_GARBAGE
    bytes in all (across reads); the byte past the cap closes the connection at once."""
    owner = FakeOwner()
    conn, tr = connect(owner)
    start = b"8=FIX.4.2\x019=60000\x0135=A\x01"
    conn.data_received(start[:4])
    assert conn.heard                                 # any byte: heard, not yet bound
    conn.data_received(start[4:])
    conn.data_received(b"x" * (MAX_PRE_LOGON_GARBAGE - len(start) - 10))
    conn.data_received(b"x" * 10)                     # exactly at the cap: still waiting
    assert owner.refusals == [] and owner.bound == [] and tr.calls == []
    conn.data_received(b"x")
    assert owner.refusals == ["garbage_before_logon"]
    assert tr.calls == ["abort"] and tr.writes == []
    assert conn.close_reason == "no Logon in the first bytes"
    conn.data_received(logon())                       # after the close: ignored
    assert owner.bound == [] and owner.refusals == ["garbage_before_logon"]


def test_bytes_that_cannot_start_a_message_are_refused_as_an_invalid_first_message() -> None:
    owner = FakeOwner()
    conn, tr = connect(owner)
    conn.data_received(b"GET / HTTP/1.1\r\n" + logon())
    assert owner.refusals == ["invalid_first_message"] and owner.bound == []
    assert tr.calls == ["abort"] and conn.close_reason == "invalid first message (garbage)"


def test_the_first_message_binds_and_the_rest_of_the_read_goes_to_the_session() -> None:
    owner = FakeOwner()
    conn, tr = connect(owner)
    tail = logon()[:20]
    chunk = logon() + tail
    conn.data_received(chunk)
    assert [m.msg_type for m in owner.bound] == [b"A"]
    assert owner.bound[0].header[49] == b"SRC1"
    assert [m.raw for m in owner.session.first] == [logon()]
    assert owner.session.received == [tail]           # the decoder's pending tail, handed on
    assert conn.session is owner.session and conn.name == "SRC1"
    assert owner.slot.bytes_in == len(chunk)
    assert owner.slot.store.syncs == 1                # durable before the reply is written
    assert tr.written == b"LOGON-REPLY" and owner.slot.bytes_out == len(b"LOGON-REPLY")


def test_each_read_of_a_bound_session_first_calls_its_slots_before_read() -> None:
    """A source's ``before_read`` (the journal's early wake in ``fsync`` mode) runs once per
    read the session will parse, before it does; not for the Logon's read, before a session
    exists, nor for a read refused for the inbound rate."""
    owner = FakeOwner(max_inbound_rate=1)
    seen: list[int] = []
    owner.slot.before_read = lambda: seen.append(len(owner.session.received))
    conn, _, _ = bound(owner)
    assert seen == []
    conn.data_received(b"8=FIX.4.2")
    conn.data_received(b"\x0110=000\x01")
    assert seen == [0, 1]                        # each time before the session got the read
    assert owner.session.received == [b"8=FIX.4.2", b"\x0110=000\x01"]
    conn.data_received(b"\x0110=000\x01")        # a second message in the second: refused
    assert owner.refusals == ["rate_limit"] and seen == [0, 1]


def test_a_logon_dribbled_over_several_reads_is_counted_whole_in_bytes_in() -> None:
    """Every byte of the Logon was received from the session's peer, not only the last read's
    (DEFECT: ``_before_logon`` adds only the binding read to ``slot.bytes_in``)."""
    owner = FakeOwner()
    conn, _ = connect(owner)
    raw = logon()
    conn.data_received(raw[:30])
    conn.data_received(raw[30:])
    assert conn.session is owner.session
    assert owner.slot.bytes_in == len(raw)


# -- reading: turns and holds --------------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_big_read_ends_the_turn_and_reading_resumes_on_the_next(loop) -> None:
    conn, tr, owner = bound()
    conn.data_received(b"x" * (TURN_READ_BYTES - 1))
    assert tr.calls == []                             # a small read does not pause
    conn.data_received(b"x" * TURN_READ_BYTES)
    assert tr.calls == ["pause_reading"]
    assert owner.session.received[-1] == b"x" * TURN_READ_BYTES   # processed, then paused
    await asyncio.sleep(0)
    assert tr.calls == ["pause_reading", "resume_reading"]


@pytest.mark.asyncio
async def test_the_end_of_a_turn_does_not_resume_a_peer_held_for_its_write_buffer(loop) -> None:
    """A full write buffer holds reading from a session peer until it drains."""
    conn, tr, _ = bound()
    conn.pause_writing()
    assert conn.write_paused and tr.calls == ["pause_reading"]
    conn.data_received(b"x" * TURN_READ_BYTES)
    await turns()
    assert tr.calls == ["pause_reading"]              # one pause for both reasons, no resume
    conn.resume_writing()
    assert not conn.write_paused and tr.calls == ["pause_reading", "resume_reading"]


def test_reading_resumes_only_when_every_reason_is_released() -> None:
    conn, tr = connect()
    conn.hold_reading("journal")
    conn.hold_reading("write_buffer")
    conn.hold_reading("journal")
    assert tr.calls == ["pause_reading"]
    conn.release_reading("journal")
    conn.release_reading("not-held")
    assert tr.calls == ["pause_reading"]
    conn.release_reading("write_buffer")
    assert tr.calls == ["pause_reading", "resume_reading"]
    conn.release_reading("write_buffer")              # released twice: nothing more
    conn.hold_reading("journal")
    conn.close("bye", abort=True)                     # closed: neither resumed nor paused
    conn.release_reading("journal")
    conn.hold_reading("write_buffer")
    assert tr.calls == ["pause_reading", "resume_reading", "pause_reading", "abort"]


# -- writing and closing -------------------------------------------------------------------------

def test_write_raw_counts_bytes_out_and_writes_nothing_after_close() -> None:
    conn, tr, owner = bound()
    conn.write_raw(b"abc")
    conn.write_raw(b"de")
    assert tr.writes == [b"abc", b"de"]
    before = owner.slot.bytes_out
    conn.close("done", abort=True)
    conn.write_raw(b"late")
    assert tr.writes == [b"abc", b"de"] and owner.slot.bytes_out == before
    unbound, unbound_tr = connect()                   # no slot to count it in yet
    unbound.write_raw(b"logout")
    assert unbound_tr.writes == [b"logout"]


@pytest.mark.asyncio
async def test_close_flushes_then_aborts_a_peer_that_never_drained(loop, caplog) -> None:
    conn, tr, _ = bound()
    with call_later_spy() as later:
        conn.close("session closed")
        conn.close("again")                           # once only
    assert tr.calls == ["close"] and conn.close_reason == "session closed"
    assert later == [(CLOSE_GRACE_S, conn.abort_if_open)]
    with caplog.at_level(logging.WARNING, logger="dcgateway.net"):
        later[0][1]()
    assert tr.calls == ["close", "abort"]
    assert "did not drain within" in caplog.text and "SRC1" in caplog.text


@pytest.mark.asyncio
async def test_close_grace_leaves_a_connection_that_was_lost_meanwhile(loop) -> None:
    conn, tr, owner = bound()
    with call_later_spy() as later:
        conn.close("session closed")
    conn.connection_lost(None)
    later[0][1]()
    assert tr.calls == ["close"]
    assert owner.closed == [(conn, None)]


@pytest.mark.asyncio
async def test_close_with_abort_aborts_at_once_and_waits_for_nothing(loop) -> None:
    conn, tr, _ = bound()
    with call_later_spy() as later:
        conn.close("internal error", abort=True)
    assert tr.calls == ["abort"] and later == []


@pytest.mark.asyncio
async def test_held_output_is_written_in_order_at_its_release_and_a_close_waits_for_it(
        loop) -> None:
    """A source's 141=Y Logon reply waits for the journal's marker (``fsync`` mode): what is
    written meanwhile is kept in order and written at the release; a close that came meanwhile
    (a Logout right after) closes after it, not before, and not never."""
    conn, tr, _ = bound()
    conn.hold_output()
    conn.write_raw(b"LOGON-REPLY")
    conn.write_raw(b"LOGOUT")
    with call_later_spy() as later:
        conn.close("session closed")
    assert tr.writes == [] and tr.calls == []
    assert later == [(CLOSE_GRACE_S, conn.abort_if_open)]
    conn.write_raw(b"AFTER-CLOSE")                    # (closing: nothing more is taken)
    conn.release_output()
    assert tr.writes == [b"LOGON-REPLYLOGOUT"] and tr.calls == ["close"]
    conn.write_raw(b"LATE")
    assert tr.writes == [b"LOGON-REPLYLOGOUT"]


@pytest.mark.asyncio
async def test_held_output_never_released_is_aborted_after_the_close_grace(loop) -> None:
    conn, tr, _ = bound()
    conn.hold_output()
    conn.write_raw(b"LOGON-REPLY")
    with call_later_spy() as later:
        conn.close("session closed")
    later[0][1]()                                     # the grace is over: the journal is stuck
    assert tr.writes == [] and tr.calls == ["abort"]
    conn.release_output()                             # (too late: the connection is gone)
    assert tr.writes == []


def test_an_error_in_the_owner_on_connection_lost_is_logged_not_raised(caplog) -> None:
    owner = FakeOwner()
    owner.fail_on_close = RuntimeError("boom")
    conn, _ = connect(owner)
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        conn.connection_lost(ConnectionResetError())
    assert "internal error closing unbound" in caplog.text
    conn.data_received(logon())                       # lost: nothing more is read
    assert owner.bound == []


@pytest.mark.parametrize("fault, reason", [
    (StoreError("disk full"), "cannot store session state"),
    (RuntimeError("bug"), "internal error")])
def test_a_fault_while_reading_closes_with_its_reason(fault, reason, caplog) -> None:
    conn, tr, owner = bound()
    owner.session.fail = fault
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        conn.data_received(b"8=FIX.4.2\x01")          # must not raise into the loop
    assert conn.close_reason == reason and tr.calls == ["close"]
    assert "SRC1" in caplog.text


def test_the_inbound_rate_is_counted_in_one_second_windows() -> None:
    """Messages are counted by their trailers; the window restarts a second after it began;
    the chunk that goes past the limit is not processed, the peer is logged out and closed."""
    clock = FakeClock()
    conn, tr, owner = bound(FakeOwner(max_inbound_rate=3), clock)
    three = b"\x0110=000\x01" * 3
    conn.data_received(three)
    clock.advance(0.5)
    conn.data_received(b"")                           # same window, nothing counted
    clock.advance(0.5)
    conn.data_received(three)                         # a new window: accepted
    assert owner.session.received == [three, b"", three] and owner.refusals == []
    conn.data_received(b"\x0110=000\x01")
    assert owner.session.received == [three, b"", three]
    assert owner.refusals == ["rate_limit"]
    assert owner.session.logouts == ["inbound message rate above 3/s"]
    assert tr.written == b"LOGOUT" and tr.calls == ["close"]


# -- a drop copy target's feed -------------------------------------------------------------------

@pytest.mark.asyncio
async def test_kicks_in_one_turn_schedule_one_budgeted_take(loop) -> None:
    clock = FakeClock()
    outbox = FakeOutbox([b"c1", b"c2"])
    conn, tr, owner = bound(clock=clock, outbox=outbox)
    conn.kick()
    conn.kick()
    conn.kick()
    assert outbox.takes == []                         # not within the caller's turn
    await asyncio.sleep(0)
    assert outbox.takes == [(7, clock(), TAKE_BUDGET)]
    assert tr.writes == [b"c1"] and owner.slot.bytes_out == 2
    await asyncio.sleep(0)                            # more was ready: the next turn, once
    assert len(outbox.takes) == 2 and tr.writes == [b"c1", b"c2"]
    await turns()
    assert len(outbox.takes) == 2                     # nothing ready: no more takes


@pytest.mark.asyncio
async def test_a_paused_target_pushes_back_is_still_read_and_is_fed_when_it_drains(loop) -> None:
    outbox = FakeOutbox([b"c1", b"c2", b"c3"])
    conn, tr, _ = bound(outbox=outbox)
    tr.on_write = conn.pause_writing                  # the first write fills the buffer
    conn.kick()
    await turns()
    assert tr.writes == [b"c1"] and len(outbox.takes) == 1
    assert outbox.pushback and "pause_reading" not in tr.calls   # its Heartbeats are heard
    conn.kick()
    await turns()
    assert len(outbox.takes) == 1                     # paused: no take
    tr.on_write = None
    conn.resume_writing()
    assert not outbox.pushback and len(outbox.takes) == 1
    await asyncio.sleep(0)
    assert tr.writes == [b"c1", b"c2"]
    await asyncio.sleep(0)
    assert tr.writes == [b"c1", b"c2", b"c3"]


@pytest.mark.asyncio
async def test_a_target_catching_up_rests_as_long_as_its_take_ran(loop, perf) -> None:
    outbox = FakeOutbox([b"c1", b"c2", b"c3"], perf)
    outbox.spill_from = 10
    outbox.cost = TAKE_SLICE_S / 2                    # quick enough to keep the budget
    conn, tr, _ = bound(outbox=outbox)
    with call_later_spy() as later:
        conn.kick()
        await asyncio.sleep(0)
        assert len(outbox.takes) == 1
        conn.kick()                                   # a commit meanwhile: the rest stands
        await turns()
    assert len(outbox.takes) == 1
    assert later == [(pytest.approx(TAKE_SLICE_S / 2 * CATCHUP_REST_RATIO), conn.feed)]
    outbox.spill_from = None                          # caught up: live again
    later[0][1]()
    assert tr.writes == [b"c1", b"c2"]
    await asyncio.sleep(0)                            # live: fed on the next turn
    assert tr.writes == [b"c1", b"c2", b"c3"]


@pytest.mark.asyncio
async def test_a_fault_while_feeding_aborts_only_that_target(loop, caplog) -> None:
    good_box, bad_box = FakeOutbox([b"ok"]), FakeOutbox([b"never"])
    bad_box.fail = RuntimeError("bug in take")
    good, good_tr, _ = bound(outbox=good_box)
    bad_owner = FakeOwner()
    bad_owner.slot.comp_id = "CLR001N"
    bad, bad_tr, _ = bound(bad_owner, outbox=bad_box)
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        bad.kick()
        good.kick()
        await turns()
    assert bad_tr.calls == ["abort"] and bad.close_reason == "internal error" and not bad_tr.writes
    assert "internal error feeding CLR001N" in caplog.text
    assert good_tr.writes == [b"ok"] and good_tr.calls == []
    bad.kick()                                        # closed: never scheduled again
    await turns()
    assert len(bad_box.takes) == 1


@pytest.mark.asyncio
async def test_a_slow_take_shrinks_the_next_takes_budget(loop, perf) -> None:
    outbox = FakeOutbox([b"c1", b"c2", b"c3"], perf)
    outbox.cost = TAKE_SLICE_S * 4
    conn, _, _ = bound(outbox=outbox)
    conn.kick()
    await turns()
    assert [b for _, _, b in outbox.takes] == [
        TAKE_BUDGET, pytest.approx(TAKE_BUDGET / 4, abs=1), pytest.approx(TAKE_BUDGET / 16, abs=1)]


@pytest.mark.parametrize("start, took, after", [
    (TAKE_BUDGET, TAKE_SLICE_S * 2, TAKE_BUDGET // 2),           # in proportion
    (TAKE_BUDGET, TAKE_SLICE_S * 1000, MIN_TAKE_BUDGET),         # never below the minimum
    (MIN_TAKE_BUDGET, TAKE_SLICE_S * 10, MIN_TAKE_BUDGET),
    (8000, TAKE_SLICE_S * 0.75, 8000),                           # near the slice: kept
    (8000, TAKE_SLICE_S, 8000),
    (8000, TAKE_SLICE_S * 0.4, 8000 + 2000 + 1),                 # quick: a quarter more
    (TAKE_BUDGET - 10, 0.0, TAKE_BUDGET),                        # never above the maximum
    (TAKE_BUDGET, 0.0, TAKE_BUDGET)])
def test_fit_budget(start: int, took: float, after: int) -> None:
    conn, _ = connect()
    conn._take_budget = start
    conn._fit_budget(took)
    assert conn._take_budget == pytest.approx(after, abs=1)      # float rounding of the ratio



# -- a ResendRequest answered in slices -----------------------------------------------------------

@pytest.mark.asyncio
async def test_a_large_resend_goes_on_a_slice_per_turn_resting_as_long_as_each_took(
        loop, perf) -> None:
    conn, tr, owner = bound()
    owner.session.perf, owner.session.slice_cost = perf, 0.003
    owner.session.resend_backlog = 2
    with call_later_spy() as later:
        conn.data_received(b"8=FIX.4.2")              # the read that carried the request
        assert later == [(0.0, conn._continue_resend)]
        later.pop()[1]()
        assert tr.writes == [b"SLICE1"]
        assert later == [(pytest.approx(0.003 * CATCHUP_REST_RATIO), conn._continue_resend)]
        later.pop()[1]()
        assert tr.writes == [b"SLICE1", b"SLICE0"] and later == []   # answered: no more


@pytest.mark.asyncio
async def test_a_resend_waits_while_writes_are_paused_and_goes_on_when_they_resume(
        loop) -> None:
    conn, tr, owner = bound()
    owner.session.resend_backlog = 2
    with call_later_spy() as later:
        conn.pause_writing()
        conn.data_received(b"8=FIX.4.2")
        assert later == []                            # the peer is not reading: nothing more
        conn.resume_writing()
        assert later == [(0.0, conn._continue_resend)]
        conn.pause_writing()                          # paused again before the slice ran
        later.pop()[1]()
        assert tr.writes == [] and owner.session.resend_backlog == 2
        conn.resume_writing()
        later.pop()[1]()
    assert tr.writes == [b"SLICE1"]


@pytest.mark.asyncio
async def test_a_resend_whose_answer_is_not_durable_yet_is_looked_at_again_shortly(
        loop) -> None:
    """A target that just logged on asks for copies the group commit under way is still
    writing: the request is looked at again after RESEND_WAIT_S, then twice as long each time
    up to RESEND_WAIT_MAX_S (not on every turn of the loop, not never), and answered once the
    store is ready."""
    conn, tr, owner = bound()
    owner.session.resend_backlog = 1
    owner.session.resend_waiting = True
    waits = []
    with call_later_spy() as later:
        conn.data_received(b"8=FIX.4.2")
        for _ in range(8):
            assert tr.writes == [] and len(later) == 1 and later[0][1] == conn._continue_resend
            delay, again = later.pop()
            waits.append(delay)
            again()
        assert waits[:3] == [RESEND_WAIT_S, 2 * RESEND_WAIT_S, 4 * RESEND_WAIT_S]
        assert waits[-1] == RESEND_WAIT_MAX_S and waits == sorted(waits)
        owner.session.resend_waiting = False
        later.pop()[1]()
        assert tr.writes == [b"SLICE0"] and later == []


@pytest.mark.asyncio
async def test_a_resend_stops_when_the_connection_closes(loop) -> None:
    conn, tr, owner = bound()
    owner.session.resend_backlog = 5
    with call_later_spy() as later:
        conn.data_received(b"8=FIX.4.2")
        conn.close("bye", abort=True)
        later.pop()[1]()
    assert owner.session.resend_backlog == 5 and tr.writes == []


@pytest.mark.asyncio
async def test_a_commit_builds_every_targets_copies_before_it_writes_any(loop) -> None:
    """push(batch): the take's bytes go into the caller's batch, not to the socket, so a commit
    builds all targets' copies before the first write wakes a reader (runtime.flow writes the
    batch); what is left is taken on the next turn and written as usual."""
    box1, box2 = FakeOutbox([b"a1", b"a2"]), FakeOutbox([b"b1"])
    c1, tr1, _ = bound(outbox=box1)
    c2, tr2, _ = bound(outbox=box2)
    batch: list = []
    c1.push(batch)
    c2.push(batch)
    assert tr1.writes == [] and tr2.writes == []           # built, nothing written yet
    assert batch == [(c1, b"a1"), (c2, b"b1")]
    for conn, data in batch:
        conn.write_raw(data)
    assert tr1.writes == [b"a1"] and tr2.writes == [b"b1"]
    await turns()                                          # a2 was ready: the next turn
    assert tr1.writes == [b"a1", b"a2"] and len(box2.takes) == 1
    c1.kick()
    c1.push(batch := [])                                   # a take already due: none now
    assert batch == []


@pytest.mark.asyncio
async def test_a_fault_writing_a_batch_closes_only_that_target(loop, caplog) -> None:
    bad_box, good_box = FakeOutbox([b"x"]), FakeOutbox([b"ok"])
    bad, bad_tr, _ = bound(outbox=bad_box)
    good, good_tr, _ = bound(outbox=good_box)

    def broken(data: bytes) -> None:
        raise RuntimeError("transport bug")
    bad_tr.write = broken                                  # type: ignore[method-assign]
    batch: list = []
    bad.push(batch)
    good.push(batch)
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        for conn, data in batch:
            conn.write_fed(data)
    assert bad.close_reason == "internal error" and bad_tr.calls == ["abort"]
    assert good_tr.writes == [b"ok"] and good.close_reason == ""
    assert "internal error writing to" in caplog.text


def test_a_source_held_for_the_journal_has_its_silence_excused_at_each_tick() -> None:
    conn, _, owner = bound()
    conn.tick(fakes.T0 + 1)
    conn.hold_reading(JOURNAL_HOLD)
    conn.tick(fakes.T0 + 2)
    conn.release_reading(JOURNAL_HOLD)
    conn.hold_reading("write_buffer")        # the peer does not read us: not excused
    conn.tick(fakes.T0 + 3)
    assert owner.session.timers == [fakes.T0 + 1, fakes.T0 + 2, fakes.T0 + 3]
    assert owner.session.excused == [fakes.T0 + 2]


def test_a_source_whose_output_is_held_has_its_silence_excused() -> None:
    """Its Logon reply waits for the journal (141=Y): the peer, which has not heard it, is not
    timed out for the silence meanwhile."""
    conn, _, owner = bound()
    conn.hold_output()
    conn.tick(fakes.T0 + 1)
    conn.release_output()
    conn.tick(fakes.T0 + 2)
    assert owner.session.excused == [fakes.T0 + 1]
