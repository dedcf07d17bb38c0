"""The portal's server: uvicorn on a socket bound here, in the caller's event loop.

Binding the socket ourselves means a busy port is an ``OSError`` the caller handles (the demo
goes on without a portal) and port 0 works (tests): the bound port is known before the app is
built, so the public URL (links, the Origin check) names it. uvicorn's own signal handling is
switched off: the owner (``dcgateway portal``, the demo, a test) decides when to stop. TLS
(``portal.tls``) is TLS 1.2 or later; uvicorn's access log is off (a path can hold an
enrolment token): the portal writes its own (:mod:`.security`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from ..config import GatewayConfig
from ..errors import UsageError, listening
from ..state import StateStore, open_state
from .app import create_app
from .ratelimit import Limits

log = logging.getLogger("dcgateway.portal")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the owner of the loop has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bound_url(public_url: str, configured_port: int, bound_port: int) -> str:
    """``public_url`` with the bound port when the configured port was 0."""
    if configured_port != 0:
        return public_url.rstrip("/")
    parts = urlsplit(public_url)
    return urlunsplit((parts.scheme, f"{parts.hostname}:{bound_port}", "", "", ""))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PortalServer:
    """``await start()`` binds and serves (returns the URL); ``await stop()`` ends it."""

    def __init__(self, config: GatewayConfig, state: StateStore | None = None, *,
                 limits: Limits | None = None, clock: Callable[[], float] = time.time) -> None:
        if config.portal is None:
            raise UsageError(f"{config.path} has no portal: section; expected portal: "
                             "{listen: {host, port}, public_url: URL}")
        self.config = config
        self.settings = config.portal
        self.state = state or open_state(config)
        self.limits = limits
        self.clock = clock
        self.url: str | None = None
        self.port: int | None = None
        self.app: Any = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        p = self.settings
        with listening("portal.listen", p.listen.host, p.listen.port):
            sock = _listen(p.listen.host, p.listen.port)
        try:
            self.port = sock.getsockname()[1]
            self.url = bound_url(p.public_url, p.listen.port, self.port)
            self.app = create_app(self.config, self.state, public_url=self.url,
                                  limits=self.limits, clock=self.clock)
            self._server = _Server(self._uvicorn_config())
        except BaseException:
            sock.close()                 # e.g. an unreadable certificate: nothing left open
            raise
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="portal-http")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                await self.stop()
                raise OSError(f"the portal did not start on {p.listen.host}:{self.port}")
            await asyncio.sleep(0.01)
        log.info("portal on %s", self.url)
        return self.url

    def _uvicorn_config(self) -> uvicorn.Config:
        p = self.settings
        tls: dict[str, Any] = {}
        if p.tls is not None:
            tls = {"ssl_certfile": str(p.tls.cert_file), "ssl_keyfile": str(p.tls.key_file)}
        uconfig = uvicorn.Config(self.app, lifespan="off", ws="none", http="h11", loop="none",
                                 log_config=None, log_level="warning", access_log=False,
                                 server_header=False, proxy_headers=False,
                                 timeout_keep_alive=5, limit_concurrency=256,
                                 timeout_graceful_shutdown=5, **tls)
        uconfig.load()
        if uconfig.ssl is not None:
            uconfig.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        return uconfig

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except SystemExit:       # uvicorn exits this way when its startup failed
            pass


async def serve_forever(config: GatewayConfig, out: Any = sys.stdout) -> int:
    """``dcgateway portal``: serve until SIGTERM/SIGINT."""
    server = PortalServer(config)
    url = await server.start()
    print(f"dcgateway portal on {url} (log in at {url}/login; new users enrol with the link "
          "from `dcgateway users invite NAME`); Ctrl-C stops", file=out, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    assert server.task is not None
    await asyncio.wait({waiter, server.task}, return_when=asyncio.FIRST_COMPLETED)
    failed = server.task.done()
    waiter.cancel()
    await server.stop()
    print("portal stopped", file=out, flush=True)
    return 1 if failed else 0
