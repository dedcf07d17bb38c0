"""Portal fixtures: a real gateway (in-process, port 0, real files and sockets) and a real
portal (uvicorn on 127.0.0.1 port 0) sharing one state store, an HTTP client that keeps the
session cookie and sends the CSRF token, an authenticator that hands out RFC 6238 codes (each
once, as the portal accepts them), and a real SMTP server for invitations.

Any exception that reaches the event loop's exception handler fails the test."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest_asyncio

from dcgateway.config import GatewayConfig, load_config
from dcgateway.gateway import Gateway
from dcgateway.portal import Limits, PortalServer
from tests.integration.conftest import RunningGateway, issue_keys, write_config

PORTAL = """
operators:
  - {name: olga, email: olga@exchange.example}
  - {name: oscar, email: oscar@exchange.example}
portal:
  listen: {host: 127.0.0.1, port: 0}
  public_url: http://127.0.0.1:0
  idle_timeout_s: @IDLE@
  absolute_timeout_s: @ABSOLUTE@
"""
PASSWORD = "correct horse battery staple"
#: generous limits for tests that are not about rate limiting (the defaults are tested apart)
TEST_LIMITS = Limits(login_rate=50, login_burst=200, api_rate=500, api_burst=1000)


def portal_config(folder: Path, *, smtp_port: int | None = None, idle: float = 900,
                  absolute: float = 43200, groups: str | None = None) -> Path:
    extra = (f"smtp: {{host: 127.0.0.1, port: {smtp_port}, sender: dcgw@localhost}}"
             if smtp_port else "")
    path = write_config(folder, extra=extra)
    path.write_text(path.read_text() + PORTAL.replace("@IDLE@", str(idle))
                    .replace("@ABSOLUTE@", str(absolute)))
    if groups is not None:
        (folder / "groups.yaml").write_text(groups)
    return path


class Authenticator:
    """An authenticator app: the code of the next time step the portal has not seen yet
    (one step of drift is accepted either way, so three fresh codes are available at any
    moment; a fourth waits for the clock, at most one step)."""

    def __init__(self, uri: str) -> None:
        self.totp = pyotp.parse_uri(uri)
        assert isinstance(self.totp, pyotp.TOTP)
        self.last = 0

    async def code(self) -> str:
        now = time.time()
        # the previous step's code, unless that step's acceptance ends within 2 s (a request
        # crossing the boundary would then be refused)
        oldest = int(now // 30) - (1 if now % 30 < 28 else 0)
        step = max(self.last + 1, oldest)
        while step > int(time.time() // 30) + 1:                # bounded: one step at most
            await asyncio.sleep(min(1.0, (step - 1) * 30 - time.time() + 0.05))
        self.last = step
        return self.totp.at(step * 30)

    def used_code(self) -> str:
        return self.totp.at(self.last * 30)


class Client:
    """httpx on the portal: keeps the cookie, sends the session's CSRF token."""

    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=15, follow_redirects=False)
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, *, csrf: bool = True,
                      **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if csrf and self.csrf and method in ("POST", "PUT", "DELETE"):
            headers.setdefault("X-CSRF-Token", self.csrf)
        return await self.http.request(method, "/api/v1" + path, headers=headers, **kw)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)

    async def login(self, user: str, auth: Authenticator, password: str = PASSWORD
                    ) -> httpx.Response:
        r = await self.post("/login", json={"user": user, "password": password,
                                            "code": await auth.code()})
        if r.status_code == 200:
            self.csrf = r.json()["csrf_token"]
        return r


@dataclass
class Stack:
    folder: Path
    config: GatewayConfig
    gateway: RunningGateway
    portal: PortalServer
    clients: list[Client]

    @property
    def url(self) -> str:
        assert self.portal.url is not None
        return self.portal.url

    @property
    def web(self) -> Any:
        return self.portal.app.state.web

    def client(self) -> Client:
        c = Client(self.url)
        self.clients.append(c)
        return c

    def invite(self, name: str) -> str:
        token, _ = self.web.accounts.invite(name, time.time())
        return token

    async def enrol(self, name: str, password: str = PASSWORD) -> Authenticator:
        """Invite ``name`` and enrol them through the JSON API; their authenticator."""
        c = self.client()
        token = self.invite(name)
        r = await c.post("/enrol", json={"token": token, "password": password})
        assert r.status_code == 200, r.text
        auth = Authenticator(r.json()["totp_uri"])
        r = await c.post("/enrol/confirm", json={"token": token, "code": await auth.code()})
        assert r.status_code == 200, r.text
        return auth

    async def logged_in(self, name: str) -> tuple[Client, Authenticator]:
        auth = await self.enrol(name)
        c = self.client()
        r = await c.login(name, auth)
        assert r.status_code == 200, r.text
        return c, auth


class Clock:
    """The portal's clock, movable forward (session timeouts) without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest_asyncio.fixture
async def start_stack(tmp_path, loop_errors):
    """``await start_stack(**portal_config kwargs)``: gateway + portal, stopped afterwards."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, ctx: loop_errors.append(ctx))
    stacks: list[Stack] = []

    async def _start(limits: Limits = TEST_LIMITS, clock: Any = time.time, **kw: Any) -> Stack:
        folder = tmp_path / f"gw{len(stacks)}"
        portal_config(folder, **kw)
        cfg = load_config(folder / "gateway.yaml")
        creds = issue_keys(cfg)
        gw = Gateway(cfg)
        await gw.start()
        stop = asyncio.Event()
        running = RunningGateway(gw, stop, asyncio.create_task(gw.serve(stop)), creds)
        portal = PortalServer(cfg, limits=limits, clock=clock)
        stack = Stack(folder, cfg, running, portal, [])
        stacks.append(stack)
        await portal.start()
        return stack

    yield _start
    for s in stacks:
        for c in s.clients:
            await c.close()
        await s.portal.stop()
        if not s.gateway.task.done():
            await s.gateway.stop()


