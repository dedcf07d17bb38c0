"""dcgateway.net.acceptor without sockets: the Acceptor built as gateway.py builds it (settings,
slots, clock, authenticator, on_event), its connections real FixConnections on recording fake
transports (tests/net/test_connection.py), time a settable clock. Pinned here: admission of
connections waiting for their Logon (the pending bound, eviction of the oldest silent one, the
per-address bound, the total bound), binding by the first message and refusals with their
reasons, and the rate-limited refusal log. The same over real sockets: tests/integration."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import pytest
import pytest_asyncio

from dcgateway.fix.codec import Decoder, RawMessage, encode_fields
from dcgateway.fix.session import AuthDecision, AuthFailed, Disconnect, LoggedOn
from dcgateway.fix.session_types import SessionConfig
from dcgateway.fix.store import MemoryStore
from dcgateway.fix.timefmt import utc_timestamp
from dcgateway.net.acceptor import (
    AUTH_FAILED_TEXT,
    REFUSAL_LOG_INTERVAL,
    Acceptor,
    AcceptorSettings,
    Refused,
)
from dcgateway.net.connection import ConnectionOwner, FixConnection, SessionSlot

from .fakes import FakeClock, FakeOwner, FakeTransport

HOST_A = "198.51.100.7"
HOST_B = "203.0.113.9"


class Store(MemoryStore):
    """A session store with the shell's sync(); ``fail`` is raised by it."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.fail: Exception | None = None

    def sync(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.syncs += 1


class Rig:
    """An Acceptor wired as the composition root wires it, with recording fakes."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock()
        self.events: list[tuple[SessionSlot | None, Any]] = []
        self.decision = AuthDecision(True)
        self.slot = SessionSlot("SRC1", "source", SessionConfig(b"FIX.4.2", b"DCGW", b"SRC1"),
                                Store())
        self.acceptor = Acceptor(AcceptorSettings(our_comp_id="DCGW", **settings),
                                 {"SRC1": self.slot}, clock=self.clock,
                                 authenticator=self.authenticate, on_event=self.on_event)
        self._ports = itertools.count(40000)

    def authenticate(self, logon: RawMessage, now: float) -> AuthDecision:
        return self.decision

    def on_event(self, slot: SessionSlot | None, ev: Any) -> None:
        self.events.append((slot, ev))

    def open(self, host: str = HOST_A, *, heard: bool = False
             ) -> tuple[FixConnection, FakeTransport]:
        """A new connection from ``host``; ``heard``: it has sent the start of a Logon."""
        conn = FixConnection(self.acceptor, self.clock, 64 * 1024)
        tr = FakeTransport(peer=(host, next(self._ports)))
        conn.connection_made(tr)  # type: ignore[arg-type]
        if heard:
            conn.data_received(b"8=FIX.4.2\x01")
        return conn, tr

    def logon(self, sender: bytes = b"SRC1", target: bytes = b"DCGW", seq: int = 1) -> bytes:
        return encode_fields(b"FIX.4.2", b"A", [(49, sender), (56, target), (34, seq),
                                                (52, utc_timestamp(self.clock()))],
                             [(98, 0), (108, 30)])

    @property
    def refusals(self) -> list[str]:
        return [ev.reason for _, ev in self.events if isinstance(ev, Refused)]

    @property
    def pending(self) -> list[FixConnection]:
        return list(self.acceptor.pending)


def replies(tr: FakeTransport) -> list[RawMessage]:
    out = Decoder().feed(tr.written)
    assert all(isinstance(m, RawMessage) for m in out)
    return out  # type: ignore[return-value]


def test_the_acceptor_and_the_fake_owner_both_provide_the_connection_owner_seam() -> None:
    members = {n for n in vars(ConnectionOwner) if not n.startswith("_")}
    members |= set(ConnectionOwner.__annotations__)
    assert {"settings", "bind", "dispatch", "refused", "logon_timeout"} <= members
    acceptor = Rig().acceptor
    assert [m for m in sorted(members) if not hasattr(acceptor, m)] == []
    assert [m for m in sorted(members) if not hasattr(FakeOwner(), m)] == []


# -- admission ----------------------------------------------------------------------------------

def test_connections_wait_for_their_logon_up_to_the_pending_bound() -> None:
    rig = Rig(max_pending_logons=3)
    conns = [rig.open()[0] for _ in range(3)]
    assert rig.pending == conns and rig.acceptor.connections == set(conns)
    assert all(c.address == HOST_A for c in conns)
    assert rig.acceptor._per_address == {HOST_A: 3}
    assert rig.refusals == []


def test_a_newcomer_past_the_bound_evicts_the_oldest_silent_connection() -> None:
    rig = Rig(max_pending_logons=3)
    talker, talker_tr = rig.open(heard=True)
    silent1, silent1_tr = rig.open()
    silent2, silent2_tr = rig.open()
    newcomer, newcomer_tr = rig.open()
    assert rig.refusals == ["evicted_before_logon"]
    assert silent1_tr.calls == ["abort"]
    assert talker_tr.calls == silent2_tr.calls == newcomer_tr.calls == []
    assert rig.pending == [talker, silent2, newcomer]
    silent1.connection_lost(None)                     # the evicted one goes: nothing else moves
    assert rig.pending == [talker, silent2, newcomer]
    assert rig.acceptor.connections == {talker, silent2, newcomer}
    assert rig.acceptor._per_address == {HOST_A: 3}


def test_a_newcomer_is_refused_when_every_pending_connection_has_sent_something() -> None:
    """A Logon being read is never pushed out by a newcomer: the newcomer is the one refused."""
    rig = Rig(max_pending_logons=2)
    first, first_tr = rig.open(heard=True)
    second, second_tr = rig.open(heard=True)
    newcomer, newcomer_tr = rig.open()
    assert rig.refusals == ["max_pending_logons"]
    assert newcomer_tr.calls == ["abort"] and first_tr.calls == second_tr.calls == []
    assert newcomer not in rig.acceptor.connections and rig.pending == [first, second]
    newcomer.connection_lost(None)                    # never admitted: counts stay as they are
    assert rig.acceptor._per_address == {HOST_A: 2}
    assert len(rig.acceptor.connections) == 2


def test_the_per_address_bound_evicts_from_that_address_only() -> None:
    rig = Rig(max_pending_logons=100, max_pending_logons_per_address=2)
    other, other_tr = rig.open(HOST_B)                # the oldest, but from elsewhere
    a1, a1_tr = rig.open(HOST_A)
    a2, _ = rig.open(HOST_A)
    a3, a3_tr = rig.open(HOST_A)
    assert rig.refusals == ["evicted_before_logon"]
    assert a1_tr.calls == ["abort"] and other_tr.calls == [] and a3_tr.calls == []
    assert rig.pending == [other, a2, a3]
    assert rig.acceptor._per_address == {HOST_A: 2, HOST_B: 1}


def test_the_per_address_bound_refuses_when_that_address_only_has_talkers() -> None:
    rig = Rig(max_pending_logons=100, max_pending_logons_per_address=2)
    other, other_tr = rig.open(HOST_B)
    rig.open(HOST_A, heard=True)
    rig.open(HOST_A, heard=True)
    a3, a3_tr = rig.open(HOST_A)
    assert rig.refusals == ["max_pending_logons"]
    assert a3_tr.calls == ["abort"] and other_tr.calls == []
    b2, b2_tr = rig.open(HOST_B)                      # another address is not affected
    assert b2_tr.calls == [] and rig.acceptor._per_address == {HOST_A: 2, HOST_B: 2}


def test_a_closed_pending_connection_frees_its_place_and_its_address_count() -> None:
    rig = Rig(max_pending_logons=2, max_pending_logons_per_address=2)
    first, _ = rig.open(heard=True)
    second, _ = rig.open(heard=True)
    first.connection_lost(None)
    assert rig.pending == [second] and rig.acceptor._per_address == {HOST_A: 1}
    second.connection_lost(None)
    assert rig.pending == [] and rig.acceptor._per_address == {}
    rig.open(heard=True)
    rig.open(heard=True)
    assert rig.refusals == []


def test_the_total_bound_refuses_with_its_own_reason() -> None:
    rig = Rig(max_pending_logons=100, max_connections=2)
    rig.acceptor.max_connections = 2                  # as fitted to the descriptor limit
    rig.open(heard=True)
    silent, silent_tr = rig.open()
    rig.open()
    assert rig.refusals == ["evicted_before_logon"] and silent_tr.calls == ["abort"]
    silent.connection_lost(None)
    rig.pending[1].data_received(b"8=")
    _, tr = rig.open()
    assert rig.refusals == ["evicted_before_logon", "max_connections"]
    assert tr.calls == ["abort"]


def test_only_the_oldest_64_pending_are_searched_for_a_silent_one() -> None:
    rig = Rig(max_pending_logons=65)
    for _ in range(64):
        rig.open(heard=True)
    late_silent, late_tr = rig.open()
    _, newcomer_tr = rig.open()
    assert rig.refusals == ["max_pending_logons"]
    assert newcomer_tr.calls == ["abort"] and late_tr.calls == []
    assert late_silent in rig.acceptor.pending


def test_logged_on_sessions_do_not_count_against_the_pending_bound() -> None:
    rig = Rig(max_pending_logons=1)
    conn, tr = rig.open()
    conn.data_received(rig.logon())
    assert conn.session is not None and rig.slot.connection is conn and rig.slot.logons == 1
    assert [m.msg_type for m in replies(tr)] == [b"A"]
    assert any(isinstance(ev, LoggedOn) for slot, ev in rig.events if slot is rig.slot)
    assert rig.pending == [] and rig.acceptor._per_address == {}
    waiting, _ = rig.open()                           # the bound is free for another
    assert rig.refusals == [] and rig.pending == [waiting]
    _, newcomer_tr = rig.open()                       # the next evicts the waiting one only
    assert rig.refusals == ["evicted_before_logon"]
    assert tr.calls == [] and newcomer_tr.calls == []
    assert conn in rig.acceptor.connections


def test_a_newcomer_evicts_one_connection_when_both_bounds_are_reached() -> None:
    """Pending and total bounds reached together (every connection is pending): evicting one
    makes room under both. DEFECT: ``connection_opened`` computes ``crowded`` before evicting,
    so it evicts a second connection for the total bound."""
    rig = Rig(max_pending_logons=3, max_connections=3)
    opened = [rig.open() for _ in range(3)]
    rig.open()
    assert [tr.calls for _, tr in opened] == [["abort"], [], []]
    assert rig.refusals == ["evicted_before_logon"]
    assert len(rig.pending) == 3


def test_a_newcomer_is_admitted_once_an_eviction_made_room_under_both_bounds() -> None:
    """DEFECT (same cause): the only silent connection is evicted for the pending bound, then
    the newcomer is refused for the total bound it no longer exceeds: one connection lost, none
    admitted."""
    rig = Rig(max_pending_logons=3, max_connections=3)
    _, silent_tr = rig.open()
    rig.open(heard=True)
    rig.open(heard=True)
    newcomer, newcomer_tr = rig.open()
    assert silent_tr.calls == ["abort"]
    assert rig.refusals == ["evicted_before_logon"]
    assert newcomer_tr.calls == [] and newcomer in rig.acceptor.pending


def test_a_silent_connection_is_closed_at_the_idle_limit_one_still_sending_at_the_timeout(
) -> None:
    rig = Rig(pre_logon_idle=5.0, logon_timeout=60.0)
    silent, silent_tr = rig.open()
    talker, talker_tr = rig.open(heard=True)
    rig.clock.advance(5.0)
    silent.tick(rig.clock())
    assert silent_tr.calls == []                      # not past the limit yet
    rig.clock.advance(0.1)
    silent.tick(rig.clock())
    talker.tick(rig.clock())
    assert rig.refusals == ["idle_before_logon"] and silent_tr.calls == ["abort"]
    assert talker_tr.calls == []
    rig.clock.advance(60.0)
    talker.tick(rig.clock())
    assert rig.refusals == ["idle_before_logon", "logon_timeout"]
    assert talker_tr.calls == ["abort"]


# -- binding by the first message -----------------------------------------------------------------

def test_a_first_message_that_is_not_a_logon_is_closed_without_a_word() -> None:
    rig = Rig()
    conn, tr = rig.open()
    heartbeat = encode_fields(b"FIX.4.2", b"0", [(49, b"SRC1"), (56, b"DCGW"), (34, 1),
                                                 (52, utc_timestamp(rig.clock()))])
    conn.data_received(heartbeat)
    assert rig.refusals == ["first_message_not_logon"]
    assert tr.writes == [] and tr.calls == ["close"]
    assert conn.session is None and rig.slot.connection is None
    assert conn.close_reason == "first message was not a Logon"


@pytest.mark.parametrize("sender, target, reason", [
    (b"NOSUCH", b"DCGW", "unknown_session"),
    (b"SRC1", b"OTHER", "wrong_target_comp_id")])
def test_a_logon_that_cannot_bind_gets_authentication_failed(sender, target, reason) -> None:
    rig = Rig()
    conn, tr = rig.open()
    conn.data_received(rig.logon(sender, target))
    assert rig.refusals == [reason]
    [logout] = replies(tr)
    assert logout.msg_type == b"5" and logout.get(58) == AUTH_FAILED_TEXT.encode()
    assert logout.header[56] == sender and logout.header[49] == b"DCGW"
    assert tr.calls == ["close"] and conn.session is None and rig.slot.connection is None


def test_an_authenticated_logon_is_told_why_while_every_logon_is_refused() -> None:
    """A weekly reset or a storage fault is named, but only to a peer that holds the key; one
    that fails authentication is counted against its session and learns nothing more."""
    rig = Rig()
    rig.acceptor.refusals["sequence_reset"] = "weekly sequence reset in progress"
    conn, tr = rig.open()
    conn.data_received(rig.logon())
    [logout] = replies(tr)
    assert logout.get(58) == b"weekly sequence reset in progress"
    assert rig.refusals == ["sequence_reset"] and rig.slot.connection is None
    rig.decision = AuthDecision(False, "bad_signature", "")
    conn2, tr2 = rig.open()
    conn2.data_received(rig.logon())
    [logout2] = replies(tr2)
    assert logout2.get(58) == AUTH_FAILED_TEXT.encode()
    assert (rig.slot, AuthFailed("bad_signature")) in rig.events


def test_an_authenticator_that_raises_is_a_failure_not_a_crash(caplog) -> None:
    rig = Rig()
    rig.acceptor.refusals["journal_unwritable"] = "storage fault"

    def broken(logon: RawMessage, now: float) -> AuthDecision:
        raise RuntimeError("key store gone")
    rig.acceptor.authenticator = broken
    conn, tr = rig.open()
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        conn.data_received(rig.logon())
    assert replies(tr)[0].get(58) == AUTH_FAILED_TEXT.encode()
    assert (rig.slot, AuthFailed("internal_error")) in rig.events
    assert "authenticator failed" in caplog.text and "key store gone" in caplog.text


def test_closing_a_bound_connection_frees_its_slot_and_reports_the_reason(caplog) -> None:
    rig = Rig()
    conn, _ = rig.open()
    conn.data_received(rig.logon())
    syncs = rig.slot.store.syncs
    conn.close("session closed")
    conn.connection_lost(None)
    assert rig.slot.connection is None and conn not in rig.acceptor.connections
    assert rig.slot.store.syncs == syncs + 1
    assert rig.events[-1] == (rig.slot, Disconnect("session closed"))
    again, _ = rig.open()                             # the slot binds again
    again.data_received(rig.logon(seq=2))
    assert rig.slot.connection is again and rig.slot.logons == 2 and not again.close_reason
    rig.slot.store.fail = OSError("disk gone")
    with caplog.at_level(logging.ERROR, logger="dcgateway.net"):
        again.connection_lost(ConnectionResetError("reset by peer"))
    assert rig.slot.connection is None               # free even though the sync failed
    assert "could not sync its state on disconnect" in caplog.text
    assert rig.events[-1] == (rig.slot, Disconnect("peer closed"))


# -- the refusal log -------------------------------------------------------------------------------

def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]


def test_refusals_are_logged_once_then_summarised_per_interval(caplog) -> None:
    rig = Rig()
    conn, _ = rig.open()
    with caplog.at_level(logging.WARNING, logger="dcgateway.net"):
        rig.acceptor.refused(conn, "max_pending_logons")
        rig.clock.advance(1)
        rig.acceptor.refused(conn, "evicted_before_logon")
        rig.acceptor.refused(conn, "max_pending_logons")
        rig.clock.advance(REFUSAL_LOG_INTERVAL - 1.5)
        rig.acceptor.refused(conn, "evicted_before_logon")
        assert refusal_lines(caplog) == [
            "refused 1 connection(s) since the last report: max_pending_logons 1"]
        rig.clock.advance(0.5)                        # an interval since the last line
        rig.acceptor.refused(conn, "evicted_before_logon")
    assert refusal_lines(caplog)[1:] == [
        "refused 4 connection(s) since the last report: evicted_before_logon 3, "
        "max_pending_logons 1"]
    assert len(rig.refusals) == 5                     # every one counted for the metric


@pytest_asyncio.fixture
async def loop(loop_errors: list[dict[str, Any]]) -> asyncio.AbstractEventLoop:
    running = asyncio.get_running_loop()
    running.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    return running


@pytest.mark.asyncio
async def test_the_timer_task_logs_a_due_summary_and_closes_silent_connections(loop,
                                                                               caplog) -> None:
    rig = Rig(pre_logon_idle=5.0)
    silent, silent_tr = rig.open()
    talker, talker_tr = rig.open(heard=True)
    caplog.set_level(logging.WARNING, logger="dcgateway.net")
    task = asyncio.create_task(rig.acceptor.run_timers(interval=0))
    try:
        rig.acceptor.refused(talker, "unknown_session")
        rig.clock.advance(1)
        rig.acceptor.refused(talker, "unknown_session")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(refusal_lines(caplog)) == 1 and silent_tr.calls == []
        rig.clock.advance(5)                          # past the idle limit, not the interval
        for _ in range(3):
            await asyncio.sleep(0)
        assert silent_tr.calls == ["abort"] and talker_tr.calls == []
        assert len(refusal_lines(caplog)) == 1
        rig.clock.advance(REFUSAL_LOG_INTERVAL)
        for _ in range(3):
            await asyncio.sleep(0)
        assert refusal_lines(caplog)[1:] == [
            "refused 2 connection(s) since the last report: unknown_session 1, "
            "idle_before_logon 1"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_timer_task_wakes_when_a_heartbeat_is_due() -> None:
    """A Heartbeat goes out at HeartBtInt after our last message, not up to the full pass's
    interval later: the task sleeps until the first session's timer is due (at most until the
    next full pass, at least MIN_TIMER_S) and then ticks only the sessions that are due."""
    from dcgateway.net.acceptor import MIN_TIMER_S
    rig = Rig()
    t0 = rig.clock()
    assert rig.acceptor.due(t0, t0 + 0.5) == ([], 0.5)             # nothing logged on
    conn, tr = rig.open()
    conn.data_received(rig.logon())                                   # HeartBtInt 30
    other, other_tr = rig.open()                                      # waiting for its Logon
    assert conn.session is not None and other.session is None
    rig.clock.advance(29.8)
    now = rig.clock()
    ready, wait = rig.acceptor.due(now, now + 0.5)
    assert ready == [] and wait == pytest.approx(0.2)
    rig.clock.advance(0.2)
    now = rig.clock()
    ready, wait = rig.acceptor.due(now, now + 0.5)
    assert ready == [conn] and wait == 0.5                            # due now: ticked, not other
    for c in ready:
        c.tick(now)
    assert [m.msg_type for m in replies(tr)][-1] == b"0"              # the Heartbeat, on time
    ready, wait = rig.acceptor.due(now, now + 0.5)
    assert ready == [] and wait == 0.5
    ready, wait = rig.acceptor.due(now, now + 0.01)                 # never past the full pass
    assert ready == [] and wait == pytest.approx(0.01) and wait < MIN_TIMER_S
    assert rig.acceptor.due(now, now) == ([], 0)                      # as the tests drive it
