"""Every metric the operators' issue lists appears on /metrics of a running gateway with traffic,
scraped over HTTP and parsed with prometheus-client's text parser; /healthz answers 200."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulators.fixclient import get

from .conftest import write_config
from .test_fanout import CONTRACT, connect_all, drain, fill, new_order

pytestmark = pytest.mark.asyncio


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(smp, name: str, **labels) -> float:
    return smp[(name, frozenset(labels.items()))]


async def test_metrics_cover_traffic_logons_resends_and_keys(tmp_path, start_gateway):
    folder = tmp_path / "gw"
    write_config(folder)
    shutil.copy(CONTRACT / "groups.yaml", folder / "groups.yaml")
    gw = await start_gateway(folder)
    cl = await connect_all(gw, "ABC123N", "CLR001N", "CLRFIX44")
    for i in range(7):
        cl["ABC123N"].send("8", fill(exec_id=f"M{i}"))
    cl["ABC123N"].send("D", new_order("M-ORDER"))
    assert len(await drain(cl["CLRFIX44"])) == 8
    assert len(await drain(cl["CLR001N"])) == 7
    cl["CLRFIX44"].send("2", [(7, 2), (16, 3)])                  # a resend request served
    assert len(await drain(cl["CLRFIX44"])) == 2
    bad = gw.client("ABD123N", signer=lambda h, b: [(354, 20), (355, "X" * 20), (1400, "CME-1-SHA-256"),
                                                   (1401, 43), (1402, "A" * 43)])
    assert get(await bad.logon(), 35) == "5"
    await bad.close()
    assert gw.gw.reload_groups()

    status, text = await asyncio.to_thread(scrape, gw.gw.metrics_port)
    assert status == 200
    smp = samples(text)
    names = {n for n, _ in smp}
    assert all(n.startswith("dcgateway_") for n in names if not n.startswith(("process_", "python_")))
    assert value(smp, "dcgateway_messages_received_total", session="ABC123N", category="execution") == 7
    assert value(smp, "dcgateway_messages_received_total", session="ABC123N", category="order") == 1
    assert value(smp, "dcgateway_messages_sent_total", session="CLRFIX44", category="execution") == 7
    assert value(smp, "dcgateway_messages_sent_total", session="CLR001N", category="execution") == 7
    assert value(smp, "dcgateway_fanout_latency_seconds_count", session="CLRFIX44") == 8
    assert value(smp, "dcgateway_fanout_latency_seconds_bucket", session="CLRFIX44", le="0.25") == 8
    assert value(smp, "dcgateway_target_backlog_messages", session="CLRFIX44") == 0
    assert value(smp, "dcgateway_session_connected", session="ABC123N", role="source") == 1
    assert value(smp, "dcgateway_session_connected", session="ABD123N", role="source") == 0
    assert value(smp, "dcgateway_session_next_in_seq_num", session="ABC123N") == 10
    assert value(smp, "dcgateway_session_next_out_seq_num", session="CLRFIX44") == 10
    assert value(smp, "dcgateway_logons_accepted_total", session="ABC123N") == 1
    assert value(smp, "dcgateway_logons_rejected_total", session="ABD123N", reason="unknown_key") == 1
    assert ("dcgateway_port_closures_total", frozenset({("session", "ABC123N")})) in smp
    assert value(smp, "dcgateway_resend_requests_served_total", session="CLRFIX44") == 1
    assert value(smp, "dcgateway_messages_resent_total", session="CLRFIX44") == 2
    assert value(smp, "dcgateway_journal_appended_records_total", ) == 8
    assert value(smp, "dcgateway_journal_appended_bytes_total") > 8 * 150
    assert value(smp, "dcgateway_journal_fsync_duration_seconds_count") >= 1
    assert value(smp, "dcgateway_config_reloads_total") == 1
    assert value(smp, "dcgateway_config_reload_failures_total") == 0
    akid = gw.creds["ABC123N"][0]
    assert value(smp, "dcgateway_key_expiry_timestamp_seconds", access_key_id=akid, session_id="ABC") > 0
    assert any(n == "dcgateway_build_info" for n, _ in smp)
    assert value(smp, "dcgateway_received_bytes_total", session="ABC123N") > 0
    assert value(smp, "dcgateway_sent_bytes_total", session="CLRFIX44") > 0

    code, body = await asyncio.to_thread(scrape, gw.gw.metrics_port, "/healthz")
    assert code == 200 and body.strip() == "ok"
    gw.gw.health.failed("No space left on device")
    code, body = await asyncio.to_thread(scrape, gw.gw.metrics_port, "/healthz")
    assert code == 503 and "journal" in body and "No space left" in body
    gw.gw.health.committed()
    for c in cl.values():
        await c.close()


def scrape_with(port: int, headers: dict[str, str]) -> tuple[int, str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("WWW-Authenticate", "")


async def test_metrics_can_require_a_bearer_token_and_health_stays_open(tmp_path, start_gateway):
    folder = tmp_path / "gw"
    write_config(folder, extra="metrics_token_file: metrics.token")
    (folder / "metrics.token").write_text("s3cr3t-Token_value\n")
    gw = await start_gateway(folder)
    port = gw.gw.metrics_port
    code, body, challenge = await asyncio.to_thread(scrape_with, port, {})
    assert code == 401 and "dcgateway_" not in body and challenge.startswith("Bearer")
    code, body, _ = await asyncio.to_thread(scrape_with, port, {"Authorization": "Bearer nope"})
    assert code == 401 and "dcgateway_" not in body
    code, body, _ = await asyncio.to_thread(
        scrape_with, port, {"Authorization": "Bearer s3cr3t-Token_value"})
    assert code == 200 and "dcgateway_session_connected" in body
    assert "s3cr3t" not in body
    code, body = await asyncio.to_thread(scrape, port, "/healthz")
    assert code == 200 and body.strip() == "ok"


async def test_an_unusable_metrics_token_file_is_named_and_stops_the_start(tmp_path):
    from dcgateway.errors import ConfigError
    from dcgateway.runtime import metrics_token

    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty.token: expected one line"):
        metrics_token(empty)
    with pytest.raises(ConfigError, match="cannot read it"):
        metrics_token(tmp_path / "absent.token")
    assert metrics_token(None) is None


async def test_a_metrics_token_file_others_may_read_is_named_in_a_warning(tmp_path, caplog):
    from dcgateway.runtime import metrics_token

    token = tmp_path / "metrics.token"
    token.write_text("s3cr3t-Token_value\n")
    token.chmod(0o600)
    assert metrics_token(token) == b"s3cr3t-Token_value"
    assert "readable by others" not in caplog.text
    token.chmod(0o644)
    assert metrics_token(token) == b"s3cr3t-Token_value"
    assert f"metrics_token_file {token} is readable by others (mode 0644)" in caplog.text
    assert "s3cr3t" not in caplog.text
