"""Secure logon end to end: keys made with the real CLI (a subprocess), a gateway on a real socket,
every refusal answered with a Logout whose text does not say which check failed, port closure and
`dcgateway sessions unlock`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dcgateway.auth import PORT_CLOSURE_TEXT, logon_signer
from dcgateway.config import load_config
from simulators.fixclient import FixClient, get, sending_time

from .conftest import REPO, key_manager

pytestmark = pytest.mark.asyncio
#: The operator contract's gateway.yaml and groups.yaml, as the venue hands them to users.
CONTRACT = REPO / "tests" / "contract"


def cli(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcgateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def contract_config(tmp_path) -> Path:
    """The contract's gateway.yaml and groups.yaml as written, but listening on port 0."""
    folder = tmp_path / "contract"
    folder.mkdir()
    shutil.copy(CONTRACT / "groups.yaml", folder / "groups.yaml")
    text = (CONTRACT / "gateway.yaml").read_text()
    text = text.replace("port: 9878", "port: 0").replace("port: 9100", "port: 0")
    (folder / "gateway.yaml").write_text(text)
    return folder / "gateway.yaml"


def create_key(config: Path, session_id: str) -> dict:
    proc = cli("keys", "create", "--session-id", session_id, "--json", config=config)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def start(start_gateway, config: Path):
    return await start_gateway(config.parent)


def client(gw, sender: str, access_key_id: str, secret: str, **kw) -> FixClient:
    return FixClient("127.0.0.1", gw.port, sender, signer=logon_signer(access_key_id, secret),
                     sender_sub_id="OPS", **kw)


async def refused(c: FixClient, **logon_kw) -> str:
    reply = await c.logon(**logon_kw)
    assert get(reply, 35) == "5", reply
    assert await c.wait_closed() == []
    await c.close()
    return get(reply, 58)


async def test_key_made_by_cli_logs_on_and_bad_cases_are_refused(contract_config, start_gateway):
    key = create_key(contract_config, "ABC")
    other = create_key(contract_config, "ABD")
    gw = await start(start_gateway, contract_config)

    good = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    reply = await good.logon()
    assert get(reply, 35) == "A" and 1402 not in dict(reply.pairs)   # reply carries no signature
    await good.logout()
    await good.close()

    # tampered signature: flip the signature's last character after signing
    def tampered(header, body):
        creds = logon_signer(key["access_key_id"], key["secret_key"])(header, body)
        return [(t, (v[:-1] + ("A" if v[-1] != "A" else "B")) if t == 1402 else v) for t, v in creds]
    c = FixClient("127.0.0.1", gw.port, "ABC123N", signer=tampered, sender_sub_id="OPS")
    assert await refused(c) == "authentication failed"

    # a valid key of another Session ID (ABD) used by ABC123N
    assert await refused(client(gw, "ABC123N", other["access_key_id"], other["secret_key"])) \
        == "authentication failed"

    # stale SendingTime (signed, so only the clock check can fail)
    stale = sending_time(datetime.now(timezone.utc).timestamp() - 120)
    assert await refused(client(gw, "ABC123N", key["access_key_id"], key["secret_key"]),
                         when=stale) == "authentication failed"

    # 122 on a Logon is answered with a Logout
    c = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    text = await refused(c, extra_header=[(122, sending_time())])
    assert text

    reasons = set(gw.metric_labels("dcgateway_logons_rejected_total", "reason"))
    assert {"bad_signature", "wrong_session_id", "stale_sending_time"} <= reasons

    # after four failures within 60 s, the next good Logon still works (it resets the count)
    c = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    c.next_seq, c.expected_in = good.next_seq, good.expected_in
    assert get(await c.logon(), 35) == "A"
    await c.logout()
    await c.close()


async def test_expired_deleted_and_new_keys_take_effect_without_restart(contract_config, start_gateway):
    cfg = load_config(contract_config)
    km = key_manager(cfg)
    km.store.ensure_master_key()
    long_ago = datetime.now(timezone.utc) - timedelta(days=400)
    expired = km.create("ABC", who="test", now=long_ago)
    gw = await start(start_gateway, contract_config)

    assert await refused(client(gw, "ABC123N", expired.access_key_id, expired.secret_key)) \
        == "authentication failed"

    key = create_key(contract_config, "ABC")            # created while the gateway runs
    c = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    assert get(await c.logon(), 35) == "A"
    await c.logout()
    await c.close()

    proc = cli("keys", "delete", key["access_key_id"], config=contract_config)
    assert proc.returncode == 0, proc.stderr
    assert await refused(client(gw, "ABC123N", key["access_key_id"], key["secret_key"])) \
        == "authentication failed"
    reasons = set(gw.metric_labels("dcgateway_logons_rejected_total", "reason"))
    assert {"expired_key", "deleted_key"} <= reasons


async def test_port_closure_on_fifth_invalid_logon_until_unlocked(contract_config, start_gateway):
    key = create_key(contract_config, "ABC")
    gw = await start(start_gateway, contract_config)
    texts = []
    for _ in range(5):
        bad = client(gw, "ABC123N", key["access_key_id"], "A" * 43)
        texts.append(await refused(bad))
    assert texts[:4] == ["authentication failed"] * 4
    assert texts[4] == PORT_CLOSURE_TEXT
    # locked: even a correctly signed Logon is refused with the closure text
    assert await refused(client(gw, "ABC123N", key["access_key_id"], key["secret_key"])) \
        == PORT_CLOSURE_TEXT
    # another session is not affected
    abd = create_key(contract_config, "ABD")
    c = client(gw, "ABD123N", abd["access_key_id"], abd["secret_key"])
    assert get(await c.logon(), 35) == "A"
    await c.logout()
    await c.close()

    listing = cli("sessions", "list", "--json", config=contract_config)
    rows = {r["comp_id"]: r for r in json.loads(listing.stdout)["sessions"]}
    assert rows["ABC123N"]["locked"] is True and rows["ABD123N"]["locked"] is False
    assert json.loads(listing.stdout)["gateway_running"] is True

    proc = cli("sessions", "unlock", "ABC123N", "--as", "tina", config=contract_config)
    assert proc.returncode == 0, proc.stderr
    c = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    assert get(await c.logon(), 35) == "A"
    listing = cli("sessions", "list", "--json", config=contract_config)
    rows = {r["comp_id"]: r for r in json.loads(listing.stdout)["sessions"]}
    assert rows["ABC123N"]["connected"] is True and rows["ABC123N"]["locked"] is False
    await c.logout()
    await c.close()


async def test_unlock_refused_for_non_administrator(contract_config):
    proc = cli("sessions", "unlock", "ABC123N", "--as", "carl", config=contract_config)
    assert proc.returncode == 2 and "carl does not administer TRADECO" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_secret_never_in_gateway_log(contract_config, start_gateway, caplog):
    key = create_key(contract_config, "ABC")
    gw = await start(start_gateway, contract_config)
    caplog.set_level("DEBUG")
    for secret in (key["secret_key"], "B" * 43):
        c = client(gw, "ABC123N", key["access_key_id"], secret)
        reply = await c.logon()
        if get(reply, 35) == "A":
            await c.logout()
        await c.close()
    await asyncio.sleep(0.05)
    assert key["secret_key"] not in caplog.text
    assert key["access_key_id"] in caplog.text        # ids are fine to log


async def test_unreadable_key_store_refuses_new_logons_and_keeps_sessions(contract_config,
                                                                          start_gateway, caplog):
    key = create_key(contract_config, "ABC")
    other = create_key(contract_config, "ABD")
    gw = await start(start_gateway, contract_config)
    live = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    assert get(await live.logon(), 35) == "A"
    store = gw.gw.config.gateway.keystore.path
    good = store.read_bytes()
    store.write_bytes(good[:20] + bytes(b ^ 0x5A for b in good[20:60]) + good[60:])   # tampered
    caplog.set_level("ERROR")
    assert await refused(client(gw, "ABD123N", other["access_key_id"], other["secret_key"])) \
        == "authentication failed"
    assert "keystore_unavailable" in caplog.text
    live.send("1", [(112, "still-up")])                   # the logged-on session goes on
    assert get(await live.expect("0", skip=()), 112) == "still-up"
    store.write_bytes(good)                               # repaired: new Logons work again
    c = client(gw, "ABD123N", other["access_key_id"], other["secret_key"])
    assert get(await c.logon(), 35) == "A"
    await c.close()
    await live.close()


async def test_a_signed_logon_is_accepted_once(contract_config, start_gateway):
    """A captured Logon replayed byte for byte is refused like any authentication failure,
    whether its owner is still connected (no 789, no session state revealed) or has logged out
    (141=Y is not signed: a replay must not reset the session's sequences)."""
    key = create_key(contract_config, "ABC")
    gw = await start(start_gateway, contract_config)
    owner = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
    await owner.connect()
    captured = owner.logon_message(reset=True)
    owner.send_raw(captured)
    assert get(await owner.recv(), 35) == "A"
    for i in range(3):
        owner.send("D", [(11, f"R{i}"), (21, 1), (1, "ACCT01"), (55, "ESZ6"), (54, 1), (38, 1), (40, 1),
                         (60, "20261124-10:00:00")])

    async def replay() -> tuple:
        thief = client(gw, "ABC123N", key["access_key_id"], key["secret_key"])
        await thief.connect()
        thief.send_raw(captured)
        reply = await thief.recv()
        await thief.wait_closed()
        await thief.close()
        return get(reply, 35), get(reply, 58), get(reply, 789)

    assert await replay() == ("5", "authentication failed", None)        # owner connected
    await owner.logout()
    await owner.close()
    assert await replay() == ("5", "authentication failed", None)        # owner gone
    assert gw.gw.slots["ABC123N"].store.next_in == 6      # Logon, 3 orders, Logout: no reset
    assert gw.metric("dcgateway_logons_rejected_total", session="ABC123N",
                     reason="replayed_logon") == 2
