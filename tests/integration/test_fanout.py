"""Drop copy fan-out end to end: a real gateway, real sockets, the contract's groups."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
import simplefix

from dcgateway.fix.codec import Decoder
from dcgateway.fix.dropcopy import unwrap_rtrf
from dcgateway.vocab import Role
from simulators.fixclient import FixClient, get

from .conftest import REPO, write_config

pytestmark = pytest.mark.asyncio
#: The operator contract's gateway.yaml and groups.yaml, as the venue hands them to users.
CONTRACT = REPO / "tests" / "contract"


def fill(account: str = "ACCT01", symbol: str = "ESZ6", exec_id: str = "E1") -> list:
    return [(37, "O1"), (11, "C1"), (17, exec_id), (20, 0), (150, 2), (39, 2), (1, account),
            (55, symbol), (207, "XCME"), (54, 1), (38, 10), (32, 10), (31, "4500.25"),
            (151, 0), (14, 10), (6, "4500.25")]


def new_order(clordid: str = "N1", account: str = "ACCT01") -> list:
    return [(11, clordid), (21, 1), (1, account), (55, "ESZ6"), (54, 1), (38, 5), (40, 2),
            (44, "4500"), (60, "20261124-10:00:00")]


async def cli(*argv: str, timeout: float = 60) -> tuple[int, str, str]:
    """``python -m dcgateway ARGV`` as a real process, while this loop (and the gateway in it)
    runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dcgateway", *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None and "Traceback" not in err.decode()
    return proc.returncode, out.decode(), err.decode()


async def connect_all(gw, *names: str) -> dict[str, FixClient]:
    clients = {}
    for n in names:
        c = gw.client(n)
        reply = await c.logon()
        assert get(reply, 35) == "A", (n, reply)
        clients[n] = c
    return clients


async def drain(c: FixClient, quiet: float = 0.3, count: int = 0,
                timeout: float = 20) -> list[simplefix.FixMessage]:
    """Every message until nothing arrives for ``quiet`` seconds once at least ``count`` came
    (a loaded machine may pause inside a long burst); bounded: at most ``timeout`` s."""
    got: list[simplefix.FixMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if len(got) < count:
            try:
                m = await c.recv(max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                return got
            if m is None:
                return got
            if get(m, 35) == "1":
                c.send("0", [(112, get(m, 112))])
            elif get(m, 35) != "0":
                got.append(m)
            continue
        try:
            m = await c.recv(quiet)
        except asyncio.TimeoutError:
            return got
        if m is None:
            return got
        if get(m, 35) == "1":
            c.send("0", [(112, get(m, 112))])
            continue
        if get(m, 35) != "0":
            got.append(m)
    return got


async def close_all(clients) -> None:
    for c in clients.values():
        await c.close()


async def test_copies_follow_the_contract_groups_in_both_formats(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "ABD123N", "CLR001N", "CLRFIX44")
    src = cl["ABC123N"]
    raw_fill = src.send("8", fill())
    src.send("8", fill(symbol="GEZ6", exec_id="E2"))          # excluded for CLR001N
    src.send("8", fill(account="ACCT09", exec_id="E3"))       # account not in CLR001N's list
    src.send("D", new_order())                               # order: only CLRFIX44's group
    src.send("BZ", [(1369, "MA1"), (1373, 1), (1374, 7), (1375, 1), (55, "ESZ6")])   # mass action: no group
    cl["ABD123N"].send("8", fill(account="ACCT02", exec_id="E4"))   # ABD123N: only CLR001N's group

    ilink = await drain(cl["CLR001N"])
    fixc = await drain(cl["CLRFIX44"])
    assert [get(m, 35) for m in ilink] == ["n", "n"]
    inner = [Decoder().feed(unwrap_rtrf(Decoder().feed(m.encode())[0]))[0] for m in ilink]
    assert inner[0].raw == raw_fill                           # the original, byte for byte
    assert [(i.header[49], i.get(17)) for i in inner] == [(b"ABC123N", b"E1"), (b"ABD123N", b"E4")]
    assert [int(get(m, 34)) for m in ilink] == [2, 3]          # its own seq after its Logon reply

    assert [get(m, 35) for m in fixc] == ["8", "8", "8", "D"]
    assert [get(m, 17) for m in fixc[:3]] == ["E1", "E2", "E3"]
    first = Decoder().feed(fixc[0].encode())[0]
    orig = Decoder().feed(raw_fill)[0]
    assert first.begin_string == b"FIX.4.4"
    assert (first.header[49], first.header[56], first.header[115], first.header[116]) == \
        (b"DCGW", b"CLRFIX44", b"ABC123N", b"OPS")
    assert first.header[122] == orig.header[52]
    # the body as sent, but valid FIX 4.4: ExecTransType (20) folded into ExecType (150=F)
    assert b"\x0120=0\x01150=2\x01" in orig.body
    assert first.body == orig.body.replace(b"\x0120=0\x01150=2\x01", b"\x01150=F\x01")
    assert gw.gw.fanout.messages_in == 6
    await close_all(cl)


async def test_offline_target_gets_everything_it_missed_with_possdup(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N")
    for i in range(30):
        cl["ABC123N"].send("D", new_order(f"N{i}"))
    cl["ABC123N"].send("1", [(112, "sync")])
    await cl["ABC123N"].expect("0", skip=())
    await asyncio.sleep(0.2)                                  # let the group commit land

    t = gw.client("CLRFIX44")
    reply = await t.logon()
    assert get(reply, 35) == "A" and int(get(reply, 34)) == 31  # 30 copies reserved before it
    t.send("2", [(7, 1), (16, 0)])
    got = await drain(t, count=31)
    *copies, gap_fill = got                  # 1..30 the copies; 31, our Logon reply: a gap fill
    assert [get(m, 11) for m in copies] == [f"N{i}" for i in range(30)]
    assert all(get(m, 43) == "Y" and get(m, 122) for m in copies)
    assert [int(get(m, 34)) for m in copies] == list(range(1, 31))
    assert (get(gap_fill, 35), get(gap_fill, 123), get(gap_fill, 34), get(gap_fill, 36)) == \
        ("4", "Y", "31", "32")
    # live traffic continues after the resend, in order, without 43
    cl["ABC123N"].send("D", new_order("LIVE"))
    [live] = await drain(t)
    assert get(live, 11) == "LIVE" and int(get(live, 34)) == 32 and get(live, 43) is None
    await t.close()
    await close_all(cl)


async def test_a_poss_resend_copy_keeps_97_live_and_resent(folder, start_gateway):
    """A source message marked PossResend (97=Y) may repeat what the source sent under another
    seq: its copy says so to the target live and when it is resent (43=Y and 97=Y), so that a
    clearing firm that gets it only from a resend does not book it twice."""
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    src, t = cl["ABC123N"], cl["CLRFIX44"]
    src.send("D", new_order("AGAIN"), header=[(97, "Y")])
    src.send("D", new_order("ONCE"))
    live = await drain(t, count=2)
    assert [(get(m, 11), get(m, 97), get(m, 43)) for m in live] == [
        ("AGAIN", "Y", None), ("ONCE", None, None)]
    first = int(get(live[0], 34))
    t.send("2", [(7, first), (16, first + 1)])
    resent = await drain(t, count=2)
    assert [(get(m, 11), get(m, 97), get(m, 43), int(get(m, 34))) for m in resent] == [
        ("AGAIN", "Y", "Y", first), ("ONCE", None, "Y", first + 1)]
    await close_all(cl)


async def test_sessions_list_of_a_stopped_gateway_counts_journaled_copies(folder, start_gateway,
                                                                          capsys):
    """A target that never logged on has copies journaled with their seqs: ``sessions list``
    gives the same NEXT_OUT while the gateway runs and after it stopped (it read 1 from the
    untouched session file once the gateway was gone)."""
    from dcgateway.cli import main
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N")
    for i in range(7):
        cl["ABC123N"].send("D", new_order(f"S{i}"))
    cl["ABC123N"].send("1", [(112, "sync")])
    await cl["ABC123N"].expect("0", skip=())

    def next_out() -> tuple[bool, int]:
        capsys.readouterr()
        assert main(["sessions", "list", "--json", "--config", str(folder / "gateway.yaml")]) == 0
        doc = json.loads(capsys.readouterr().out)
        [row] = [r for r in doc["sessions"] if r["comp_id"] == "CLRFIX44"]
        return doc["gateway_running"], row["next_out"]
    for _ in range(100):                         # the status file's once-a-second refresh
        if next_out() == (True, 8):
            break
        await asyncio.sleep(0.1)
    assert next_out() == (True, 8)
    await close_all(cl)
    await gw.stop()
    assert next_out() == (False, 8)


async def test_one_resend_request_for_everything_is_answered_whole(folder, start_gateway):
    """As a QuickFIX engine asks after an outage: one ResendRequest 1..0 and nothing more until
    it is answered. 6,000 copies missed: all of them come (in slices that share the loop, with
    live copies in between), so the target never stalls on a partial answer."""
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N")
    src = cl["ABC123N"]
    n = 6000
    for i in range(n):
        src.send("D", new_order(f"B{i}"))
    src.send("1", [(112, "sync")])
    await src.expect("0", skip=(), timeout=30)
    await asyncio.sleep(0.2)
    t = gw.client("CLRFIX44")
    reply = await t.logon()
    assert int(get(reply, 34)) == n + 1
    t.send("2", [(7, 1), (16, 0)])
    src.send("D", new_order("LIVE"))                 # live while the answer is under way
    got = await drain(t, count=n + 2, timeout=60)
    by_seq = {int(get(m, 34)): m for m in got}
    assert sorted(by_seq) == list(range(1, n + 3)) and len(got) == n + 2
    assert [get(by_seq[s], 11) for s in range(1, n + 1)] == [f"B{i}" for i in range(n)]
    assert all(get(by_seq[s], 43) == "Y" for s in range(1, n + 1))
    assert (get(by_seq[n + 1], 35), get(by_seq[n + 1], 123)) == ("4", "Y")   # our Logon reply
    assert get(by_seq[n + 2], 11) == "LIVE" and get(by_seq[n + 2], 43) is None
    assert gw.metric("dcgateway_resend_requests_served_total", session="CLRFIX44") == 1
    assert gw.metric("dcgateway_messages_resent_total", session="CLRFIX44") == n
    await t.close()
    await close_all(cl)


async def test_application_message_from_a_target_is_rejected_not_routed(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "CLRFIX44", "CLR001N")
    cl["CLRFIX44"].send("D", new_order("FROM-TARGET"))
    j = await cl["CLRFIX44"].expect("j")
    assert get(j, 372) == "D" and "read-only" in get(j, 58)
    assert await drain(cl["CLR001N"]) == []
    assert gw.gw.fanout.messages_in == 0
    await close_all(cl)


async def test_groups_change_is_picked_up_without_restart(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABD123N", "CLRFIX44")
    cl["ABD123N"].send("D", new_order("BEFORE"))
    assert await drain(cl["CLRFIX44"]) == []                  # ABD123N is not in its group
    # the command waits for the running gateway to follow the change, and says so
    code, out, err = await cli("groups", "create", "--config", str(folder / "gateway.yaml"),
                               "--entity", "CLEARCO", "--name", "abd-orders", "--front-end",
                               "fix", "--filter", "categories=order", "--source", "ABD123N",
                               "--target", "CLRFIX44")
    assert code == 0, err
    version = gw.gw.fanout.table.version
    assert f"the running gateway (pid {os.getpid()}) follows it (version {version})" in out
    assert gw.gw.fanout.table.targets_of("ABD123N") >= {"CLRFIX44"}
    cl["ABD123N"].send("D", new_order("AFTER"))
    got = await drain(cl["CLRFIX44"])
    assert [get(m, 11) for m in got] == ["AFTER"]
    # a broken groups file is refused and the running table stays
    version = gw.gw.fanout.table.version
    (folder / "groups.yaml").write_text("groups:\n  - entity: NOPE\n")
    assert gw.gw.reload_groups() is False and gw.gw.fanout.table.version == version
    await close_all(cl)


async def test_a_groups_file_is_read_once_it_stays_the_same():
    """An editor writing groups.yaml in place (truncate, then write): the watcher reads a change
    only once two looks ``settle`` apart agree, so a half-written file is never routed by."""
    from dcgateway.runtime import Maintenance

    class Store:
        def __init__(self, looks: list[str]) -> None:
            self.looks = looks
            self.last = ""

        def signature(self) -> str:
            self.last = self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]
            return self.last

    # start; a look sees the truncated file, the settle look sees it written: not read yet;
    # the next look and its settle look agree: read once
    store = Store(["old", "truncated", "written", "written", "written"])
    reloads: list[str] = []
    watcher = Maintenance.__new__(Maintenance)
    watcher.groups = store                    # type: ignore[assignment]
    watcher.reload_groups = lambda: reloads.append(store.last) or True   # type: ignore
    task = asyncio.create_task(watcher.watch_groups(interval=0.001, settle=0.001))
    for _ in range(500):                      # bounded: a few looks are enough
        if reloads:
            break
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.02)                 # any further (wrong) reload would show by now
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert reloads == ["written"]


async def test_a_target_keeps_its_format_when_its_last_group_goes(folder, start_gateway):
    """Copies routed in a group's format stay in it when the group is deleted before the
    target took them: an ilink2 envelope carries a 35=BZ that the target's own FIX 4.4
    dictionary could not (it would be gap-filled: lost to the target)."""
    (folder / "groups.yaml").write_text(
        "groups:\n  - {entity: CLEARCO, name: mass, front_end: ilink2, filters: {categories: "
        "[mass_action]}, sources: [ABC123N], targets: [CLRFIX44]}\n")
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N")
    cl["ABC123N"].send("BZ", [(1369, "MA1"), (1373, 1), (1374, 7), (1375, 1), (55, "ESZ6")])
    cl["ABC123N"].send("1", [(112, "sync")])
    await cl["ABC123N"].expect("0", skip=())
    (folder / "groups.yaml").write_text("groups: []\n")
    assert gw.gw.reload_groups() is True
    target = gw.client("CLRFIX44")
    reply = await target.logon()
    assert (get(reply, 35), get(reply, 34)) == ("A", "2")     # the copy took seq 1
    target.send("2", [(7, 1), (16, 1)])
    [copy] = await drain(target, count=1)
    assert get(copy, 35) == "n" and get(copy, 43) == "Y"
    inner = Decoder().feed(unwrap_rtrf(Decoder().feed(copy.encode())[0]))[0]
    assert inner.msg_type == b"BZ" and inner.get(1369) == b"MA1"
    await target.close()
    await close_all(cl)


async def test_a_groups_file_that_holds_nothing_does_not_empty_the_routing(folder,
                                                                            start_gateway):
    """An empty file, comments only, or ``groups:`` without a list is what a file being written
    in place looks like: refused while groups are in use (the table stays); ``groups: []``
    says it, and is followed."""
    gw = await start_gateway(folder)
    version = gw.gw.fanout.table.version
    groups_file = folder / "groups.yaml"
    for text in ("", "# being written\n", "groups:\n"):
        groups_file.write_text(text)
        assert gw.gw.reload_groups() is False, text
        assert gw.gw.fanout.table.version == version
    groups_file.write_text("groups: []\n")
    assert gw.gw.reload_groups() is True
    assert gw.gw.fanout.table.version != version and not gw.gw.fanout.table.targets_of("ABC123N")


async def test_a_group_naming_a_session_the_running_gateway_lacks_is_refused(
        folder, start_gateway):
    """A session added to gateway.yaml reaches the gateway only with a restart: a group that
    names it would make the running gateway refuse the whole file and go on routing by the old
    one (deletes included), so the command refuses it and leaves the file alone."""
    gw = await start_gateway(folder)
    config = folder / "gateway.yaml"
    config.write_text(config.read_text() + "  - {comp_id: CLRNEW01, role: target, "
                      "entity: CLEARCO, profile: fix, begin_string: FIX.4.4}\n")
    before = (folder / "groups.yaml").read_text()
    code, out, err = await cli("groups", "create", "--config", str(config), "--entity",
                               "CLEARCO", "--name", "to-new", "--front-end", "fix", "--filter",
                               "categories=execution", "--source", "ABC123N", "--target",
                               "CLRNEW01")
    assert code == 2 and out == ""
    assert (f"refused: session 'CLRNEW01' is in {config} but not served by the running gateway "
            f"(pid {os.getpid()}), which reads its sessions when it starts") in err
    assert (folder / "groups.yaml").read_text() == before
    version = gw.gw.fanout.table.version
    await asyncio.sleep(1.5)                           # the watcher's look at the file
    assert gw.gw.fanout.table.version == version and gw.gw.maintenance.groups.current()


async def test_a_change_the_running_gateway_refuses_is_undone_and_an_error(folder,
                                                                          start_gateway):
    """gateway.yaml edited since the start (a target moved to another entity): a group valid
    for the file is refused by the running gateway. The command waits for that answer under
    the groups file's lock, puts the file back as it was (so the gateway's later reloads, and
    every later change, are not refused for it) and exits 1 with the gateway's reason."""
    (folder / "groups.yaml").write_text("groups: []\n")
    gw = await start_gateway(folder)
    config = folder / "gateway.yaml"
    config.write_text(config.read_text().replace(
        "{comp_id: CLR001N, role: target, entity: CLEARCO",
        "{comp_id: CLR001N, role: target, entity: TRADECO"))
    version = gw.gw.fanout.table.version
    before = (folder / "groups.yaml").read_bytes()
    code, out, err = await cli("groups", "create", "--json", "--config", str(config),
                               "--entity", "TRADECO", "--name", "own", "--front-end", "ilink2",
                               "--filter", "categories=execution", "--source", "ABC123N",
                               "--target", "CLR001N")
    assert code == 1, err
    [problem] = json.loads(out)["errors"]
    assert problem.startswith(f"the running gateway (pid {os.getpid()}) refused the change and "
                              f"goes on routing by version {version}: ")
    assert "targets[0]: 'CLR001N' belongs to entity CLEARCO" in problem
    assert problem.endswith(f"; {folder / 'groups.yaml'} is back as it was")
    assert err == f"error: {problem}\n"
    assert (folder / "groups.yaml").read_bytes() == before
    assert gw.gw.fanout.table.version == version
    audit = folder / "var" / "groups-audit.jsonl"
    assert not audit.exists() or "group_create" not in audit.read_text()   # nothing changed


async def test_after_its_error_logout_a_target_gets_nothing_more_until_it_logs_on_again(
        folder, start_gateway):
    """FIX Vol. 2 "Logout": the initiator sends nothing after its Logout. A target whose message
    had a wrong CompID (Test Case 2.i: Reject, Logout, a grace for the peer's Logout) gets no
    copy in that grace; the copy is its next seq, received on its next Logon by a resend."""
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    target = cl["CLRFIX44"]
    target.send_raw(target.build("0", sender="CLRWRONG"))
    got = []
    while not got or get(got[-1], 35) != "5":            # the Reject, then the Logout
        m = await target.recv(5)
        assert m is not None
        got.append(m)
    logout_seq = int(get(got[-1], 34))
    cl["ABC123N"].send("8", fill(exec_id="AFTER"))
    after = await target.wait_closed(10)                 # the grace runs out: closed
    assert [get(m, 35) for m in after if get(m, 35) not in ("0", "1")] == []
    await target.close()
    again = gw.client("CLRFIX44")
    again.next_seq = target.next_seq                     # its own sequence goes on
    reply = await again.logon()
    assert (get(reply, 35), int(get(reply, 34))) == ("A", logout_seq + 2)   # the copy: +1
    again.send("2", [(7, logout_seq + 1), (16, logout_seq + 1)])
    [copy] = await drain(again, count=1)
    assert (get(copy, 35), get(copy, 17), get(copy, 43)) == ("8", "AFTER", "Y")
    await again.close()
    await close_all({k: v for k, v in cl.items() if k != "CLRFIX44"})


async def test_copies_survive_a_gateway_restart(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N")
    for i in range(10):
        cl["ABC123N"].send("8", fill(exec_id=f"R{i}"))
    cl["ABC123N"].send("1", [(112, "sync")])
    await cl["ABC123N"].expect("0", skip=())
    await asyncio.sleep(0.2)
    await close_all(cl)
    await gw.stop()

    gw2 = await start_gateway(folder)
    t = gw2.client("CLR001N")
    reply = await t.logon()
    assert int(get(reply, 34)) == 11
    t.send("2", [(7, 1), (16, 10)])
    got = await drain(t)
    inner = [Decoder().feed(unwrap_rtrf(Decoder().feed(m.encode())[0]))[0] for m in got]
    assert [i.get(17) for i in inner] == [b"R%d" % i for i in range(10)]
    assert all(get(m, 43) == "Y" and get(m, 122) for m in got)
    await t.close()


async def test_sequence_reset_logs_out_and_starts_every_session_at_one(folder, start_gateway):
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    for i in range(3):
        cl["ABC123N"].send("D", new_order(f"W{i}"))
    assert len(await drain(cl["CLRFIX44"])) == 3
    resetting = asyncio.create_task(gw.gw.maintenance.reset_sequences("weekly sequence reset"))
    for c in cl.values():
        lo = await c.expect("5")
        assert get(lo, 58) == "weekly sequence reset"
        c.send("5", [(58, "ok")])
    await resetting
    await close_all(cl)
    src, tgt = gw.client("ABC123N"), gw.client("CLRFIX44")
    for c in (src, tgt):
        reply = await c.logon(seq=1)          # beginning of week: 34=1 without 141=Y
        assert get(reply, 35) == "A" and get(reply, 34) == "1"
    src.send("D", new_order("NEW-WEEK"))
    [copy] = await drain(tgt)
    assert get(copy, 11) == "NEW-WEEK" and get(copy, 34) == "2"
    await src.close()
    await tgt.close()


async def test_week_start_before_is_the_last_configured_start(folder):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from dcgateway.config import load_config
    from dcgateway.runtime import week_start_before
    cfg = load_config(folder / "gateway.yaml")           # sunday 16:00 America/Chicago
    chicago = ZoneInfo("America/Chicago")
    wed = datetime(2026, 11, 25, 12, 0, tzinfo=chicago).timestamp()
    assert week_start_before(cfg, wed) == datetime(2026, 11, 22, 16, 0, tzinfo=chicago).timestamp()
    sun_before = datetime(2026, 11, 22, 15, 59, tzinfo=chicago).timestamp()
    assert week_start_before(cfg, sun_before) == datetime(2026, 11, 15, 16, 0, tzinfo=chicago).timestamp()
    # across the DST change (1 Nov 2026): the local 16:00 is kept
    assert week_start_before(cfg, datetime(2026, 11, 2, 9, 0, tzinfo=chicago).timestamp()) == \
        datetime(2026, 11, 1, 16, 0, tzinfo=chicago).timestamp()


async def test_replay_cli_prints_what_a_target_was_sent_while_gateway_runs(folder, start_gateway):
    import json as _json
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    sent = [cl["ABC123N"].send("D", new_order(f"P{i}")) for i in range(5)]
    assert len(await drain(cl["CLRFIX44"])) == 5
    gw.gw.journal.flush_index()                  # index entries reach the file now
    proc = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "dcgateway", "replay", "--target", "CLRFIX44", "--from-seq", "2",
        "--to-seq", "4", "--json", "--config", str(folder / "gateway.yaml")],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    copies = _json.loads(proc.stdout)["copies"]
    assert [c["target_seq"] for c in copies] == [2, 3, 4]
    assert [c["message"] for c in copies] == [sent[i].decode().replace("\x01", "|") for i in (0, 1, 2)]
    assert all(c["source"] == "ABC123N" for c in copies)
    bad = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "dcgateway", "replay", "--target", "ABC123N", "--from-seq", "1",
        "--config", str(folder / "gateway.yaml")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "not a target session" in bad.stderr
    await close_all(cl)


async def test_a_sources_session_file_has_its_inbound_seq_once_it_disconnects(folder,
                                                                             start_gateway):
    """A source's inbound seq reaches its session file at most once a second while it is
    connected (the journal is what it is recovered from), and at its disconnect, so the file
    (what `dcgateway sessions list` reads when no gateway runs) does not stay behind, also
    when the source just drops the connection after messages that got no reply."""
    from dcgateway.state.session_files import peek_sequences
    gw = await start_gateway(folder)
    src = (await connect_all(gw, "ABC123N"))["ABC123N"]
    src.send("1", [(112, "sync")])                      # seq 2: its Heartbeat writes seq 3
    await src.expect("0", skip=())
    slot = gw.gw.slots["ABC123N"]
    for i in range(30):                                 # seqs 3..32: no reply to any
        src.send("D", new_order(f"N{i}"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while slot.store.next_in != 33 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert slot.store.next_in == 33
    src.abort()                                         # gone, no Logout
    while slot.connection is not None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    path = gw.gw.config.gateway.data_dir / "sessions" / "ABC123N.log"
    assert peek_sequences(path)[0] == 33


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_in_fsync_mode_a_sources_read_wakes_the_journal_sync_thread(folder, start_gateway,
                                                                        durability):
    """``fsync`` mode: each read of a source session wakes the journal's sync thread as it
    begins (the wake-up overlaps the read's work), and the copies still leave only once
    durable; a target's reads do not, and in ``os`` mode nothing does (no copy waits for the
    disk there)."""
    write_config(folder, extra=f"journal_durability: {durability}")
    shutil.copy(REPO / "config" / "groups.yaml", folder / "groups.yaml")   # (write_config empties it)
    gw = await start_gateway(folder)
    committer = gw.gw.committer
    assert committer is not None
    hooks = {name: slot.before_read for name, slot in gw.gw.slots.items()}
    sources = {name for name, slot in gw.gw.slots.items() if slot.role == Role.SOURCE}
    assert sources and set(hooks) - sources
    if durability == "fsync":
        assert all(hooks[name] == committer.expect_append for name in sources)
    assert all(hook is None for name, hook in hooks.items()
               if durability == "os" or name not in sources)
    reads: list[str] = []
    for name in sources:                # count the calls, still waking the thread
        hook = hooks[name]
        if hook is not None:
            gw.gw.slots[name].before_read = lambda n=name, h=hook: (reads.append(n), h())[1]
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    cl["ABC123N"].send("8", fill())
    copies = await drain(cl["CLRFIX44"], count=1)
    if durability == "fsync":
        assert "ABC123N" in reads and set(reads) <= sources     # the source's read, nobody else's
    else:
        assert reads == []
    assert [get(m, 17) for m in copies] == ["E1"]
    journal = gw.gw.journal
    assert journal.durable_lsn == journal.appended_lsn
    if durability == "fsync":
        assert journal.synced_lsn == journal.appended_lsn    # on the disk before it left
    await close_all(cl)
