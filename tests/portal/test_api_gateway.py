"""The portal changes what a running gateway does, as the command line does: a group created in
the portal routes real copies within a second (no restart), edited while copies flow it loses
and duplicates none, deleted it stops; a key pair generated in the portal signs a Logon the
gateway accepts at once, and once deleted (with a fresh code) is refused. Real gateway, real
portal, real FIX clients (simulators/), all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest
import simplefix

from dcgateway.auth import AUTH_FAILED_TEXT, CSV_COLUMNS, logon_signer
from simulators.fixclient import FixClient, get
from tests.integration.test_fanout import drain, fill, new_order

pytestmark = pytest.mark.asyncio

GROUP = {"name": "clearco-fills", "front_end": "fix",
         "filters": {"categories": ["execution"], "account": {"exclude": ["ACCT09"]}},
         "sources": ["ABC123N"], "targets": ["CLRFIX44"]}


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def routed(stack, name: str | None) -> bool:
    names = {g.name for g in stack.gateway.gw.maintenance.config.groups}
    return name in names if name else not names


async def logged_on(stack, comp_id: str) -> FixClient:
    c = stack.gateway.client(comp_id)
    reply = await c.logon()
    assert get(reply, 35) == "A", reply
    return c


async def sync(source: FixClient) -> None:
    """Wait until the gateway has processed everything the source sent (TestRequest echo)."""
    source.send("1", [(112, "sync")])
    await source.expect("0", skip=())


async def test_a_group_made_in_the_portal_routes_copies_without_a_restart(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    target = await logged_on(s, "CLRFIX44")
    source = await logged_on(s, "ABC123N")

    r = await c.post("/entities/CLEARCO/groups", json=GROUP)
    assert r.status_code == 201, r.text
    assert r.json() == {"entity": "CLEARCO", **GROUP}
    await until(lambda: routed(s, "clearco-fills"), what="the gateway to load the group")
    assert (await c.get("/entities/CLEARCO/groups/clearco-fills")).json()["name"] == \
        "clearco-fills"

    source.send("8", fill(exec_id="E1"))
    source.send("8", fill(exec_id="E2", account="ACCT09"))       # excluded by the filter
    source.send("D", new_order())                                # not a category of the group
    got = await drain(target, count=1)
    assert [(get(m, 35), get(m, 17), get(m, 115)) for m in got] == [("8", "E1", "ABC123N")]

    # edit while copies flow: every fill sent arrives exactly once
    sent = [f"F{i}" for i in range(60)]

    async def pump() -> None:
        for exec_id in sent:
            source.send("8", fill(exec_id=exec_id))
            await asyncio.sleep(0.005)
    pumping = asyncio.create_task(pump())
    await asyncio.sleep(0.05)
    edited = {**GROUP, "filters": {"categories": ["execution", "order"]}}
    r = await c.put("/entities/CLEARCO/groups/clearco-fills", json=edited)
    assert r.status_code == 200 and r.json()["filters"] == {"categories": ["execution", "order"]}
    await pumping
    await until(lambda: s.gateway.gw.maintenance.config.groups[0].filters.account is None,
                what="the gateway to load the edited group")
    source.send("D", new_order("N2"))                           # orders now copied too
    await sync(source)
    got = await drain(target, count=len(sent) + 1)
    fills = [get(m, 17) for m in got if get(m, 35) == "8"]
    assert fills == sent                                         # none lost, none doubled
    assert [get(m, 11) for m in got if get(m, 35) == "D"] == ["N2"]

    r = await c.delete("/entities/CLEARCO/groups/clearco-fills")
    assert r.status_code == 200 and r.json()["deleted"]["name"] == "clearco-fills"
    await until(lambda: routed(s, None), what="the gateway to drop the group")
    source.send("8", fill(exec_id="after-delete"))
    await sync(source)
    assert await drain(target, quiet=0.3) == []
    assert (await c.get("/entities/CLEARCO/groups/clearco-fills")).status_code == 404
    await source.close()
    await target.close()
    trail = [(e["kind"], e["action"]) for e in s.web.state.audit.entries("CLEARCO")]
    for action in ("group_create", "group_replace", "group_delete"):
        assert ("groups", action) in trail and ("portal", action) in trail


async def test_refused_groups_answer_422_with_paths_relative_to_the_entry(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")

    async def refused(entry: dict, path: str = "/entities/CLEARCO/groups",
                      method: str = "POST") -> list[dict]:
        r = await c.request(method, path, json=entry)
        assert r.status_code == 422, r.text
        body = r.json()
        assert set(body) == {"error", "errors"}
        assert all(set(e) == {"path", "message"} for e in body["errors"])
        return body["errors"]

    errors = await refused({**GROUP, "targets": ["CLR001N", "ABC123N"],
                            "filters": {"categories": ["fills"]}})
    by_path = {e["path"]: e["message"] for e in errors}
    assert set(by_path) == {"filters.categories[0]", "targets[1]"}
    assert "'fills' is not allowed" in by_path["filters.categories[0]"]
    assert "source session" in by_path["targets[1]"] and "expected" in by_path["targets[1]"]
    # another firm's target and no session at all: the same words, naming no other entity
    tina, _ = await s.logged_in("tina")
    answers = []
    for target in ("CLR001N", "NOSUCH1"):
        r = await tina.post("/entities/TRADECO/groups", json={**GROUP, "targets": [target]})
        assert r.status_code == 422, r.text
        [message] = [e["message"] for e in r.json()["errors"] if e["path"] == "targets[0]"]
        answers.append(message.replace(target, "X"))
        assert "CLEARCO" not in r.text
    assert answers[0] == answers[1] and answers[0].startswith(
        "'X' is not a target session of this entity")
    assert (await refused({**GROUP, "entity": "TRADECO"}))[0]["path"] == "entity"
    assert (await refused({"name": "x"}))[0]["path"] in ("front_end", "filters", "sources",
                                                         "targets")
    assert (await c.post("/entities/CLEARCO/groups", json=GROUP)).status_code == 201
    assert (await refused(GROUP))[0]["path"] == "name"                   # duplicate name
    clash = await refused({**GROUP, "name": "other", "front_end": "ilink2"})
    assert clash[0]["path"] == "front_end" and "one front end per target" in clash[0]["message"]
    errors = await refused({**GROUP, "sources": []},
                           path="/entities/CLEARCO/groups/clearco-fills", method="PUT")
    assert errors[0]["path"] == "sources"
    assert (await c.put("/entities/CLEARCO/groups/nope", json=GROUP)).status_code == 404
    refusals = [e for e in s.web.state.audit.entries("CLEARCO") if e.get("outcome") == "refused"]
    assert refusals and all(e["kind"] == "portal" for e in refusals)


async def test_a_key_made_in_the_portal_signs_a_logon_the_gateway_accepts(start_stack):
    s = await start_stack()
    c, auth = await s.logged_in("carl")
    r = await c.post("/entities/CLEARCO/keys", json={"session_id": "CLRFIX44"})
    assert r.status_code == 201, r.text
    key = r.json()
    assert set(key) == {"session_id", "access_key_id", "secret_key", "created", "expires"}
    old_id = s.gateway.creds["CLRFIX44"][0]

    client = s.gateway.client("CLRFIX44", signer=logon_signer(key["access_key_id"],
                                                              key["secret_key"]))
    reply = await client.logon()
    assert get(reply, 35) == "A"
    await client.logout()
    await client.close()

    listed = (await c.get("/entities/CLEARCO/keys")).json()["keys"]
    assert all("secret_key" not in k for k in listed)
    older = next(k for k in listed if k["access_key_id"] == old_id)
    assert older["expires"] < key["expires"]                   # expires 4 weeks later

    third = await c.post("/entities/CLEARCO/keys", json={"session_id": "CLRFIX44"})
    assert third.status_code == 409 and "delete_access_key_id" in third.json()["error"]
    assert (await c.post("/entities/CLEARCO/keys", json={"session_id": "ABC"})).status_code \
        == 403                                                  # TRADECO's Session ID

    path = f"/keys/{key['access_key_id']}"
    assert (await c.post(f"{path}/download", json={"code": "000000"})).status_code == 403
    assert (await c.post(f"{path}/download", json={})).status_code == 403
    # downloaded as often as needed, by any user entitled to it (three authenticators: each
    # gives three fresh codes at once, so no test waits for the clock)
    olga, olga_auth = await s.logged_in("olga")
    for client, codes in ((c, auth), (olga, olga_auth)):
        got = await client.post(f"{path}/download", json={"code": await codes.code()})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        assert "attachment" in got.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(got.text)))
        assert tuple(rows[0]) == CSV_COLUMNS and rows[1][:3] == [
            "CLRFIX44", key["access_key_id"], key["secret_key"]]
    reused = await olga.delete(path, json={"code": olga_auth.used_code()})
    assert reused.status_code == 403                            # a code works once
    oscar, oscar_auth = await s.logged_in("oscar")
    gone = await oscar.delete(path, json={"code": await oscar_auth.code()})
    assert gone.status_code == 200 and gone.json()["status"] == "deleted"

    refused = s.gateway.client("CLRFIX44", signer=logon_signer(key["access_key_id"],
                                                               key["secret_key"]))
    answer = await refused.logon()
    assert get(answer, 35) == "5" and AUTH_FAILED_TEXT in get(answer, 58)
    await refused.close()
    trail = [e["action"] for e in s.web.state.audit.entries("CLEARCO")]
    assert {"create", "download", "delete", "key_create", "key_download", "key_delete",
            "step_up_failed"} <= set(trail)


async def test_sessions_view_shows_connections_sequences_and_port_closures(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    target = await logged_on(s, "CLR001N")
    s.web.state.closures.lock("CLRFIX44", now=0.0, reason="test")

    def rows() -> dict:
        return {r["comp_id"]: r for r in s.web.ops.sessions(_operator(s), "CLEARCO")["sessions"]}
    await until(lambda: rows()["CLR001N"]["connected"], what="status.json to show the logon")
    body = (await c.get("/entities/CLEARCO/sessions")).json()
    assert body["gateway_running"] is True
    got = {r["comp_id"]: r for r in body["sessions"]}
    assert set(got) == {"CLR001N", "CLRFIX44"}                   # only CLEARCO's sessions
    assert got["CLR001N"]["connected"] and got["CLR001N"]["next_out"] >= 2
    assert got["CLRFIX44"]["port_closed"] and not got["CLR001N"]["port_closed"]
    assert set(got["CLR001N"]) >= {"comp_id", "role", "profile", "begin_string", "session_id",
                                   "connected", "next_in", "next_out", "port_closed"}
    await target.close()


def _operator(s):
    from dcgateway.portal.service import Actor
    return Actor(s.web.accounts.people["olga"], None)


async def test_copies_are_received_by_a_plain_fix_engine(start_stack):
    """The copy a portal-made group delivers parses as a valid FIX message (simplefix)."""
    s = await start_stack()
    c, _ = await s.logged_in("olga")                             # an operator may act for it
    assert (await c.post("/entities/CLEARCO/groups", json=GROUP)).status_code == 201
    await until(lambda: routed(s, "clearco-fills"))
    target = await logged_on(s, "CLRFIX44")
    source = await logged_on(s, "ABC123N")
    source.send("8", fill(exec_id="X1"))
    (copy,) = await drain(target, count=1)
    assert isinstance(copy, simplefix.FixMessage) and get(copy, 8) == "FIX.4.4"
    await source.close()
    await target.close()


async def test_an_unexpected_fault_answers_500_with_a_reason_and_the_security_headers(
        start_stack, caplog):
    s = await start_stack()
    c, _ = await s.logged_in("carl")

    def boom(*args, **kwargs):
        raise RuntimeError("a bug in the portal")
    s.web.ops.sessions = boom
    page = await c.http.get("/entities/CLEARCO/sessions")
    api = await c.get("/entities/CLEARCO/sessions")
    for r in (page, api):
        assert r.status_code == 500
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        assert "internal failure" in r.text and "Traceback" not in r.text
        assert "a bug in the portal" not in r.text
    assert api.json() == {"error": "internal failure"}
    assert "unexpected failure in GET /entities/CLEARCO/sessions" in caplog.text


async def test_the_sessions_page_lists_the_entitys_sessions(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    s.web.state.closures.lock("CLRFIX44", now=0.0, reason="test")
    page = await c.http.get("/entities/CLEARCO/sessions")
    assert page.status_code == 200, page.text
    assert "Sessions of CLEARCO" in page.text
    assert "CLR001N" in page.text and "CLRFIX44" in page.text and "closed" in page.text
    assert "ABC123N" not in page.text                     # another entity's session


async def test_a_filter_field_that_cannot_be_read_is_shown_on_step_4_not_a_500(start_stack):
    s = await start_stack()
    c, _ = await s.logged_in("carl")
    http = c.http
    token = c.csrf
    assert (await http.get("/groups/new")).status_code in (200, 303)
    steps = {1: {"entity": "CLEARCO"}, 2: {"name": "quoted"},
             3: {"front_end": "fix", "targets": "CLRFIX44"},
             4: {"categories": "execution", "account_include": '"ACC,01'}}
    for n, fields in steps.items():
        r = await http.post(f"/wizard/{n}", data={**fields, "csrf_token": token})
        assert r.status_code == 303
    assert r.headers["location"].endswith("/wizard/4")             # refused on its step
    page = await http.get("/wizard/4")
    assert page.status_code == 200 and "a value in quotes is not closed" in page.text
    for n in (5, 6):                                                # the other pages still work
        assert (await http.get(f"/wizard/{n}")).status_code == 200
    done = await http.post("/wizard/6", data={"csrf_token": token})  # submitted anyway: back to 4
    assert done.status_code == 303 and done.headers["location"].endswith("/wizard/4")
    assert "quoted" not in {g.name for g in s.web.state.groups.current()}
