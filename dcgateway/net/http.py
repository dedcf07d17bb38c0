"""The operators' HTTP endpoint: ``GET /metrics`` (Prometheus text exposition) and ``GET /healthz``.

A deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server` (no web framework: the
gateway needs two read-only resources, and every dependency on the trading host is one more thing
to patch). It answers ``GET`` and ``HEAD`` (RFC 9110 section 9.3.1/9.3.2) and keeps connections
alive as Prometheus does between scrapes (RFC 9112 section 9.3); it takes no request bodies.

Bounds (docs/architecture.md rule 5): a request head larger than ``max_request_bytes`` is answered 431 and
the connection closed; a head that has not fully arrived ``request_timeout`` seconds after the
connection opened (or after the previous response) closes the connection (slow clients cannot
hold a handler); a response the client does not read within ``write_timeout`` closes it; at most
``max_connections`` connections are served at once (more are answered 503 and closed) and at most
``max_requests`` requests per connection. So every handler ends on its own within a bounded time,
also after the caller has closed the server (a handler checks ``is_serving()`` before waiting for
another request).

The exposition is generated on the event loop, not in a thread, on purpose:

* it is fast (a few hundred series: well under a millisecond; the gateway's hot-path metrics are
  cached children and batch histograms, so a scrape only formats numbers);
* the metrics module's batch histogram and the gateway's ``snapshot()`` read loop-owned state
  (session slots, target queues) without locks; running ``collect()`` in another thread would
  race with the loop mutating those dicts (``RuntimeError: dictionary changed size during
  iteration``) and would need a lock on the hot path to be correct;
* one scrape every few seconds costs less on the loop than the thread hand-off would.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl as _ssl
from collections.abc import Callable
from email.utils import formatdate

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

__all__ = ["serve_http", "Health", "MAX_REQUEST_BYTES", "REQUEST_TIMEOUT", "WRITE_TIMEOUT",
           "MAX_CONNECTIONS", "MAX_REQUESTS"]

log = logging.getLogger(__name__)

#: ``health() -> (ok, reason)``: 200 with ``reason`` (or ``ok``) while ``ok``, else 503 with
#: ``reason``.
Health = Callable[[], tuple[bool, str]]

MAX_REQUEST_BYTES = 8192        # request line + headers
REQUEST_TIMEOUT = 10.0          # seconds for a whole request head to arrive
WRITE_TIMEOUT = 10.0            # seconds for the client to take a response
MAX_CONNECTIONS = 32
MAX_REQUESTS = 1000             # per connection

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            413: "Content Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_TEXT = "text/plain; charset=utf-8"
_END = b"\r\n\r\n"
_LINGER_BYTES = 1 << 20         # discarded at most after an error answer


class _Response:
    __slots__ = ("status", "body", "content_type", "close", "extra")

    def __init__(self, status: int, body: bytes, content_type: str = _TEXT, *,
                 close: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = close
        self.extra = extra


def _error(status: int, text: str) -> _Response:
    return _Response(status, text.encode() + b"\n", close=True)


class _Request:
    __slots__ = ("method", "path", "version", "headers")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers

    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


def _parse(head: bytes) -> _Request | _Response:
    """The request line and headers (RFC 9112 sections 3 and 5), or the error to answer."""
    lines = head[:-len(_END)].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return _error(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return _error(505, "HTTP/1.1 only")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return _error(400, "malformed header line")
        headers[name.lower()] = value.strip()
    if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
        return _error(413, "request bodies are not accepted")
    return _Request(method, target.split("?", 1)[0], version, headers)


class _Handler:
    """One per server: routes requests, counts connections."""

    def __init__(self, registry: CollectorRegistry, health: Health, *, max_request_bytes: int,
                 request_timeout: float, write_timeout: float, max_connections: int,
                 max_requests: int, bearer_token: bytes | None = None,
                 before_scrape: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.before_scrape = before_scrape
        self.bearer = None if bearer_token is None else b"Bearer " + bearer_token
        self.health = health
        self.max_request_bytes = max_request_bytes
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.max_requests = max_requests
        self.server: asyncio.Server | None = None
        self.active = 0
        self.routes: dict[str, Callable[[], _Response]] = {
            "/metrics": self.metrics, "/healthz": self.healthz}

    # -- resources ------------------------------------------------------------------------------

    def metrics(self) -> _Response:
        try:
            if self.before_scrape is not None:
                self.before_scrape()            # hot-path counters handed over first
            body = generate_latest(self.registry)
        except Exception:                           # a collector bug: answer, do not hang up
            log.exception("metrics exposition failed")
            return _error(500, "metrics collection failed")
        return _Response(200, body, CONTENT_TYPE_LATEST)

    def healthz(self) -> _Response:
        try:
            ok, reason = self.health()
        except Exception as exc:
            log.exception("health check failed")
            ok, reason = False, f"health check failed: {type(exc).__name__}"
        # 200 with the check's own word ("ok"; a cluster standby: "standing by", ...)
        text = " ".join(str(reason or ("ok" if ok else "unhealthy")).split())[:200]  # one line
        return _Response(200 if ok else 503, text.encode("utf-8", "replace") + b"\n")

    def respond(self, req: _Request) -> _Response:
        route = self.routes.get(req.path)
        if route is None:
            return _Response(404, b"not found\n")
        if req.method not in ("GET", "HEAD"):
            return _Response(405, b"method not allowed\n", extra=(("Allow", "GET, HEAD"),))
        if self.bearer is not None and req.path == "/metrics" and not hmac.compare_digest(
                req.headers.get("authorization", "").encode("latin-1"), self.bearer):
            return _Response(401, b"a bearer token is required\n",
                             extra=(("WWW-Authenticate", 'Bearer realm="dcgateway metrics"'),))
        return route()

    # -- connections ----------------------------------------------------------------------------

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        over = self.active >= self.max_connections
        self.active += 1
        try:
            if over:
                await self._send(writer, _error(503, "too many connections"), False)
                await self._linger(reader, writer)
            else:
                await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, _ssl.SSLError):
            pass                                    # the peer went away or stalled: just close
        except Exception:
            log.exception("metrics HTTP connection failed")
        finally:
            self.active -= 1
            await self._close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(1, self.max_requests + 1):
            try:
                async with asyncio.timeout(self.request_timeout):
                    head = await reader.readuntil(_END)
            except asyncio.IncompleteReadError:
                return                              # closed by the peer (maybe mid-request)
            except asyncio.LimitOverrunError:
                await self._send(writer, _error(431, "request head too large"), False)
                await self._linger(reader, writer)
                return
            parsed = _parse(head)
            if isinstance(parsed, _Response):
                await self._send(writer, parsed, False)
                await self._linger(reader, writer)
                return
            resp = self.respond(parsed)
            keep = (parsed.keep_alive() and not resp.close and n < self.max_requests
                    and self.server is not None and self.server.is_serving())
            resp.close = not keep
            await self._send(writer, resp, parsed.method == "HEAD",
                             keep_alive_10=keep and parsed.version == "HTTP/1.0")
            if not keep:
                return

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an error answer to a request we did not read whole: half-close, then discard
        what the client still sends (bounded in bytes and time) so that closing does not reset
        the connection before the client has read the answer (RFC 9112 section 9.6)."""
        if writer.can_write_eof():
            writer.write_eof()
        discarded = 0
        try:
            async with asyncio.timeout(min(1.0, self.request_timeout)):
                while discarded < _LINGER_BYTES:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    discarded += len(chunk)
        except (TimeoutError, ConnectionError):
            pass

    async def _send(self, writer: asyncio.StreamWriter, resp: _Response, head_only: bool,
                    keep_alive_10: bool = False) -> None:
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Error')}",
                 f"Date: {formatdate(usegmt=True)}",
                 f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}",
                 "Cache-Control: no-store"]
        if resp.close:
            lines.append("Connection: close")
        elif keep_alive_10:
            lines.append("Connection: keep-alive")
        lines.extend(f"{k}: {v}" for k, v in resp.extra)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(resp.body)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(self.write_timeout):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError, _ssl.SSLError):
            pass


async def serve_http(host: str, port: int, registry: CollectorRegistry, health: Health, *,
                     ssl: _ssl.SSLContext | None = None,
                     max_request_bytes: int = MAX_REQUEST_BYTES,
                     request_timeout: float = REQUEST_TIMEOUT,
                     write_timeout: float = WRITE_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS,
                     max_requests: int = MAX_REQUESTS,
                     bearer_token: bytes | None = None,
                     before_scrape: Callable[[], None] | None = None) -> asyncio.Server:
    """Start serving ``/metrics`` (``registry``) and ``/healthz`` (``health``) on
    ``host:port`` (port 0: any free port; read it from ``server.sockets``). Returns the started
    server; the caller closes it (``close()`` then ``await wait_closed()``). ``ssl``: TLS (with a
    client-certificate requirement when the context asks for one). ``bearer_token``: ``/metrics``
    answers 401 unless the request carries ``Authorization: Bearer <token>`` (RFC 6750 section
    2.1; compared in constant time); ``/healthz`` stays open for load balancers (it says only
    ok or why not)."""
    if registry is None:
        raise ValueError("serve_http needs the gateway's CollectorRegistry")
    handler = _Handler(registry, health, max_request_bytes=max_request_bytes,
                       request_timeout=request_timeout, write_timeout=write_timeout,
                       max_connections=max_connections, max_requests=max_requests,
                       bearer_token=bearer_token, before_scrape=before_scrape)
    server = await asyncio.start_server(handler, host, port, limit=max_request_bytes, ssl=ssl,
                                        ssl_handshake_timeout=request_timeout if ssl else None)
    handler.server = server
    return server
