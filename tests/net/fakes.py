"""Fakes for the asyncio shells' unit tests: a recording transport, a settable clock, an owner
standing in for the Acceptor, a session, a store and a drop copy outbox."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dcgateway.fix.codec import RawMessage
from dcgateway.fix.session_types import SessionConfig
from dcgateway.net.connection import FixConnection, SessionSlot

T0 = 1_750_000_000.0
PEER = ("192.0.2.1", 40001)


class FakeClock:
    """A clock the test sets: ``clock()`` is the time, ``advance(s)`` moves it."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeTransport:
    """Records what the protocol does to its transport: ``writes``, and ``calls`` in order
    (pause_reading, resume_reading, close, abort). ``on_write`` (optional) runs after each write,
    as a real transport calls ``pause_writing`` from inside ``write()``."""

    def __init__(self, peer: Any = PEER, **extra: Any) -> None:
        self.peer, self.extra = peer, extra
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.limits: tuple[int, int] | None = None
        self.closing = False
        self.on_write: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else self.extra.get(name, default)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))
        if self.on_write is not None:
            self.on_write()

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def close(self, how: str = "close") -> None:
        self.closing = True
        self.calls.append(how)

    def abort(self) -> None:
        self.close("abort")

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)


class FakeStore:
    syncs = 0

    def sync(self) -> None:
        self.syncs += 1


class FakeSession:
    """What the shell uses of a FixSession; ``fail`` is raised from ``receive_data``."""

    def __init__(self) -> None:
        self.closed = False
        self.first: list[RawMessage] = []
        self.received: list[bytes] = []
        self.logouts: list[str] = []
        self.out = b""
        self.fail: Exception | None = None
        self.resend_backlog = 0               # slices of a ResendRequest still to answer
        self.resend_waiting = False           # the store cannot serve them yet
        self.perf: FakeClock | None = None    # advanced by ``slice_cost`` per slice answered
        self.slice_cost = 0.0
        self.logout_seq = 0                   # the seq of the Logout the session sent (0: none)
        self.timers: list[float] = []         # on_timer calls
        self.excused: list[float] = []        # excuse_silence calls

    def continue_resend(self, now: float) -> None:
        if self.resend_backlog and not self.resend_waiting:
            self.resend_backlog -= 1
            self.out += b"SLICE%d" % self.resend_backlog
            if self.perf is not None:
                self.perf.advance(self.slice_cost)

    def receive_messages(self, items: list[RawMessage], now: float) -> None:
        self.first.extend(items)
        self.out += b"LOGON-REPLY"

    def receive_data(self, data: bytes, now: float) -> None:
        if self.fail is not None:
            raise self.fail
        self.received.append(data)

    def events(self) -> list[Any]:
        return []

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        return out

    def items_to_send(self) -> list[Any]:
        return []

    def logout(self, text: str, now: float) -> None:
        self.logouts.append(text)
        self.out += b"LOGOUT"

    def on_timer(self, now: float) -> None:
        self.timers.append(now)

    def excuse_silence(self, now: float) -> None:
        self.excused.append(now)


class FakeOwner:
    """The ConnectionOwner seam, recording every call; ``bind`` binds to ``self.slot`` with a
    FakeSession unless ``refuse`` is set."""

    def __init__(self, *, max_inbound_rate: int = 0, pre_logon_idle: float = 5.0,
                 logon_timeout: float = 60.0) -> None:
        self.settings = SimpleNamespace(max_inbound_rate=max_inbound_rate,
                                        pre_logon_idle=pre_logon_idle)
        self.write_buffer_limits = (1 << 20, 256 << 10)
        self.logon_timeout = logon_timeout
        self.opened: list[FixConnection] = []
        self.closed: list[tuple[FixConnection, Exception | None]] = []
        self.refusals: list[str] = []
        self.bound: list[RawMessage] = []
        self.refuse = False
        self.fail_on_close: Exception | None = None
        self.session = FakeSession()
        self.dispatch = self.on_event = lambda *args: None
        self.slot = SessionSlot("SRC1", "source", SessionConfig(b"FIX.4.2", b"DCGW", b"SRC1"),
                                FakeStore())

    def connection_opened(self, conn: FixConnection) -> None:
        self.opened.append(conn)

    def connection_closed(self, conn: FixConnection, exc: Exception | None) -> None:
        self.closed.append((conn, exc))
        if self.fail_on_close is not None:
            raise self.fail_on_close

    def refused(self, conn: FixConnection, reason: str) -> None:
        self.refusals.append(reason)

    def bind(self, conn: FixConnection, first: RawMessage, now: float) -> Any:
        self.bound.append(first)
        if self.refuse:
            return None
        conn.slot = self.slot
        self.slot.connection = conn
        return self.session


class FakeOutbox:
    """What ``feed()`` uses of a fanout.Outbox: each take hands out the next chunk of
    ``queue`` and costs ``cost`` seconds of the (fake) perf_counter."""

    def __init__(self, queue: list[bytes], perf: FakeClock | None = None) -> None:
        self.journal = SimpleNamespace(durable_lsn=7)
        self.queue = list(queue)
        self.takes: list[tuple[int, float, int]] = []
        self.spill_from: int | None = None
        self.pushback = False
        self.perf, self.cost = perf, 0.0
        self.fail: Exception | None = None

    def take(self, durable: int, now: float, budget: int) -> list[bytes]:
        self.takes.append((durable, now, budget))
        if self.perf is not None:
            self.perf.advance(self.cost)
        if self.fail is not None:
            raise self.fail
        return [self.queue.pop(0)] if self.queue else []

    def ready(self, durable: int) -> bool:
        return bool(self.queue)


