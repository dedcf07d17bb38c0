"""Leases: which node serves what, in a JetStream key-value bucket.

How a lease works (why it cannot be held by two nodes at once, and why a NATS server's loss
does not move it):

* Acquiring a free lease is ``create`` (succeeds only when the key is absent); renewing is
  ``update`` compare-and-set on the revision the holder wrote last; taking over the lease of a
  holder that stopped renewing is ``update`` compare-and-set on the revision the taker saw. All
  are decided by the bucket's stream leader, so exactly one node wins, and a node whose lease
  was taken learns it at its next renewal that the bucket answers (wrong revision: lost, at
  once).
* **A lease is free when its entry has not changed for ``lease_s``, as observed by the node
  that takes it**: a standby reads the entry from the bucket's leader (not a replica: a
  leaderless bucket does not answer) every ``renew_every`` seconds; only when it has seen the
  same revision for ``lease_s`` of its own monotonic time, every read in between answered, does
  it take the lease by compare-and-set on that revision. A read that fails or times out
  restarts the observation: while the bucket has no leader (a NATS server died and Raft elects
  another, a few seconds) nobody judges the lease free, and once the leader is back the holder
  renews (within ``lease_s / 2``) long before any standby has observed ``lease_s`` again. The
  bucket's ``max_age`` is only a backstop (:data:`BACKSTOP_LEASES` × ``lease_s``), so a
  leaderless period does not delete a live holder's entry.
* The holder counts its lease valid until ``t + lease_s - margin`` on its own monotonic clock,
  ``t`` being when it *sent* the last renewal attempt that either succeeded or **was not
  answered** (timeout, no responders, no stream response: the bucket cannot decide anything
  then, so nobody can take the lease through it either). So the holder keeps serving through a
  leaderless period, and renews on its revision when the bucket answers again. Safety while it
  does rests on the journal fence (:mod:`.replog`): no copy, source acknowledgement or
  session-level message leaves a node before its journal record is acknowledged, and a new
  writer's takeover record makes every later append of the old writer fail. A node cut off from
  NATS entirely therefore sends nothing that matters; it gives the lease up anyway (its
  clients' connections cut, so they go to a node that can serve) after
  :data:`UNANSWERED_LEASES` × ``lease_s`` without any answer from the bucket.
* A node paused by SIGSTOP (or a long GC, or a VM freeze) wakes up with its monotonic clock
  past ``t + lease_s - margin`` (no attempt was sent while it was paused) and treats the lease
  as lost at once, before anything else it does; :meth:`LeaseManager.holds` is the check the
  send path makes, and a timer armed at the bound calls ``on_lost`` at once.
* If the holder's write landed but its acknowledgement was lost (a leader died meanwhile), the
  entry has a revision the holder does not know; the next renewal's wrong-revision answer is
  then checked against the entry: still this acquisition's term, the holder adopts the
  revision; anything else, it lost.
* Every node also writes its presence (``node.<id>``: address, metrics, start, state) every
  renewal; ``cluster status`` counts a node alive while its presence was renewed recently.

The leases are the *first* fence; the replicated journal's expected-last-sequence check
(:mod:`.replog`) is the second, which holds even if a node's clock misbehaves, and the only one
while the leases bucket does not answer the holder.
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

from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from .kvmirror import open_bucket

log = logging.getLogger("dcgateway.cluster")

#: The lease that makes a node the one serving the gateway's sessions (see docs/cluster.md).
PRIMARY = "primary"
#: The leases bucket's ``max_age``, in leases: only a backstop (an entry nobody renews nor takes
#: goes eventually); it must outlast any leaderless period of the bucket by far.
BACKSTOP_LEASES = 12
#: A holder whose renewals get no answer at all for this many leases gives the lease up (its
#: clients go to a node that can serve); until then it keeps serving (module docstring).
UNANSWERED_LEASES = 6
#: ``cluster status`` counts a node alive while its presence was renewed within this many leases.
ALIVE_LEASES = 2


@dataclass
class Held:
    key: str
    revision: int
    valid_until: float                 # monotonic
    since: float                       # monotonic, when acquired
    term: str = ""                     # this acquisition's id
    timer: asyncio.TimerHandle | None = None
    answered: float = 0.0              # monotonic, when the last answered renewal was sent


@dataclass
class Seen:
    """A standby's observation of a lease entry: this revision, unchanged since ``since``
    (monotonic, when the first read that returned it came back), every read answered."""
    revision: int
    since: float


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
        #: every request to the bucket is bounded by this (an unanswered one is retried soon)
        self.request_timeout = max(0.2, min(lease_s / 4, 2.0))
        self.unanswered_limit = UNANSWERED_LEASES * lease_s
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
        #: lease -> what this node observed of another holder's entry (:meth:`try_acquire`)
        self.seen: dict[str, Seen] = {}

    # -- the synchronous view (the send path) ---------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this node may act on lease ``name`` now: held and within its local bound.
        Cheap (a dict lookup and a clock read): made before every write to a client."""
        h = self.held.get(name)
        if h is None:
            return False
        if self.clock() < h.valid_until:
            return True
        self._lose(name, self._why_expired(h))
        return False

    def _why_expired(self, h: Held) -> str:
        if self.clock() - h.answered >= self.unanswered_limit - self.margin:
            return (f"the leases bucket did not answer for {self.unanswered_limit:g}s "
                    "(cut off from NATS)")
        return "its lease ran out before it could be renewed"

    def _value(self, name: str, term: str | None = None) -> bytes:
        """The lease's entry: who, where, and the *term* (one per acquisition: renewals keep
        it, a takeover changes it)."""
        h = self.held.get(name)
        return json.dumps({"node": self.node_id, "lease": name, "renewed": time.time(),
                           "term": term or (h.term if h is not None else ""),
                           **self.info}).encode()

    # -- acquire, renew, release ------------------------------------------------------------

    async def _read(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """Lease ``name``'s entry as the bucket's *leader* has it: (revision, value), None when
        absent or deleted. Not a direct get: a replica answers those even while the bucket has
        no leader, and a standby must not count a leaderless period as the holder's silence.
        Raises when the leader does not answer in time."""
        js, stream, pre = self.kv._js, self.kv._stream, self.kv._pre   # nats-py's KeyValue
        try:
            async with asyncio.timeout(self.request_timeout):
                msg = await js.get_msg(stream, subject=f"{pre}{lease_key(name)}", direct=False)
        except (NotFoundError, KeyNotFoundError):
            return None
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
            return None
        doc: dict[str, Any] = json.loads(msg.data)
        return int(msg.seq or 0), doc

    async def try_acquire(self, name: str) -> bool:
        """Take lease ``name`` if it is free: nobody holds it, or this node observed its entry
        unchanged for ``lease_s``, every read answered (module docstring); then by
        compare-and-set on the revision observed."""
        if name in self.held:
            return self.holds(name)
        try:
            entry = await self._read(name)
        except Exception:
            self.seen.pop(name, None)          # the observation starts again
            raise
        now = self.clock()
        last: int | None = None
        if entry is not None:
            seen = self.seen.get(name)
            if seen is None or seen.revision != entry[0]:
                self.seen[name] = Seen(entry[0], now)
                return False
            if now - seen.since < self.lease_s:
                return False
            last = entry[0]
            log.warning("lease %s of node %s unchanged for %.1fs: node %s takes it", name,
                        entry[1].get("node"), now - seen.since, self.node_id)
        self.seen.pop(name, None)
        t = self.clock()
        term = f"{self.node_id}.{secrets.token_hex(4)}"
        try:
            async with asyncio.timeout(self.request_timeout):
                if last is None:
                    rev = await self.kv.create(lease_key(name), self._value(name, term))
                else:
                    rev = await self.kv.update(lease_key(name), self._value(name, term),
                                               last=last)
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
        h.answered = sent_at
        self._arm(name, h)

    def _unanswered(self, name: str, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` got no answer: the bucket could not decide anything,
        so the lease holds as long as after a renewal, bounded by the last answer."""
        h = self.held.get(name)
        if h is None:
            return
        h.valid_until = max(h.valid_until, min(sent_at + self.lease_s - self.margin,
                                               h.answered + self.unanswered_limit))
        self._arm(name, h)

    def _arm(self, name: str, h: Held) -> None:
        until = h.valid_until
        if h.timer is not None:
            h.timer.cancel()
        h.timer = asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + (until - self.clock()), self._expire, name)

    def _expire(self, name: str) -> None:
        h = self.held.get(name)
        if h is not None and self.clock() >= h.valid_until:
            self._lose(name, self._why_expired(h))

    def _lose(self, name: str, why: str) -> None:
        h = self.held.pop(name, None)
        if h is None:
            return
        if h.timer is not None:
            h.timer.cancel()
        log.error("node %s lost lease %s: %s; it stops serving at once", self.node_id, name, why)
        self.on_lost(name)

    async def renew(self) -> bool:
        """One renewal of every held lease (compare-and-set on the revision last written);
        whether the bucket answered every one."""
        answered = True
        for name in list(self.held):
            h = self.held.get(name)
            if h is None or not self.holds(name):
                continue
            t = self.clock()
            try:
                async with asyncio.timeout(self.request_timeout):
                    rev = await self.kv.update(h.key, self._value(name), last=h.revision)
            except KeyWrongLastSequenceError:
                await self._wrong_revision(name, h)
                continue
            except Exception as exc:       # no answer: the bucket decided nothing
                answered = False
                self.renew_failures += 1
                log.warning("renewing lease %s: no answer from the leases bucket (%s); "
                            "still serving", name, str(exc) or type(exc).__name__)
                self._unanswered(name, t)
                continue
            if name in self.held:
                self._set(name, rev, t)
                self.renewals += 1
        return answered

    async def _wrong_revision(self, name: str, h: Held) -> None:
        """The entry is not at the revision this node wrote last: another node took it, or
        this node's own write landed but its answer was lost (then the entry carries this
        acquisition's term, and the node adopts its revision)."""
        try:
            entry = await self._read(name)
        except Exception:
            entry = None
        if entry is not None and h.term and entry[1].get("term") == h.term \
                and entry[1].get("node") == self.node_id and name in self.held:
            log.warning("lease %s: adopting revision %d (this node's own write)", name,
                        entry[0])
            h.revision = entry[0]
            return
        self._lose(name, "another node holds it now")

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
        """This node's presence entry, renewed every step: ``cluster status`` counts the node
        alive while it was renewed within :data:`ALIVE_LEASES` leases (the bucket itself keeps
        an entry :data:`BACKSTOP_LEASES` leases)."""
        async with asyncio.timeout(self.request_timeout):
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
        """Renew, announce, and take any wanted lease that is free (no announcement while
        the bucket does not answer renewals: the next renewal comes sooner)."""
        if not await self.renew():
            return
        try:
            await self.announce()
        except Exception as exc:
            log.warning("announcing node %s: %s", self.node_id, str(exc) or type(exc).__name__)
        for name in self.want:
            if name not in self.held and not self.holding_off(name):
                try:
                    await self.try_acquire(name)
                except Exception as exc:
                    log.warning("acquiring lease %s: %s", name, str(exc) or type(exc).__name__)

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


async def open_leases(js: Any, name: str, replicas: int, lease_s: float) -> KeyValue:
    """The leases bucket ``name``: created with ``max_age`` :data:`BACKSTOP_LEASES` ×
    ``lease_s``; a bucket made by an older version (``max_age = lease_s``, which deletes a live
    holder's entry as soon as a leaderless period ends) has its ``max_age`` raised."""
    backstop = BACKSTOP_LEASES * lease_s
    kv = await open_bucket(js, name, replicas, ttl=backstop)
    try:
        info = await js.stream_info(f"KV_{name}")
        if info.config.max_age is not None and 0 < info.config.max_age < backstop:
            cfg: api.StreamConfig = info.config
            cfg.max_age = backstop
            await js.update_stream(cfg)
            log.warning("leases bucket %s: max_age raised to %gs", name, backstop)
    except Exception as exc:
        log.warning("leases bucket %s: cannot check its max_age (%s)", name, exc)
    return kv
