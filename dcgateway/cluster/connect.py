"""Connecting to the cluster's NATS servers, and the names of what the gateway keeps there.

Every stream and bucket name starts with ``cluster.name`` (``dcgw`` by default), so several
gateways (or the tests) can share one NATS deployment without seeing each other's state.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.js import errors as js_errors

from ..config.cluster import ClusterSettings
from ..errors import DcGatewayError

log = logging.getLogger("dcgateway.cluster")

#: A node's first connection at start-up must be made within this long, or within
#: ``connect_timeout_s`` per server if that is longer (every server gets one whole attempt):
#: else it exits 1 naming the servers (:func:`connect_at_start`). Once connected, it reconnects
#: for ever (a NATS server restarting must not end the node).
START_CONNECT_S = 5.0


class ClusterUnavailable(DcGatewayError):
    """NATS (or its JetStream) could not do what was asked: no server answered, no quorum,
    a timeout. The message names the servers and what failed (exit 1 on the command line)."""


@dataclass(frozen=True, slots=True)
class Names:
    """Streams, subjects and buckets of one cluster (``cluster.name``)."""

    prefix: str

    @property
    def journal(self) -> str:              # the replicated journal (source messages, markers)
        return f"{self.prefix.upper()}_JOURNAL"

    @property
    def targets(self) -> str:              # per-target outbound records (the fence)
        return f"{self.prefix.upper()}_TARGETS"

    def bucket(self, what: str) -> str:    # groups, keys, closures, users, leases
        return f"{self.prefix}_{what}"

    def source_subject(self, source: str) -> str:
        return f"{self.prefix}.src.{subject_token(source)}"

    def marker_subject(self, source: str) -> str:
        return f"{self.prefix}.mark.{subject_token(source)}"

    def target_subject(self, target: str) -> str:
        return f"{self.prefix}.tgt.{subject_token(target)}"

    def session_subject(self, comp_id: str) -> str:
        return f"{self.prefix}.sess.{subject_token(comp_id)}"


_T = TypeVar("_T")

#: One attempt at creating an ephemeral consumer (a bucket's watch, a pull subscription that
#: reads the journal back) may take this long before it is made again (:func:`new_consumer`).
CONSUMER_ATTEMPT_S = 1.0


async def new_consumer(make: Callable[[], Awaitable[_T]], timeout: float, what: str) -> _T:
    """``make()``, which creates an ephemeral consumer, made again while it times out, for at
    most ``timeout`` seconds in all (then the last timeout is raised).

    Why: nats-server before the fix of its pull request 7165 (2025; Debian ships 2.9) places an
    ephemeral consumer, which is R1, on any of the stream's servers, one that is down included,
    and then never answers its creation. With one server of three down, a third of the watches
    and read-backs would hang until their timeout, and a takeover or a command with them,
    although the cluster has its quorum. Each attempt is placed afresh, so one made again
    after a short wait is placed on a live server with two chances in three. ``make`` must use
    a JetStream context whose requests time out after :data:`CONSUMER_ATTEMPT_S`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempt = 1
    while True:
        try:
            return await make()
        except (asyncio.TimeoutError, nats_errors.TimeoutError):
            if loop.time() + CONSUMER_ATTEMPT_S > deadline:
                raise
            log.info("%s: no answer to attempt %d at creating its consumer (placed on a server "
                     "that is down?); creating it again", what, attempt)
            attempt += 1


def subject_token(name: str) -> str:
    """A CompID as one subject token or KV key: itself when it is made of letters, digits,
    '_' and '-', else ``x`` + its hex (a CompID may hold any printable character but '=')."""
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    return "x" + name.encode().hex()


def connect_options(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments: servers, TLS, credentials, bounded timeouts and
    reconnection that never gives up (a NATS server restarting must not end the node)."""
    n = settings.nats
    opts: dict[str, Any] = {
        "servers": list(n.servers), "name": name, "connect_timeout": n.connect_timeout_s,
        "allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.2,
        "ping_interval": 1, "max_outstanding_pings": 3,
    }
    if n.creds_file is not None:
        opts["user_credentials"] = str(n.creds_file)
    if n.tls is not None or any(s.startswith("tls://") for s in n.servers):
        ctx = ssl.create_default_context(
            cafile=str(n.tls.ca_file) if n.tls is not None and n.tls.ca_file else None)
        if n.tls is not None and n.tls.cert_file is not None:
            ctx.load_cert_chain(str(n.tls.cert_file),
                                str(n.tls.key_file) if n.tls.key_file else None)
        opts["tls"] = ctx
    return opts


def nats_error_text(exc: BaseException) -> str:
    """One line saying what a NATS or JetStream failure was, without the client's class
    names and codes soup (``JetStream system temporarily unavailable (503)``)."""
    if isinstance(exc, js_errors.APIError):
        what = exc.description or type(exc).__name__
        return f"{what} ({exc.code}{f'/{exc.err_code}' if exc.err_code else ''})"
    if isinstance(exc, js_errors.NoStreamResponseError):
        return "no JetStream response (no quorum, or a leader is being elected)"
    if isinstance(exc, nats_errors.NoServersError):
        return "no server answered"
    if isinstance(exc, nats_errors.NoRespondersError):
        return "no JetStream responders (JetStream not available on the server)"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer in time (timeout)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


def unavailable(settings: ClusterSettings, what: str, exc: BaseException) -> ClusterUnavailable:
    """The error to raise when ``what`` failed on the cluster's NATS servers."""
    return ClusterUnavailable(f"{what} failed on the cluster's NATS servers "
                              f"({', '.join(settings.nats.servers)}): {nats_error_text(exc)}")


class ErrorReporter:
    """nats-py's ``error_cb``: one log line per failure, never the client's traceback (its
    default callback logs one per reconnect attempt), and a repeated failure at most once per
    ``every`` seconds, with how many were left out."""

    def __init__(self, name: str, level: int = logging.WARNING, every: float = 30.0,
                 clock: Any = time.monotonic) -> None:
        self.name = name
        self.level = level
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self.latest: BaseException | None = None      # the last failure reported

    async def on_error(self, exc: Exception) -> None:
        """The ``error_cb`` itself (nats-py wants a coroutine function)."""
        self.report(exc)

    def report(self, exc: BaseException) -> None:
        self.latest = exc
        text = nats_error_text(exc)
        now = self.clock()
        last = self._last.get(text)
        if last is not None and now - last < self.every:
            self._skipped[text] = self._skipped.get(text, 0) + 1
            return
        self._last[text] = now
        skipped = self._skipped.pop(text, 0)
        log.log(self.level, "NATS connection %s: %s%s", self.name, text,
                f" (and {skipped} more like it)" if skipped else "")


def _options(settings: ClusterSettings, name: str, reporter: ErrorReporter,
             extra: dict[str, Any]) -> dict[str, Any]:
    async def reconnected() -> None:
        log.log(reporter.level, "NATS connection %s: reconnected", name)
    return {**connect_options(settings, name), "error_cb": reporter.on_error,
            "reconnected_cb": reconnected, **extra}


async def connect(settings: ClusterSettings, name: str, *, error_level: int = logging.WARNING,
                  **extra: Any) -> Client:
    """A connection to the cluster's servers (the first that answers). Its asynchronous
    errors (a server gone, a reconnect attempt refused) are logged as one line each at
    ``error_level`` (:class:`ErrorReporter`; a command line passes DEBUG: its own error
    message says what failed)."""
    return await nats.connect(**_options(settings, name, ErrorReporter(name, error_level), extra))


def start_connect_s(settings: ClusterSettings) -> float:
    """How long a node's first connection may take (:data:`START_CONNECT_S`)."""
    return max(START_CONNECT_S, settings.nats.connect_timeout_s * len(settings.nats.servers))


async def connect_at_start(settings: ClusterSettings, name: str) -> Client:
    """:func:`connect` for a node starting: the same connection (it reconnects for ever once
    made), but if no server answered within :func:`start_connect_s` a
    :class:`ClusterUnavailable` names the servers and the last failure (exit 1, no traceback)."""
    reporter = ErrorReporter(name)
    nc = Client()
    within = start_connect_s(settings)
    try:
        await asyncio.wait_for(nc.connect(**_options(settings, name, reporter, {})), within)
        return nc
    except BaseException as exc:
        try:                                  # nothing of the attempt is left behind
            await asyncio.wait_for(nc.close(), 1)
        except Exception as close_exc:
            log.debug("closing the NATS connection %s: %s", name, close_exc)
        if not isinstance(exc, Exception):    # cancelled (the node is stopping)
            raise
        last = reporter.latest if isinstance(exc, asyncio.TimeoutError) else exc
        raise ClusterUnavailable(
            f"connecting failed on the cluster's NATS servers ({', '.join(settings.nats.servers)}"
            f"): no server answered within {within:g}s"
            + (f" (last: {nats_error_text(last)})" if last is not None else "")) from None
