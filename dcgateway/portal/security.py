"""What every request and response goes through (a pure ASGI middleware, outermost but for
Starlette's error handler), with the OWASP ASVS 5.0 chapter each part answers:

* *HTTP security headers* ("Web frontend security"): a Content-Security-Policy that allows
  scripts, styles and images only from the portal itself (``frame-ancestors 'none'`` against
  framing, ``form-action 'self'``), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  same-origin`` (an enrolment link never leaks to another site through a Referer; with
  ``no-referrer`` browsers would send ``Origin: null`` on the portal's own forms), ``Cache-Control: no-store``
  on everything but the static files (pages and answers may hold secrets), and HSTS under TLS.
* *Cross-site request forgery* ("Browser security"): a state-changing request (POST, PUT,
  PATCH, DELETE) whose ``Origin`` is not the portal's own, or that a browser marks
  ``Sec-Fetch-Site: cross-site``, is refused with 403 before any handler runs. The per-session
  token is checked by the handlers (they know the session).
* *Resource limits*: a request body over ``max_body`` bytes is refused with 413, whether it
  announces its length or not.
* *Logging* ("Security logging"): one access line per request with the method, the path (an
  enrolment token in it replaced by ``...``), status and duration; never a header, a cookie, a
  query string or a body.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("dcgateway.portal.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_TOKEN_PATH = re.compile(r"^(/(?:api/v1/)?enrol/)[^/]+")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case, default ports left out."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


#: What must not reach a log line as is: C0 and C1 controls (a line feed would let a client
#: write a line of its own into the log), DEL, and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode())


def safe_path(path: str) -> str:
    """A path fit for a log line: an enrolment token is cut out, and control characters are
    written percent-encoded, as they came on the wire (one request, one line)."""
    return _CONTROL.sub(_percent, _TOKEN_PATH.sub(r"\1...", path))


class _TooLarge(Exception):
    pass


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, public_origin: str, tls: bool,
                 max_body: int = 64 * 1024,
                 on_refused: Callable[[Scope, str], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.on_refused = on_refused          # audits a forged request (the app wires it)
        self.public_origin = public_origin
        self.tls = tls
        self.max_body = max_body
        headers = [(b"content-security-policy", CSP.encode()),
                   (b"x-content-type-options", b"nosniff"),
                   (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"same-origin"),
                   (b"cross-origin-opener-policy", b"same-origin"),
                   (b"cross-origin-resource-policy", b"same-origin"),
                   (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]
        if tls:
            headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]
        path = scope.get("path", "")
        static = path.startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in self.headers if h[0] not in names]
                if not static:
                    extra = [h for h in extra if h[0] != b"cache-control"]
                    extra += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                message["headers"] = [h for h in message.get("headers", [])
                                      if static or h[0].lower() != b"cache-control"] + extra
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                if refusal[0] == 403 and self.on_refused is not None:
                    try:
                        await self.on_refused(scope, refusal[1])
                    except Exception:              # the refusal stands, audited or not
                        log.exception("could not audit a refused request")
                await _json(send_wrapper, *refusal)
                return
            await self.app(scope, self._limited(scope, receive), send_wrapper)
        except _TooLarge:
            if not status[0]:
                await _json(send_wrapper, 413, f"request body over {self.max_body} bytes")
        except Exception:
            # A fault of the portal's own: answered here, inside this layer, so that the 500
            # carries the same headers as every other answer (Starlette's last-resort handler
            # sits outside the middleware). The log gets the traceback, the client a reason.
            if status[0]:
                raise                          # the answer has begun: nothing else to send
            log.exception("unexpected failure in %s %s", safe_path(str(scope.get("method"))),
                          safe_path(path))
            if path.startswith("/api/"):
                await _json(send_wrapper, 500, "internal failure")
            else:
                await _text(send_wrapper, 500, "internal failure")
        finally:
            log.info("%s %s %d %.1fms", safe_path(str(scope.get("method"))), safe_path(path),
                     status[0],
                     (time.monotonic() - started) * 1000)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if scope.get("method") not in UNSAFE_METHODS:
            return None
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1")
            if text == "null" or origin_of(text) != self.public_origin:
                return 403, "cross-origin request refused"
        if headers.get(b"sec-fetch-site") == b"cross-site":
            return 403, "cross-origin request refused"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"request body over {self.max_body} bytes"
        return None

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise _TooLarge()
            return message
        return limited


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _text(send: Send, status: int, text: str) -> None:
    await _answer(send, status, b"text/plain; charset=utf-8", text.encode())


async def _json(send: Send, status: int, error: str) -> None:
    await _answer(send, status, b"application/json", json.dumps({"error": error}).encode())
