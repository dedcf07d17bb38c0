"""A local mirror of the cluster's key-value buckets, with blocking writes: the state store's
calls (:mod:`dcgateway.state.base`) are synchronous, because the command line, the portal's
worker threads and the gateway's Logon path call them as plain functions, while NATS is spoken
asynchronously.

Why a mirror in its own thread: reads must stay as cheap as the file store's ``stat`` (the
gateway looks at key pairs and port closures at every Logon and at the groups' signature every
second), so they read a dictionary kept current by one watcher per bucket, which NATS pushes
every change to; a change made on any node reaches every mirror within milliseconds. The
watchers and the writes run on an event loop owned by one daemon thread with its own NATS
connection, so a blocking write from the gateway's loop thread (a port closure, rare) or from
the CLI never needs the caller's loop. Writes are compare-and-set on the key's revision where
the caller read-modify-writes (:meth:`KvMirror.fetch` then :meth:`KvMirror.update`), so two
writers never lose each other's change. Every wait is bounded (``timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from ..config.cluster import ClusterSettings
from ..errors import DcGatewayError
from ..runtime.process import cancel_and_wait
from .connect import CONSUMER_ATTEMPT_S, Names, connect, nats_error_text, new_consumer

log = logging.getLogger("dcgateway.cluster")

_T = TypeVar("_T")
#: (value, revision) of a key
Versioned = tuple[bytes, int]


class ClusterStateError(DcGatewayError):
    """The cluster's key-value store cannot be reached or refused a change."""


class Conflict(ClusterStateError):
    """A compare-and-set lost: the key changed since it was read."""


async def open_bucket(js: Any, name: str, replicas: int, ttl: float | None = None,
                      history: int = 1) -> KeyValue:
    """The bucket ``name``, created with ``replicas`` copies when it does not exist yet."""
    try:
        kv: KeyValue = await js.key_value(name)
        return kv
    except (NotFoundError, KeyNotFoundError):
        pass
    try:
        created: KeyValue = await js.create_key_value(bucket=name, replicas=replicas, ttl=ttl,
                                                      history=history)
        return created
    except Exception:                       # another node created it meanwhile
        again: KeyValue = await js.key_value(name)
        return again


class KvMirror:
    """Buckets ``what`` (``groups``, ``keys``...) of the cluster, mirrored (module docstring).
    Construct, then :meth:`start` (blocks until every bucket's current values are in)."""

    def __init__(self, settings: ClusterSettings, what: Sequence[str], *,
                 timeout: float = 10.0, client_name: str = "dcgateway-state") -> None:
        self.settings = settings
        self.names = Names(settings.name)
        self.what = tuple(what)
        self.timeout = timeout
        self.client_name = client_name
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Versioned]] = {w: {} for w in self.what}
        self._revision: dict[str, int] = {w: 0 for w in self.what}
        self._buckets: dict[str, KeyValue] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="dcgw-cluster-state")
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[Any] = []
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> KvMirror:
        self._thread.start()
        try:
            self._call(self._open(), self.timeout,
                       f"opening the cluster's state buckets ({', '.join(self.what)})")
        except BaseException:
            self.close()
            raise
        return self

    async def _open(self) -> None:
        # its connection failures are logged at INFO only: every caller's own error says what
        # failed (a command line prints one `error:` line, not the client's retries)
        self._nc = await connect(self.settings, self.client_name, error_level=logging.INFO)
        nc = self._nc
        js = nc.jetstream(timeout=self.timeout)
        quick = nc.jetstream(timeout=CONSUMER_ATTEMPT_S)     # the watches: see new_consumer
        ready = []
        for w in self.what:
            name = self.names.bucket(w)
            kv = await open_bucket(js, name, self.settings.replicas)
            self._buckets[w] = kv

            async def watch(name: str = name) -> Any:
                return await (await quick.key_value(name)).watchall()
            watcher = await new_consumer(watch, self.timeout, f"the watch of bucket {name}")
            self._watchers.append(watcher)
            first = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.ensure_future(self._follow(w, watcher, first)))
            ready.append(first)
        await asyncio.gather(*ready)

    async def _follow(self, what: str, watcher: Any, first: asyncio.Future[None]) -> None:
        """Apply every change of bucket ``what``; ``first`` is done once the bucket's values
        at the start are in (the watcher's None marker)."""
        async for entry in watcher:
            if entry is None:
                if not first.done():
                    first.set_result(None)
                continue
            self._apply(what, entry.key, entry.value, entry.revision or 0,
                        entry.operation is not None)
            if not first.done() and not entry.delta:
                first.set_result(None)

    def _apply(self, what: str, key: str, value: bytes | None, revision: int,
               deleted: bool) -> None:
        with self._lock:
            data = self._data[what]
            have = data.get(key)
            if have is not None and have[1] >= revision:
                return
            if deleted or value is None:
                data.pop(key, None)
            else:
                data[key] = (value, revision)
            self._revision[what] = max(self._revision[what], revision)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            try:
                self._call(self._shutdown(), 5.0)
            except Exception as exc:
                log.warning("closing the cluster state connection: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        for watcher in self._watchers:
            try:
                await watcher.stop()
            except Exception:
                pass
        await cancel_and_wait(*self._tasks)
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        await asyncio.sleep(0.01)          # the cancelled helper tasks of the client finish

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None,
              what: str = "a key-value request") -> _T:
        """Run ``coro`` on the mirror's loop, bounded; any failure of NATS (no quorum, no
        server, a timeout) becomes one :class:`ClusterStateError` naming the servers and
        ``what`` failed: never the client's own exception and its traceback."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking KV call from the mirror's own thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        servers = ", ".join(self.settings.nats.servers)
        try:
            return fut.result(timeout if timeout is not None else self.timeout)
        except TimeoutError:
            fut.cancel()
            raise ClusterStateError(f"{what}: the cluster's key-value store did not answer "
                                    f"within {timeout or self.timeout:g}s (NATS servers "
                                    f"{servers})") from None
        except DcGatewayError:
            raise
        except Exception as exc:
            raise ClusterStateError(f"{what} failed on the cluster's NATS servers ({servers}): "
                                    f"{nats_error_text(exc)}") from None

    # -- reads (local, cheap) -------------------------------------------------------------------

    def get(self, what: str, key: str) -> Versioned | None:
        with self._lock:
            return self._data[what].get(key)

    def items(self, what: str) -> Mapping[str, Versioned]:
        with self._lock:
            return dict(self._data[what])

    def revision(self, what: str) -> int:
        """Changes whenever anything in the bucket changes (the state's ``signature``)."""
        with self._lock:
            return self._revision[what]

    # -- reads and writes through the cluster (blocking, bounded) -----------------------------

    def fetch(self, what: str, key: str) -> Versioned | None:
        """The key's current value and revision, read from the cluster (not the mirror): the
        start of a read-modify-write."""
        async def get() -> Versioned | None:
            try:
                e = await self._buckets[what].get(key)
            except KeyNotFoundError:
                return None
            if e.value is None or e.revision is None:
                return None
            return e.value, e.revision
        got = self._call(get(), what=f"reading {self.names.bucket(what)}/{key}")
        if got is not None:
            self._apply(what, key, got[0], got[1], False)
        return got

    def write(self, what: str, key: str, value: bytes, last: int | None) -> int:
        """Set ``key`` to ``value`` if its revision is still ``last`` (None: only if absent);
        raises :class:`Conflict` otherwise. The new revision, applied to the mirror at once."""
        async def cas() -> int:
            kv = self._buckets[what]
            try:
                if last is None:
                    rev: int = await kv.create(key, value)
                else:
                    rev = await kv.update(key, value, last=last)
                return rev
            except KeyWrongLastSequenceError:
                raise Conflict(f"{self.names.bucket(what)}/{key} changed meanwhile") from None
        rev = self._call(cas(), what=f"writing {self.names.bucket(what)}/{key}")
        self._apply(what, key, value, rev, False)
        return rev

    def post(self, what: str, key: str, value: bytes) -> None:
        """Put ``key`` in the background: never blocks the caller (the Logon path), a failure
        is logged. The mirror has the value once NATS took it (and every other mirror within
        milliseconds, by its watch)."""
        bucket = self.names.bucket(what)

        async def put() -> None:
            try:
                rev = await self._buckets[what].put(key, value)
            except Exception as exc:
                log.warning("could not write %s/%s: %s", bucket, key, nats_error_text(exc))
                return
            self._apply(what, key, value, rev, False)
        if not self._closed:
            asyncio.run_coroutine_threadsafe(put(), self._loop)

    def put(self, what: str, key: str, value: bytes) -> int:
        rev: int = self._call(self._buckets[what].put(key, value),
                              what=f"writing {self.names.bucket(what)}/{key}")
        self._apply(what, key, value, rev, False)
        return rev
