"""dcgateway.net.http: /metrics and /healthz over real sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from dcgateway.net.http import serve_http

from ..tlsfiles import self_signed

pytestmark = pytest.mark.asyncio


# -- a raw HTTP/1.1 client ----------------------------------------------------------------------

class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()


async def read_reply(reader: asyncio.StreamReader, *, head_only: bool = False) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers["content-length"])
    return Reply(status, headers, await reader.readexactly(n))


async def http_get(port: int, path: str = "/metrics", *, method: str = "GET",
                   extra: str = "", ssl_ctx: ssl.SSLContext | None = None) -> Reply:
    """One request with ``Connection: close``; checks the server then closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        async with asyncio.timeout(5):
            reply = await read_reply(reader, head_only=method == "HEAD")
            assert await reader.read() == b""          # closed after the reply
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed by then."""
    async with asyncio.timeout(seconds):
        return await reader.read()


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def loop_errors() -> list[dict]:
    """Exceptions that reach the loop's handler fail the test (the asyncpg rule)."""
    return []


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("dcgateway_test_events", "Test events.", registry=reg).inc(3)
    return reg


class Health:
    def __init__(self) -> None:
        self.answer: tuple[bool, str] = (True, "")
        self.raises = False

    def __call__(self) -> tuple[bool, str]:
        if self.raises:
            raise RuntimeError("boom")
        return self.answer


@pytest.fixture
def health() -> Health:
    return Health()


@pytest_asyncio.fixture
async def start(registry: CollectorRegistry, health: Health, loop_errors: list[dict]
                ) -> AsyncIterator[Callable]:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    servers: list[asyncio.Server] = []

    async def _start(**kw) -> int:
        server = await serve_http("127.0.0.1", 0, kw.pop("registry", registry),
                                  kw.pop("health", health), **kw)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    _start.servers = servers  # type: ignore[attr-defined]
    yield _start
    for s in servers:
        s.close()
        await s.wait_closed()
    await asyncio.sleep(0)
    assert not loop_errors, loop_errors


# -- /metrics -----------------------------------------------------------------------------------

async def test_metrics_is_the_registry_in_text_format(start) -> None:
    port = await start()
    reply = await http_get(port)
    assert reply.status == 200
    assert reply.headers["content-type"] == CONTENT_TYPE_LATEST
    fams = {f.name: f for f in text_string_to_metric_families(reply.text)}
    assert fams["dcgateway_test_events"].type == "counter"
    [total] = [s for s in fams["dcgateway_test_events"].samples if s.name.endswith("_total")]
    assert total.value == 3


async def test_head_has_headers_only(start) -> None:
    port = await start()
    get = await http_get(port)
    head = await http_get(port, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-type"] == CONTENT_TYPE_LATEST
    assert int(head.headers["content-length"]) > 0
    assert abs(int(head.headers["content-length"]) - len(get.body)) < 64   # _created may differ


async def test_a_query_string_is_ignored(start) -> None:
    port = await start()
    assert (await http_get(port, "/metrics?name[]=x")).status == 200


async def test_a_failing_collector_answers_500(start) -> None:
    class Broken(Collector):
        def collect(self):
            raise RuntimeError("collector bug")

    reg = CollectorRegistry()
    reg.register(Broken())
    port = await start(registry=reg)
    reply = await http_get(port)
    assert reply.status == 500 and "metrics collection failed" in reply.text


async def test_serve_http_needs_a_registry(start) -> None:
    with pytest.raises(ValueError):
        await start(registry=None)


# -- /healthz -----------------------------------------------------------------------------------

async def test_healthz_200_while_healthy(start, health: Health) -> None:
    port = await start()
    reply = await http_get(port, "/healthz")
    assert (reply.status, reply.text) == (200, "ok\n")


async def test_healthz_503_with_the_reason(start, health: Health) -> None:
    port = await start()
    health.answer = (False, "journal not writable:\n disk full")
    reply = await http_get(port, "/healthz")
    assert reply.status == 503
    assert reply.text == "journal not writable: disk full\n"     # one line
    health.answer = (True, "")
    assert (await http_get(port, "/healthz")).status == 200        # asked at every request


async def test_healthz_503_when_the_check_raises(start, health: Health) -> None:
    port = await start()
    health.raises = True
    reply = await http_get(port, "/healthz")
    assert reply.status == 503 and "RuntimeError" in reply.text


# -- routing and methods ------------------------------------------------------------------------

async def test_unknown_path_404(start) -> None:
    port = await start()
    for path in ("/", "/metric", "/metrics/x", "/healthz/"):
        assert (await http_get(port, path)).status == 404


async def test_other_methods_405(start) -> None:
    port = await start()
    reply = await http_get(port, method="DELETE")
    assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD"


async def test_request_body_refused(start) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.status == 413 and reply.headers["connection"] == "close"
    assert await closed_within(reader, 5) == b""
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("line, status", [
    (b"GET /metrics HTTP/2.0", 505),
    (b"GET /metrics", 400),
    (b"GARBAGE", 400),
    (b"GET  /metrics HTTP/1.1", 400),
])
async def test_malformed_request_line(start, line: bytes, status: int) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line + b"\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.status == status
    assert await closed_within(reader, 5) == b""
    writer.close()
    await writer.wait_closed()


async def test_malformed_header_400(start) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await read_reply(reader)).status == 400
    writer.close()
    await writer.wait_closed()


# -- connections --------------------------------------------------------------------------------

async def test_keep_alive_serves_several_requests(start, health: Health) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path, status in (("/metrics", 200), ("/healthz", 200), ("/nope", 404),
                             ("/metrics", 200)):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            async with asyncio.timeout(5):
                reply = await read_reply(reader)
            assert reply.status == status
            assert "connection" not in reply.headers
        # pipelined: two requests in one write, two replies in order
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        async with asyncio.timeout(5):
            assert [(await read_reply(reader)).status for _ in range(2)] == [200, 404]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_http_10_closes_unless_keep_alive(start) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.headers["connection"] == "keep-alive"
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.headers["connection"] == "close"
    assert await closed_within(reader, 5) == b""
    writer.close()
    await writer.wait_closed()


async def test_oversized_request_head_is_cut_off(start) -> None:
    port = await start(max_request_bytes=1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 4096)    # no end of head yet
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.status == 431
    assert await closed_within(reader, 5) == b""
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass                            # unread bytes of ours may have reset the connection


async def test_endless_headers_are_cut_off(start) -> None:
    """Many small header lines: the bound is on the whole head, not per line."""
    port = await start(max_request_bytes=2048)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000)
    async with asyncio.timeout(5):
        assert (await read_reply(reader)).status == 431
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def test_slow_request_is_cut_off(start) -> None:
    """Slowloris: a head trickling in is dropped when the request timeout runs out."""
    port = await start(request_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    for _ in range(3):
        await asyncio.sleep(0.05)
        writer.write(b"X-Slow: 1\r\n")
    assert await closed_within(reader, 3) == b""      # closed without an answer
    assert time.monotonic() - t0 < 2
    writer.close()
    await writer.wait_closed()


async def test_idle_connection_is_closed(start) -> None:
    port = await start(request_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_within(reader, 3) == b""
    writer.close()
    await writer.wait_closed()


async def test_connection_limit(start) -> None:
    port = await start(max_connections=1)
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
    w1.write(b"GET /healthz HTTP/1.1\r\n\r\n")          # keep-alive: holds the only slot
    async with asyncio.timeout(5):
        assert (await read_reply(r1)).status == 200
    reply = await http_get(port, "/healthz")
    assert reply.status == 503 and "too many connections" in reply.text
    w1.close()
    await w1.wait_closed()
    for _ in range(100):                                # the slot frees once the server sees EOF
        if (await http_get(port, "/healthz")).status == 200:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the connection slot was not released")


async def test_requests_per_connection_are_bounded(start) -> None:
    port = await start(max_requests=2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n" * 3)
    async with asyncio.timeout(5):
        assert (await read_reply(reader)).headers.get("connection") is None
        assert (await read_reply(reader)).headers["connection"] == "close"
    assert await closed_within(reader, 5) == b""
    writer.close()
    await writer.wait_closed()


async def test_closed_server_finishes_keep_alive_connections(start) -> None:
    port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    async with asyncio.timeout(5):
        await read_reply(reader)
    server = start.servers[0]
    server.close()
    # the next request on the open connection is still answered, then the connection closes
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    async with asyncio.timeout(5):
        reply = await read_reply(reader)
    assert reply.status == 200 and reply.headers["connection"] == "close"
    assert await closed_within(reader, 5) == b""
    writer.close()
    await writer.wait_closed()


# -- TLS ----------------------------------------------------------------------------------------

async def test_tls(start, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert_file), str(key_file))
    port = await start(ssl=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    client_ctx.check_hostname = False
    reply = await http_get(port, "/metrics", ssl_ctx=client_ctx)
    assert reply.status == 200 and b"dcgateway_test_events_total 3.0" in reply.body
