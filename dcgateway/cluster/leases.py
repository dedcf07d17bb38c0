"""Leases: which node serves what, in a JetStream key-value bucket whose entries expire.

How a lease works (why it cannot be held by two nodes at once):

* The leases bucket is created with ``max_age = lease_s``: the server removes an entry
  ``lease_s`` after it was last written. Acquiring is ``create`` (succeeds only when the key is
  absent), renewing is ``update`` compare-and-set on the revision the holder wrote last; both
  are decided by the bucket's stream leader, so exactly one node wins a free lease, and a node
  whose lease was taken over learns it at its next renewal (wrong revision).
* The holder counts its lease valid until ``t + lease_s - margin`` on its own monotonic clock,
  where ``t`` is when it *sent* the write that the server acknowledged. The server wrote the
  entry after ``t``, so it cannot expire (and be taken by another node) before ``t + lease_s``:
  the holder stops believing in its lease before anybody else can hold it. A node paused by
  SIGSTOP (or a long GC, or a VM freeze) wakes up with its monotonic clock past that bound and
  treats the lease as lost at once, before anything else it does; :meth:`LeaseManager.holds`
  is the check the send path makes.
* Losing a lease (taken over, expired locally, not renewable in time) calls ``on_lost`` at once,
  from a timer armed at the validity bound, so a node cut off from NATS stops serving within
  ``lease_s`` even if no renewal ever answers.
* Every node also writes its presence (``node.<id>``: address, metrics, start) every renewal;
  the same expiry makes a stopped node disappear, which ``cluster status`` shows.

The leases are the *first* fence; the replicated journal's expected-last-sequence check
(:mod:`.replog`) is the second, which holds even if a node's clock misbehaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger("dcgateway.cluster")

#: The lease that makes a node the one serving the gateway's sessions (see docs/cluster.md).
PRIMARY = "primary"


@dataclass
class Held:
    key: str
    revision: int
    valid_until: float                 # monotonic
    since: float                       # monotonic, when acquired
    term: str = ""                     # this acquisition's id
    timer: asyncio.TimerHandle | None = None


def lease_key(name: str) -> str:
    return f"lease.{name}"


def node_key(node_id: str) -> str:
    return f"node.{node_id}"


class LeaseManager:
    """This node's leases in the bucket ``kv`` (module docstring). ``want`` are the leases it
    takes whenever they are free; ``on_acquired(name)`` and ``on_lost(name)`` tell the node.
    Runs on the node's event loop (:meth:`run`, owned by its TaskGroup)."""

    def __init__(self, kv: KeyValue, node_id: str, lease_s: float, *,
                 info: dict[str, Any] | None = None, want: Iterable[str] = (),
                 on_acquired: Callable[[str], None] | None = None,
                 on_lost: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 renew_every: float | None = None) -> None:
        self.kv = kv
        self.node_id = node_id
        self.lease_s = lease_s
        self.margin = min(0.5, 0.1 * lease_s)
        self.renew_every = renew_every or min(1.0, lease_s / 4)
        self.info = dict(info or {})
        self.want = list(want)
        self.on_acquired = on_acquired or (lambda name: None)
        self.on_lost = on_lost or (lambda name: None)
        self.clock = clock
        self.held: dict[str, Held] = {}
        self.started = time.time()
        self.renewals = 0
        self.renew_failures = 0
        #: lease -> monotonic time before which :meth:`step` does not take it (a node whose
        #: takeover failed lets another node try first: :meth:`hold_off`)
        self.not_before: dict[str, float] = {}

    # -- the synchronous view (the send path) ---------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this node may act on lease ``name`` now: held and within its local bound.
        Cheap (a dict lookup and a clock read): made before every write to a client."""
        h = self.held.get(name)
        if h is None:
            return False
        if self.clock() < h.valid_until:
            return True
        self._lose(name, "its lease ran out before it could be renewed")
        return False

    def _value(self, name: str, term: str | None = None) -> bytes:
        """The lease's entry: who, where, and the *term* (one per acquisition: renewals keep
        it, a takeover changes it)."""
        h = self.held.get(name)
        return json.dumps({"node": self.node_id, "lease": name, "renewed": time.time(),
                           "term": term or (h.term if h is not None else ""),
                           **self.info}).encode()

    # -- acquire, renew, release ------------------------------------------------------------

    async def try_acquire(self, name: str) -> bool:
        """Take lease ``name`` if it is free (nobody holds it, or its holder stopped renewing
        ``lease_s`` ago)."""
        if name in self.held:
            return self.holds(name)
        t = self.clock()
        term = f"{self.node_id}.{secrets.token_hex(4)}"
        try:
            rev = await self.kv.create(lease_key(name), self._value(name, term))
        except KeyWrongLastSequenceError:
            return False
        self._set(name, rev, t, term)
        log.warning("node %s acquired lease %s", self.node_id, name)
        self.on_acquired(name)
        return True

    def _set(self, name: str, rev: int, sent_at: float, term: str = "") -> None:
        h = self.held.get(name)
        until = sent_at + self.lease_s - self.margin
        if h is None:
            h = self.held[name] = Held(lease_key(name), rev, until, sent_at, term)
        else:
            h.revision, h.valid_until = rev, until
        if h.timer is not None:
            h.timer.cancel()
        h.timer = asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + (until - self.clock()), self._expire, name)

    def _expire(self, name: str) -> None:
        h = self.held.get(name)
        if h is not None and self.clock() >= h.valid_until:
            self._lose(name, "its lease was not renewed in time")

    def _lose(self, name: str, why: str) -> None:
        h = self.held.pop(name, None)
        if h is None:
            return
        if h.timer is not None:
            h.timer.cancel()
        log.error("node %s lost lease %s: %s; it stops serving at once", self.node_id, name, why)
        self.on_lost(name)

    async def renew(self) -> None:
        """One renewal of every held lease (compare-and-set on the revision last written)."""
        for name in list(self.held):
            h = self.held.get(name)
            if h is None or not self.holds(name):
                continue
            t = self.clock()
            try:
                rev = await self.kv.update(h.key, self._value(name), last=h.revision)
            except KeyWrongLastSequenceError:
                self._lose(name, "another node holds it now")
                continue
            except Exception as exc:       # NATS unreachable: the local bound decides
                self.renew_failures += 1
                log.warning("renewing lease %s failed: %s", name, exc)
                continue
            if name in self.held:
                self._set(name, rev, t)
                self.renewals += 1

    async def release(self, name: str) -> None:
        """Give lease ``name`` up now (a graceful stop), so another node takes it without
        waiting ``lease_s``."""
        h = self.held.pop(name, None)
        if h is None:
            return
        if h.timer is not None:
            h.timer.cancel()
        try:
            await self.kv.delete(h.key, last=h.revision)
        except Exception as exc:
            log.warning("releasing lease %s: %s (it expires in %gs)", name, exc, self.lease_s)

    def hold_off(self, name: str, seconds: float) -> None:
        """Do not take lease ``name`` for ``seconds`` (it may still be released meanwhile)."""
        self.not_before[name] = self.clock() + seconds

    def holding_off(self, name: str) -> float:
        """Seconds left before this node takes lease ``name`` again (0: it would now)."""
        return max(0.0, self.not_before.get(name, 0.0) - self.clock())

    async def announce(self) -> None:
        """This node's presence entry (expires like a lease when the node stops)."""
        await self.kv.put(node_key(self.node_id), json.dumps(
            {"node": self.node_id, "started": self.started, "renewed": time.time(),
             "leases": sorted(self.held), **self.info}).encode())

    async def holder(self, name: str) -> dict[str, Any] | None:
        """Who holds lease ``name`` now, as its entry says (None: free)."""
        try:
            e = await self.kv.get(lease_key(name))
        except KeyNotFoundError:
            return None
        if e.value is None:
            return None
        got: dict[str, Any] = json.loads(e.value)
        return got

    async def presence(self, node_id: str) -> dict[str, Any] | None:
        """Node ``node_id``'s presence entry (None: not alive, or never started)."""
        try:
            e = await self.kv.get(node_key(node_id))
        except KeyNotFoundError:
            return None
        if not e.value:
            return None
        got: dict[str, Any] = json.loads(e.value)
        return got

    async def step(self) -> None:
        """Renew, announce, and take any wanted lease that is free."""
        await self.renew()
        try:
            await self.announce()
        except Exception as exc:
            log.warning("announcing node %s: %s", self.node_id, exc)
        for name in self.want:
            if name not in self.held and not self.holding_off(name):
                try:
                    await self.try_acquire(name)
                except Exception as exc:
                    log.warning("acquiring lease %s: %s", name, exc)

    async def run(self) -> None:
        """Every ``renew_every`` seconds, :meth:`step` (bounded by the lease: a step that
        takes longer than the lease is abandoned, and the local bound takes over)."""
        while True:
            try:
                async with asyncio.timeout(self.lease_s):   # not wait_for: see replog.run
                    await self.step()
            except TimeoutError:
                log.warning("lease step took longer than %gs", self.lease_s)
            await asyncio.sleep(self.renew_every)
