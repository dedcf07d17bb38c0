"""What a cluster node that does not serve the sessions answers on its FIX and metrics ports
(:class:`Standby`): every configured session is known and every Logon is authenticated against
the cluster's key pairs, then answered with a Logout naming the serving node; ``/metrics`` shows
the node's lease state and ``/healthz`` says it is up, standing by. :mod:`.node` starts one while
the node does not hold the primary lease and stops it to take over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ..config import GatewayConfig
from ..errors import listening
from ..fix.dictionary import DictionaryCache
from ..fix.store import MemoryStore
from ..net.acceptor import Acceptor, AcceptorSettings
from ..net.connection import SessionSlot
from ..net.http import serve_http
from ..runtime import cancel_and_wait, metrics_token, server_ssl_context, session_config
from .metrics import ClusterMetrics


class _NoStore(MemoryStore):
    """A standby's sessions never bind: nothing to keep."""

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


class Standby:
    """What a node that does not serve the sessions answers on its FIX port: the acceptor with
    every configured session, whose ``admit`` always names the serving node (after the Logon
    is authenticated against the cluster's key pairs: nobody else learns anything)."""

    def __init__(self, config: GatewayConfig, text_for: Any,
                 metrics: ClusterMetrics | None = None,
                 health: Callable[[], tuple[bool, str]] | None = None) -> None:
        from ..auth import LogonAuthenticator, SessionAuth
        from ..auth.canonical import required_tags
        from ..state import open_state
        self.config = config
        g = config.gateway
        self.state = open_state(config)
        dictionaries = DictionaryCache()
        slots = {s.comp_id: SessionSlot(s.comp_id, s.role,
                                        session_config(config, s, dictionaries), _NoStore())
                 for s in config.sessions}
        auth = LogonAuthenticator(self.state.keys.store,
                                  {s.comp_id: SessionAuth(s.key_scope, required_tags(s.profile))
                                   for s in config.sessions},
                                  closures=self.state.closures,
                                  sending_time_tolerance_s=g.sending_time_tolerance_s)
        self.acceptor = Acceptor(AcceptorSettings(our_comp_id=g.comp_id,
                                                  logon_timeout=g.logon_timeout_s,
                                                  max_connections=g.max_connections),
                                 slots, clock=time.time, authenticator=auth)
        self.acceptor.admit = lambda slot, conn: str(text_for(slot.comp_id))
        self._timers: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry()
        if metrics is not None:
            metrics.attach(self.registry)
        self._http: Any = None
        self.health = health or (lambda: (True, "standing by"))
        self.stopped = False

    async def start(self) -> None:
        g = self.config.gateway
        with listening("gateway.listen", g.listen.host, g.listen.port):
            await self.acceptor.start(g.listen.host, g.listen.port,
                                      ssl=server_ssl_context(g.tls))
        self._timers = asyncio.create_task(self.acceptor.run_timers())
        # a standby answers /metrics too (its lease state) and /healthz (up, standing by)
        with listening("gateway.metrics", g.metrics.host, g.metrics.port):
            self._http = await serve_http(g.metrics.host, g.metrics.port, self.registry,
                                          self.health,
                                          ssl=server_ssl_context(g.metrics_tls),
                                          bearer_token=metrics_token(g.metrics_token_file))

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self._timers is not None:
            await cancel_and_wait(self._timers)
        await self.acceptor.shutdown("node taking over")
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
        self.state.close()
