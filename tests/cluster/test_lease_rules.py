"""The lease rules of :mod:`dcgateway.cluster.leases` against a bucket that answers, or does
not, at the test's command, on a clock the test moves (no NATS server, no waiting):

* a holder whose renewals get no answer (a leaderless bucket) keeps its lease, and renews on
  its revision once the bucket answers; after ``UNANSWERED_LEASES`` leases without any answer it
  gives the lease up;
* a holder that made no attempt for ``lease_s`` (paused) loses it at once; a wrong revision
  loses it at once, unless the entry is its own write whose answer was lost;
* a standby takes a lease only after observing the same revision for ``lease_s`` with every
  read answered (a failed read, or a new revision, starts the observation again), and then by
  compare-and-set on that revision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from nats.errors import NoRespondersError
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from dcgateway.cluster.leases import PRIMARY, UNANSWERED_LEASES, LeaseManager, lease_key

pytestmark = pytest.mark.asyncio
LEASE_S = 2.0


@dataclass
class Raw:
    seq: int
    data: bytes
    headers: dict[str, str] | None = None


class FakeBucket:
    """A key-value bucket with revisions; ``down`` makes every request fail unanswered."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes]] = {}
        self.rev = 0
        self.down = False
        self.on_read: Any = None             # called after a read (a write that races it)
        self._js = self
        self._stream = "KV_t_leases"
        self._pre = "$KV.t_leases."

    def _check(self) -> None:
        if self.down:
            raise NoRespondersError

    def _write(self, key: str, value: bytes) -> int:
        self.rev += 1
        self.entries[key] = (self.rev, value)
        return self.rev

    async def create(self, key: str, value: bytes) -> int:
        self._check()
        if key in self.entries:
            raise KeyWrongLastSequenceError(description="exists")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        self._check()
        if self.entries.get(key, (0, b""))[0] != last:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._write(key, value)

    async def put(self, key: str, value: bytes) -> int:
        self._check()
        return self._write(key, value)

    async def get_msg(self, stream: str, subject: str, direct: bool) -> Raw:
        self._check()
        assert not direct, "a lease is read from the bucket's leader"
        key = subject[len(self._pre):]
        if key not in self.entries:
            raise NotFoundError
        rev, value = self.entries[key]
        if self.on_read is not None:
            self.on_read()
        return Raw(rev, value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(kv: FakeBucket, node: str, clock: Clock, lost: list[str]) -> LeaseManager:
    return LeaseManager(kv, node, LEASE_S, want=[PRIMARY], clock=clock,  # type: ignore[arg-type]
                        on_lost=lambda name: lost.append(name))


async def test_a_holder_keeps_its_lease_while_the_bucket_does_not_answer() -> None:
    kv, clock, lost = FakeBucket(), Clock(), []
    m = manager(kv, "n1", clock, lost)
    assert await m.try_acquire(PRIMARY)
    kv.down = True
    for _ in range(int(3 * LEASE_S / m.renew_every)):     # three leases without a leader
        clock.now += m.renew_every
        assert not await m.renew()
        assert m.holds(PRIMARY)
    kv.down = False
    clock.now += m.renew_every
    assert await m.renew() and m.holds(PRIMARY) and not lost
    assert kv.entries[lease_key(PRIMARY)][0] == m.held[PRIMARY].revision


async def test_a_holder_gives_up_after_unanswered_leases() -> None:
    kv, clock, lost = FakeBucket(), Clock(), []
    m = manager(kv, "n1", clock, lost)
    assert await m.try_acquire(PRIMARY)
    kv.down = True
    while m.holds(PRIMARY):
        clock.now += m.renew_every
        await m.renew()
        assert clock.now < 1000 + UNANSWERED_LEASES * LEASE_S + 1
    assert lost == [PRIMARY]
    assert clock.now >= 1000 + UNANSWERED_LEASES * LEASE_S - LEASE_S


async def test_a_paused_holder_loses_its_lease_at_once() -> None:
    kv, clock, lost = FakeBucket(), Clock(), []
    m = manager(kv, "n1", clock, lost)
    assert await m.try_acquire(PRIMARY)
    kv.down = True
    clock.now += m.renew_every
    await m.renew()                    # unanswered: still held
    clock.now += LEASE_S               # no attempt for a whole lease (SIGSTOP)
    assert not m.holds(PRIMARY) and lost == [PRIMARY]


async def test_a_wrong_revision_loses_at_once_unless_the_write_was_its_own() -> None:
    kv, clock, lost = FakeBucket(), Clock(), []
    m = manager(kv, "n1", clock, lost)
    assert await m.try_acquire(PRIMARY)
    key = lease_key(PRIMARY)
    # its own renewal landed, its answer was lost: the entry is ahead, with its term
    kv._write(key, kv.entries[key][1])
    clock.now += m.renew_every
    await m.renew()
    assert m.holds(PRIMARY) and m.held[PRIMARY].revision == kv.entries[key][0]
    clock.now += m.renew_every
    await m.renew()
    assert m.holds(PRIMARY) and not lost
    # another node's write: lost at the next renewal
    kv._write(key, json.dumps({"node": "n2", "term": "n2.x"}).encode())
    clock.now += m.renew_every
    await m.renew()
    assert not m.holds(PRIMARY) and lost == [PRIMARY]


async def test_a_standby_takes_a_lease_only_after_observing_it_unchanged() -> None:
    kv, clock, lost = FakeBucket(), Clock(), []
    holder = manager(kv, "n1", clock, lost)
    standby = manager(kv, "n2", clock, [])
    assert await holder.try_acquire(PRIMARY)

    async def tick(*, renew: bool) -> bool:
        clock.now += standby.renew_every
        if renew:
            await holder.renew()
        return await standby.try_acquire(PRIMARY)

    for _ in range(12):                      # a renewing holder: never free
        assert not await tick(renew=True)
    # the holder stops; the bucket stops answering for a while: the observation restarts
    assert not await tick(renew=False)
    kv.down = True
    for _ in range(10):
        with pytest.raises(NoRespondersError):
            await tick(renew=False)
    kv.down = False
    steps = 0
    while not await tick(renew=False):
        steps += 1
        assert steps < 20
    assert steps * standby.renew_every >= LEASE_S - standby.renew_every
    assert standby.held[PRIMARY].term.startswith("n2.")
    assert json.loads(kv.entries[lease_key(PRIMARY)][1])["node"] == "n2"
    # the old holder, answered at last: wrong revision, not its term: lost
    clock.now += holder.renew_every
    await holder.renew()
    assert lost == [PRIMARY]


async def test_a_standby_does_not_take_a_lease_renewed_after_its_observation() -> None:
    """The holder's renewal lands between the standby's last read and its compare-and-set."""
    kv, clock, lost = FakeBucket(), Clock(), []
    holder = manager(kv, "n1", clock, lost)
    standby = manager(kv, "n2", clock, [])
    assert await holder.try_acquire(PRIMARY)
    assert not await standby.try_acquire(PRIMARY)
    clock.now += LEASE_S + 0.1
    key = lease_key(PRIMARY)
    kv.on_read = lambda: kv._write(key, kv.entries[key][1])
    assert not await standby.try_acquire(PRIMARY)
    assert PRIMARY not in standby.held and not standby.seen
    assert json.loads(kv.entries[key][1])["node"] == "n1"
