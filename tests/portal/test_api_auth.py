"""Enrolment, login, sessions and request checks through the JSON API of a real portal
(uvicorn on 127.0.0.1) beside a real gateway: invitations by the command line and by e-mail
(a real SMTP server), the same answer for every failed login, a TOTP code accepted once, the
lockout and ``users unlock``, ``users reset``, logout on the server, CSRF tokens and the Origin
check, cookie attributes, timeouts, security headers, rate limits and clear JSON errors."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from dcgateway.cli import main
from dcgateway.portal import Limits

from .conftest import PASSWORD, Authenticator, Clock

pytestmark = pytest.mark.asyncio


def cli_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


async def test_invite_by_cli_and_email_then_enrol_once(start_stack, smtp, capsys):
    ctl, inbox = smtp
    s = await start_stack(smtp_port=ctl.port)
    cfg = str(s.folder / "gateway.yaml")
    out = cli_json(capsys, "users", "invite", "carl", "--config", cfg)
    assert set(out) >= {"user", "enrol_url", "expires"} and out["user"] == "carl"
    assert out["emailed"] is True
    (to, mail), = inbox.messages
    assert to == ["carl@clearco.example"] and out["enrol_url"] in mail.get_payload()
    token = out["enrol_url"].rsplit("/", 1)[1]

    c = s.client()
    generic = await c.post("/enrol", json={"token": "x" * 43, "password": PASSWORD})
    assert generic.status_code == 400
    weak = await c.post("/enrol", json={"token": token, "password": "too short"})
    assert weak.status_code == 422 and "12" in weak.json()["error"]
    for wrong_type in ({"token": token, "password": 12345678901234}, {"token": token}):
        typed = await c.post("/enrol", json=wrong_type)
        assert (typed.status_code, typed.json()) == (422, {"error": "expected a password"})
    form = await c.http.post(f"/enrol/{token}", data={})        # the page's form, fields left out
    assert form.status_code in (400, 422) and "internal" not in form.text
    r = await c.post("/enrol", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["totp_uri"].startswith("otpauth://totp/")
    again = await c.post("/enrol", json={"token": token, "password": PASSWORD})
    assert (again.status_code, again.content) == (400, generic.content)
    auth = Authenticator(r.json()["totp_uri"])
    wrong = await c.post("/enrol/confirm", json={"token": token, "code": "000000"})
    assert (wrong.status_code, wrong.content) == (400, generic.content)
    ok = await c.post("/enrol/confirm", json={"token": token, "code": await auth.code()})
    assert ok.status_code == 200 and ok.json() == {"user": "carl", "enrolled": True}
    used = await c.post("/enrol/confirm", json={"token": token, "code": await auth.code()})
    assert (used.status_code, used.content) == (400, generic.content)
    page = await c.http.get(f"/enrol/{token}")
    assert page.status_code == 400 and "invalid, used or expired" in page.text

    users = {u["user"]: u for u in cli_json(capsys, "users", "list", "--config", cfg)["users"]}
    assert users["carl"]["enrolled"] and not users["tina"]["enrolled"]
    assert users["olga"]["role"] == "operator"


async def test_every_failed_login_gets_the_same_answer_and_a_code_works_once(start_stack):
    s = await start_stack()
    auth = await s.enrol("carl")
    s.invite("tina")                                     # invited, never enrolled
    c = s.client()
    answers = [
        await c.post("/login", json={"user": "carl", "password": "wrong password!",
                                     "code": await auth.code()}),
        await c.post("/login", json={"user": "carl", "password": PASSWORD, "code": "000000"}),
        await c.post("/login", json={"user": "nobody", "password": PASSWORD,
                                     "code": "123456"}),
        await c.post("/login", json={"user": "tina", "password": PASSWORD, "code": "123456"}),
        await c.post("/login", json={"user": 7, "password": None}),
    ]
    assert {(a.status_code, a.content) for a in answers} == {(401, b'{"error":"login failed"}')}
    assert all("set-cookie" not in a.headers for a in answers)

    r = await c.login("carl", auth)
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "carl" and body["role"] == "administrator"
    assert body["entities"] == ["CLEARCO"] and len(body["csrf_token"]) >= 32
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("dcgw_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie                        # plain HTTP (TLS: see test_portal_cli)
    sid = re.match(r"dcgw_session=([^;]+)", cookie).group(1)
    assert len(sid) >= 43                                # 256 random bits, base64url

    replay = await s.client().post("/login", json={"user": "carl", "password": PASSWORD,
                                                   "code": auth.used_code()})
    assert (replay.status_code, replay.content) == (401, answers[0].content)


async def test_fifth_failure_locks_until_users_unlock(start_stack, capsys):
    s = await start_stack()
    auth = await s.enrol("carl")
    c = s.client()
    for _ in range(5):
        r = await c.post("/login", json={"user": "carl", "password": "wrong password!",
                                         "code": "000000"})
        assert r.status_code == 401
    locked = await c.login("carl", auth)
    assert locked.status_code == 423 and "locked" in locked.json()["error"]
    cfg = str(s.folder / "gateway.yaml")
    users = {u["user"]: u for u in cli_json(capsys, "users", "list", "--config", cfg)["users"]}
    assert users["carl"]["locked"]
    assert cli_json(capsys, "users", "unlock", "carl", "--config", cfg)["was_locked"] is True
    assert (await c.login("carl", auth)).status_code == 200
    # unknown names lock the same way: nothing tells them apart
    for _ in range(5):
        await c.post("/login", json={"user": "ghost", "password": "x", "code": "000000"})
    ghost = await c.post("/login", json={"user": "ghost", "password": "x", "code": "000000"})
    assert ghost.status_code == 423 and ghost.content == locked.content
    trail = s.web.state.audit.entries("CLEARCO")
    actions = [e["action"] for e in trail if e.get("kind") == "portal"]
    assert actions.count("login_failed") == 5 and "login_locked" in actions


async def test_wrong_step_up_codes_lock_and_say_so(start_stack):
    """Wrong codes for a key's download count as failed logins: the 5th answers 423, ends
    the session, and is audited as the lockout it is."""
    s = await start_stack()
    c, auth = await s.logged_in("carl")
    key = (await c.post("/entities/CLEARCO/keys", json={"session_id": "CLRFIX44"})).json()
    path = f"/keys/{key['access_key_id']}/download"
    for _ in range(4):
        assert (await c.post(path, json={"code": "000000"})).status_code == 403
    fifth = await c.post(path, json={"code": "000000"})
    assert fifth.status_code == 423 and "locked" in fifth.json()["error"]
    assert (await c.get("/me")).status_code == 401                   # the session is over
    assert (await c.login("carl", auth)).status_code == 423
    failed = [e for e in s.web.state.audit.entries("CLEARCO") if e["action"] == "step_up_failed"]
    assert len(failed) == 5 and [e.get("locked_now") for e in failed] == [True] + [None] * 4


async def test_the_access_log_holds_one_line_per_request(start_stack, caplog):
    """A path cannot write a line of its own into the log: control characters are logged
    percent-encoded, as they came on the wire."""
    caplog.set_level("INFO", logger="dcgateway.portal.access")
    s = await start_stack()
    c = s.client()
    forged = "/x%0a2026-12-03 09:00:00,000 INFO dcgateway.portal.access: POST /api/v1/login 200"
    r = await c.http.get(forged.replace(" ", "%20") + "%00%e2%80%a8")
    assert r.status_code == 404
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "dcgateway.portal.access"
              and "/x" in rec.getMessage()]
    assert line.startswith("GET /x%0A2026-12-03 09:00:00,000 INFO dcgateway.portal.access: POST "
                           "/api/v1/login 200%00%E2%80%A8 404 ")
    assert "\n" not in line and "\x00" not in line


async def test_logout_reset_and_a_new_session_id_at_every_login(start_stack, capsys):
    s = await start_stack()
    c, auth = await s.logged_in("carl")
    first = c.http.cookies.get("dcgw_session")
    again = await c.login("carl", auth)                 # logging in again: a new id
    second = c.http.cookies.get("dcgw_session")
    assert again.status_code == 200 and second != first
    stale = s.client()
    stale.http.cookies.set("dcgw_session", first)
    assert (await stale.get("/me")).status_code == 401  # the old session ended

    assert (await c.post("/logout", csrf=False)).status_code == 403     # CSRF on logout too
    assert (await c.post("/logout")).status_code == 200
    after = s.client()
    after.http.cookies.set("dcgw_session", second)
    assert (await after.get("/me")).status_code == 401  # ended on the server

    c2, auth2 = await s.logged_in("tina")
    assert (await c2.get("/me")).status_code == 200
    cfg = str(s.folder / "gateway.yaml")
    assert cli_json(capsys, "users", "reset", "tina", "--config", cfg)["reset"] is True
    assert (await c2.get("/me")).status_code == 401
    assert (await s.client().login("tina", auth2)).status_code == 401


async def test_csrf_token_and_origin_on_every_state_changing_request(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    other, _ = await s.logged_in("olga")
    group = {"name": "g1", "front_end": "fix", "filters": {"categories": ["execution"]},
             "sources": ["ABC123N"], "targets": ["CLRFIX44"]}
    path = "/entities/CLEARCO/groups"
    assert (await c.post(path, json=group, csrf=False)).status_code == 403
    wrong = await c.post(path, json=group, headers={"X-CSRF-Token": other.csrf})
    assert wrong.status_code == 403 and "CSRF" in wrong.json()["error"]
    evil = await c.post(path, json=group, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["error"]
    cross = await c.post(path, json=group, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert (await c.get(path)).json()["groups"] == []          # nothing was created
    ok = await c.post(path, json=group, headers={"Origin": s.url})
    assert ok.status_code == 201, ok.text
    for method in ("PUT", "DELETE"):
        r = await c.request(method, f"{path}/g1", json=group, csrf=False)
        assert r.status_code == 403
    assert (await c.post("/entities/CLEARCO/keys", json={"session_id": "CLR"},
                         csrf=False)).status_code == 403
    # the HTML forms too: a form post without the session's token is refused
    page = await c.http.post("/entities/CLEARCO/groups/g1/delete", data={})
    assert page.status_code == 403
    assert (await c.get(f"{path}/g1")).status_code == 200


async def test_refused_forged_requests_are_in_the_entitys_audit_trail(start_stack,
                                                                      monkeypatch):
    import os
    import threading
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    group = {"name": "g1", "front_end": "fix", "filters": {"categories": ["execution"]},
             "sources": ["ABC123N"], "targets": ["CLRFIX44"]}
    path = "/entities/CLEARCO/groups"
    assert (await c.post(path, json=group, csrf=False)).status_code == 403
    fsyncs_on_loop: list[int] = []
    real_fsync, loop_thread = os.fsync, threading.get_ident()

    def fsync(fd: int) -> None:
        if threading.get_ident() == loop_thread:
            fsyncs_on_loop.append(fd)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    assert (await c.post(path, json=group, headers={"Origin": "http://evil.example"})
            ).status_code == 403
    assert fsyncs_on_loop == []              # its audit entry is written in a worker thread
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (await c.post(path, json=group, headers={"Sec-Fetch-Site": "cross-site"})
            ).status_code == 403
    trail = [e for e in (await c.get("/entities/CLEARCO/audit")).json()["records"]
             if e.get("action") == "denied"]
    assert [e["request"] for e in trail[:3]] == ["forged", "forged", "csrf"]   # newest first
    assert all(e["who"] == "carl" and e["outcome"] == "denied" and e["path"] ==
               "/api/v1" + path for e in trail[:3])
    assert trail[0]["reason"] == "cross-origin request refused"


async def test_a_key_request_without_a_session_id_is_a_bad_request_not_a_refusal(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    for body in ({}, {"session_id": None}, {"session_id": ["CLRFIX44"]}, {"session_id": ""}):
        r = await c.post("/entities/CLEARCO/keys", json=body)
        assert r.status_code == 400 and "session_id" in r.json()["error"], (body, r.text)
        assert "CLRFIX44" in r.json()["error"]                     # what is expected
    assert (await c.post("/entities/CLEARCO/keys", json={"session_id": "NOPE"})
            ).status_code == 403
    denied = [e for e in s.web.state.audit.entries("CLEARCO") if e.get("action") == "denied"]
    assert [e.get("session_id") for e in denied] == ["NOPE"]      # only the real refusal


async def test_idle_and_absolute_timeouts(start_stack):
    clock = Clock()
    s = await start_stack(clock=clock, idle=60, absolute=600)
    idle, _ = await s.logged_in("carl")
    busy, _ = await s.logged_in("tina")
    assert (await idle.get("/me")).status_code == 200
    clock.offset += 50
    assert (await busy.get("/me")).status_code == 200
    assert (await idle.get("/me")).status_code == 200       # 50 s idle: still on
    clock.offset += 61
    assert (await busy.get("/me")).status_code == 401       # 61 s idle: over
    clock.offset = started = 0.0            # (TOTP codes follow the real clock)
    busy, _ = await s.logged_in("olga")
    while clock.offset + 50 < started + 600:
        clock.offset += 50                                   # busy, never idle...
        assert (await busy.get("/me")).status_code == 200
    clock.offset = started + 600
    assert (await busy.get("/me")).status_code == 401       # ...but 600 s old: over


async def test_security_headers(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    for r in (await c.http.get("/login"), await c.get("/me"), await c.http.get("/home")):
        h = r.headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src 'self'" in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
        assert h["cache-control"] == "no-store"
        assert h["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in h          # plain HTTP
        assert "server" not in h
    css = await c.http.get("/static/portal.css")
    assert css.status_code == 200 and css.headers.get("cache-control") != "no-store"


async def test_rate_limits(start_stack):
    s = await start_stack(limits=Limits(api_rate=0.1, api_burst=3))
    c = s.client()
    answers = [await c.post("/login", json={"user": "x", "password": "y", "code": "1"})
               for _ in range(12)]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [401] * 5 and 429 in codes           # 10 a burst, then 1 per 5 s
    limited = answers[codes.index(429)]
    assert int(limited.headers["retry-after"]) >= 1 and "too many" in limited.json()["error"]
    s.web.login_limiter.burst = 1000                        # the API limit, per user
    s.web.login_limiter._buckets.clear()
    c, _ = await s.logged_in("carl")
    got = [(await c.get("/me")).status_code for _ in range(5)]
    assert got[:3] == [200] * 3 and got[3:] == [429, 429]


async def test_bad_requests_get_clear_json_answers(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    r = await c.post("/entities/CLEARCO/groups", content=b"{not json")
    assert r.status_code == 400 and r.json() == {"error": "the body is not valid JSON"}
    r = await c.post("/entities/CLEARCO/groups", json=[1, 2])
    assert r.status_code == 400 and r.json()["error"] == "expected a JSON object"
    r = await c.post("/entities/CLEARCO/groups", content=b"x" * 70_000)
    assert r.status_code == 413 and "body" in r.json()["error"]
    assert (await c.get("/nothing/here")).json() == {"error": "not found"}
    r = await c.request("PATCH", "/me")
    assert r.status_code == 405 and r.json() == {"error": "method not allowed"}
    anonymous = s.client()
    r = await anonymous.get("/entities/CLEARCO/groups")
    assert r.status_code == 401 and r.json() == {"error": "not logged in"}
    r = await anonymous.http.get("/entities/CLEARCO/groups")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_no_secret_reaches_a_log_line_or_the_audit_trail(start_stack, caplog):
    caplog.set_level("DEBUG")
    s = await start_stack()
    c = s.client()
    token = s.invite("carl")
    r = await c.post("/enrol", json={"token": token, "password": PASSWORD})
    uri = r.json()["totp_uri"]
    auth = Authenticator(uri)
    await c.post("/enrol/confirm", json={"token": token, "code": await auth.code()})
    assert (await c.http.get(f"/enrol/{token}")).status_code == 400
    login = await c.login("carl", auth)
    sid = c.http.cookies.get("dcgw_session")
    key = (await c.post("/entities/CLEARCO/keys", json={"session_id": "CLRFIX44"})).json()
    csv = await c.post(f"/keys/{key['access_key_id']}/download",
                       json={"code": await auth.code()})
    assert csv.status_code == 200 and key["secret_key"] in csv.text
    secrets = [PASSWORD, token, auth.totp.secret, sid, login.json()["csrf_token"],
               key["secret_key"]]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                       if r.name.startswith(("dcgateway", "uvicorn")))   # not the test's httpx
    audit = "".join(p.read_text() for p in (s.folder / "var").glob("*audit*.jsonl"))
    assert "/enrol/..." in logged                         # the access log saw the page...
    for secret in secrets:
        assert secret not in logged and secret not in audit   # ...but no secret
    assert "key_download" in audit and "127.0.0.1" in audit


async def test_healthz_needs_no_login(start_stack):
    s = await start_stack()
    async with httpx.AsyncClient(base_url=s.url) as h:
        r = await h.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}
