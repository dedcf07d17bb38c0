"""Entitlements, checked on the server for every request: an administrator reads and changes
only the groups, sessions, key pairs and audit trail of the entities that list them (403
otherwise, the same answer whether the entity exists or not; another entity's key pair is a
404 exactly like a pair that does not exist); an operator acts for every entity. Every refusal
is in the audit trail, with who and from which address."""

from __future__ import annotations

import pytest

from .test_api_gateway import GROUP

pytestmark = pytest.mark.asyncio


async def test_an_administrator_is_refused_another_entitys_everything(start_stack):
    s = await start_stack()
    carl, _ = await s.logged_in("carl")
    assert (await carl.post("/entities/CLEARCO/groups", json=GROUP)).status_code == 201
    key = (await carl.post("/entities/CLEARCO/keys", json={"session_id": "CLR"})).json()
    tina, tina_auth = await s.logged_in("tina")

    e = "/entities/CLEARCO"
    requests = [("GET", f"{e}/groups", None), ("GET", f"{e}/groups/clearco-fills", None),
                ("POST", f"{e}/groups", {**GROUP, "name": "mine"}),
                ("PUT", f"{e}/groups/clearco-fills", GROUP),
                ("DELETE", f"{e}/groups/clearco-fills", None), ("GET", f"{e}/sessions", None),
                ("GET", f"{e}/keys", None), ("POST", f"{e}/keys", {"session_id": "CLR"}),
                ("GET", f"{e}/audit", None)]
    answers = [await tina.request(m, p, json=body) for m, p, body in requests]
    assert {(a.status_code, a.content) for a in answers} == {
        (403, b'{"error":"not entitled to this registered entity"}')}
    unknown = await tina.get("/entities/NOSUCH/groups")
    assert (unknown.status_code, unknown.content) == (403, answers[0].content)

    # another entity's key pair answers like one that does not exist, whatever the code
    mine_not = await tina.post(f"/keys/{key['access_key_id']}/download",
                               json={"code": await tina_auth.code()})
    nowhere = await tina.post("/keys/AAAAAAAAAAAAAAAAAAAA/download", json={"code": "000000"})
    assert (mine_not.status_code, mine_not.content) == (nowhere.status_code, nowhere.content)
    assert mine_not.status_code == 404
    assert (await tina.delete(f"/keys/{key['access_key_id']}", json={})).status_code == 404

    # nothing changed, and every refusal is audited against CLEARCO, with tina's address
    groups = (await carl.get("/entities/CLEARCO/groups")).json()["groups"]
    assert [g["name"] for g in groups] == ["clearco-fills"]
    assert len((await carl.get("/entities/CLEARCO/keys")).json()["keys"]) == 3
    trail = (await carl.get("/entities/CLEARCO/audit")).json()["records"]
    denied = [r for r in trail if r["action"] == "denied"]
    assert len(denied) == len(requests) + 2
    assert all(r["who"] == "tina" and r["outcome"] == "denied" and r["address"] == "127.0.0.1"
               for r in denied)
    # tina's own entity is hers
    assert (await tina.get("/entities/TRADECO/groups")).json() == {"entity": "TRADECO",
                                                                   "groups": []}
    own = (await tina.get("/entities/TRADECO/sessions")).json()["sessions"]
    assert {r["comp_id"] for r in own} == {"ABC123N", "ABD123N"}
    assert {k["session_id"] for k in (await tina.get("/entities/TRADECO/keys")).json()["keys"]} \
        == {"ABC", "ABD"}
    trail = (await tina.get("/entities/TRADECO/audit")).json()["records"]
    assert all(r["entity"] == "TRADECO" for r in trail)


async def test_an_operator_acts_for_every_entity(start_stack):
    s = await start_stack()
    olga, _ = await s.logged_in("olga")
    me = (await olga.get("/me")).json()
    assert me["role"] == "operator" and set(me["entities"]) == {"TRADECO", "CLEARCO"}
    for entity in ("TRADECO", "CLEARCO"):
        for what in ("groups", "sessions", "keys", "audit"):
            assert (await olga.get(f"/entities/{entity}/{what}")).status_code == 200
    assert (await olga.post("/entities/CLEARCO/groups", json=GROUP)).status_code == 201
    missing = await olga.get("/entities/NOSUCH/groups")
    assert missing.status_code == 404 and "NOSUCH" in missing.json()["error"]


async def test_pages_are_refused_too(start_stack):
    """The HTML pages go through the same checks (a page cannot do what the API refuses)."""
    s = await start_stack()
    tina, _ = await s.logged_in("tina")
    for path in ("/entities/CLEARCO/groups", "/entities/CLEARCO/keys",
                 "/entities/CLEARCO/sessions", "/entities/CLEARCO/audit"):
        r = await tina.http.get(path)
        assert r.status_code == 403 and "not entitled" in r.text
    r = await tina.http.post("/entities/CLEARCO/keys",
                             data={"csrf_token": tina.csrf, "session_id": "CLR"})
    assert r.status_code == 403
    home = await tina.http.get("/home")
    assert "TRADECO" in home.text and "CLEARCO" not in home.text
