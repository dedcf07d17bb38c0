"""The simulators as commands: bounded runs against a real gateway, one JSON line each, the
exit codes, and credentials from a key file or $DCGW_SECRET."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

import pytest

from simulators.fixclient import FixClient, load_key_file
from simulators.orders import OrderFlow
from simulators.source import SentMessage, expected_deliveries
from tests.integration.conftest import REPO

from .support import gateway_folder, routing_table

COLUMNS = ["Session ID", "Access ID", "Secret Key", "Creation Date", "Expiration Date",
           "Environment"]


def key_file(folder: Path, comp_id: str, creds: dict) -> Path:
    """A key file shaped like `dcgateway keys download` writes it."""
    path = folder / f"{comp_id}.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        scope = comp_id if comp_id == "CLRFIX44" else comp_id[:3]
        w.writerow([scope, *creds[comp_id], "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z",
                    "DCGW"])
    return path


async def command(*args: str, env: dict | None = None, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def one_json_line(out: str) -> dict:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def replay(sender: str, seed: int, count: int, sub_ids=("OPS",)) -> list[SentMessage]:
    """What `python -m simulators.source --seed S --count N` sends (same seed, same flow)."""
    flow = OrderFlow(seed=seed, sender=sender, sub_ids=sub_ids)
    client = FixClient("127.0.0.1", 0, sender)
    out = []
    for seq in range(2, count + 2):
        ev = next(flow)
        out.append(SentMessage(seq, ev.msg_type, ev.key,
                               client.build(ev.msg_type, ev.fields, header=[(50, ev.sub_id)])))
    return out


@pytest.mark.asyncio
async def test_source_and_target_commands_run_and_print_one_json_line(tmp_path, start_gateway):
    folder = gateway_folder(tmp_path)
    gw = await start_gateway(folder)
    port = str(gw.port)
    abc_keys = key_file(tmp_path, "ABC123N", gw.creds)
    code, out, err = await command("-m", "simulators.source", "--port", port, "--sender",
                                   "ABC123N", "--key-file", str(abc_keys), "--count", "120",
                                   "--seed", "5", "--rate", "2000")
    assert code == 0, err
    first = one_json_line(out)
    assert first["sent"] == 120 and first["error"] is None and first["rejects"] == 0
    assert sum(first["by_category"].values()) == 120
    assert first["next_seq"] == 124             # Logon, 120 messages, TestRequest, Logout

    # the same seed in another process gives the same messages: what CLRFIX44 must get is known
    want = expected_deliveries(routing_table(folder), "ABC123N", replay("ABC123N", 5, 120))
    fix_keys = key_file(tmp_path, "CLRFIX44", gw.creds)
    code, out, err = await command("-m", "simulators", "target", "--port", port, "--comp-id",
                                   "CLRFIX44", "--begin-string", "FIX.4.4", "--key-file",
                                   str(fix_keys), "--idle", "0.5", "--timeout", "15")
    assert code == 0, err
    stats = one_json_line(out)
    assert stats["delivered"] == len(want["CLRFIX44"]) and stats["error"] is None
    assert stats["unflagged_duplicates"] == 0 and stats["front_end"] == "fix"
    assert stats["counters"]["resent_received"] == stats["delivered"]   # it was offline

    # a second source process starts at seq 1: it adopts the gateway's 789 and carries on;
    # the secret comes from the environment this time
    key_id, secret = gw.creds["ABC123N"]
    code, out, err = await command("-m", "simulators.source", "--port", port, "--sender",
                                   "ABC123N", "--access-key-id", key_id, "--count", "10",
                                   "--seed", "6", env={"DCGW_SECRET": secret})
    assert code == 0, err
    second = one_json_line(out)
    assert second["sent"] == 10 and second["stats"]["seq_synced_from_789"] == 1
    assert secret not in out + err


@pytest.mark.asyncio
async def test_commands_refuse_unbounded_runs_and_bad_credentials(tmp_path):
    code, out, err = await command("-m", "simulators.source", "--port", "1", "--sender",
                                   "ABC123N", "--access-key-id", "X", "--secret", "Y")
    assert code == 2 and "--count" in err and out == ""
    code, out, err = await command("-m", "simulators.target", "--port", "1", "--comp-id",
                                   "CLR001N", "--count", "1")
    assert code == 2 and "--key-file" in err
    bad = "not!a!secret" + "x" * 31
    code, out, err = await command("-m", "simulators.target", "--port", "1", "--comp-id",
                                   "CLR001N", "--count", "1", "--access-key-id", "K" * 20,
                                   "--secret", bad)
    assert code == 2 and "secret key" in err and bad not in err
    code, out, err = await command("-m", "simulators", "nonsense")
    assert code == 2 and "usage" in err


@pytest.mark.asyncio
async def test_a_command_with_no_gateway_reports_the_error_in_its_json_line(tmp_path):
    key = "A" * 43
    common = ["--port", "1", "--access-key-id", "K" * 20, "--secret", key, "--count", "5"]
    code, out, err = await command("-m", "simulators.source", "--sender", "ABC123N", *common)
    assert code == 1
    summary = one_json_line(out)
    assert summary["sent"] == 0 and "Connect" in summary["error"]
    code, out, err = await command("-m", "simulators.target", "--comp-id", "CLR001N", *common)
    assert code == 1
    stats = one_json_line(out)
    assert stats["delivered"] == 0 and "cannot connect" in stats["error"]


def test_key_file_picks_the_row_of_the_session(tmp_path):
    path = tmp_path / "keys.csv"
    path.write_text(",".join(COLUMNS) + "\nABC,AAAA,s1,c,e,DCGW\nCLRFIX44,BBBB,s2,c,e,DCGW\n")
    assert load_key_file(path, "CLRFIX44") == ("BBBB", "s2")
    assert load_key_file(path, "ABC123N") == ("AAAA", "s1")
    assert load_key_file(path) == ("AAAA", "s1")
    (tmp_path / "empty.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no key pair"):
        load_key_file(tmp_path / "empty.csv")
