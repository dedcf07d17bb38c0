"""config/alerts.yml and config/grafana-dashboard.json: valid, and written against the metric
names dcgateway.metrics really exposes. ``promtool`` (Debian package ``prometheus``) checks the
rules and runs unit tests of every alert; without it those tests skip, saying how to install it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from dcgateway.config import SessionDef
from dcgateway.metrics import GatewayMetrics

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "config" / "alerts.yml"
DASHBOARD = REPO / "config" / "grafana-dashboard.json"
NAME = re.compile(r"\bdcgateway_[a-z0-9_]+\b")

REQUIRED_ALERTS = {
    "DcgatewayTargetBacklogGrowing", "DcgatewaySessionDown", "DcgatewayLogonRejectsSpiking",
    "DcgatewayPortClosed", "DcgatewayKeyExpiringSoon", "DcgatewayJournalFsyncSlow",
    "DcgatewayJournalFsyncStalled",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: apt-get install prometheus (Debian) provides it")
    return path


def known_names() -> frozenset[str]:
    sessions = (SessionDef("ABC123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABC"),
                SessionDef("CLR001N", "target", "CLEARCO", "ilink2", "FIX.4.2", "CLR"))
    names = GatewayMetrics(CollectorRegistry(), sessions=sessions).metric_names()
    names |= cluster_names()
    if not any(n.startswith("dcgateway_process_") for n in names):   # no /proc: not Linux
        names |= {"dcgateway_process_cpu_seconds_total", "dcgateway_process_open_fds",
                  "dcgateway_process_resident_memory_bytes"}
    return names


def cluster_names() -> frozenset[str]:
    """What a cluster node adds (dcgateway.cluster.metrics), as exposed."""
    from types import SimpleNamespace

    from dcgateway.cluster.metrics import ClusterMetrics
    node = SimpleNamespace(takeovers=0, takeover_failures=0, stream_missing=0, state="standby",
                           journal=None, leases=None, serving=lambda: False)
    registry = CollectorRegistry()
    ClusterMetrics(node).attach(registry)
    return frozenset(s.name for m in registry.collect() for s in m.samples)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


# -- alerts.yml ---------------------------------------------------------------------------------

def test_alerts_are_all_there_and_documented() -> None:
    alerts = {r["alert"]: r for r in rules()}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_alerts_use_only_exposed_metric_names() -> None:
    names = known_names()
    for rule in rules():
        used = set(NAME.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= names, (rule["alert"], used - names)


def test_promtool_check_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


#: promtool unit tests: (alert, input series, eval time, expected alerts' labels). Every series
#: carries job/instance as a scrape would. Annotations are checked by `check rules` (templates)
#: and left out here (the rules are copied without them) so these tests pin the expressions.
S = 'job="dcgw",instance="gw1"'
CASES: list[tuple[str, list[tuple[str, str]], str, list[dict[str, str]]]] = [
    # backlog growing on a connected target: fires; flat, or target offline: does not
    ("DcgatewayTargetBacklogGrowing", [
        (f'dcgateway_target_backlog_messages{{{S},session="CLR001N"}}', "0+200x40"),
        (f'dcgateway_session_connected{{{S},session="CLR001N",role="target"}}', "1x40"),
        (f'dcgateway_target_backlog_messages{{{S},session="CLRFIX44"}}', "5000x40"),
        (f'dcgateway_session_connected{{{S},session="CLRFIX44",role="target"}}', "1x40"),
        (f'dcgateway_target_backlog_messages{{{S},session="CLROFF"}}', "0+200x40"),
        (f'dcgateway_session_connected{{{S},session="CLROFF",role="target"}}', "0x40"),
    ], "30m", [{"session": "CLR001N"}]),
    ("DcgatewayTargetBacklogGrowing", [
        (f'dcgateway_target_backlog_messages{{{S},session="CLR001N"}}', "0+200x40"),
        (f'dcgateway_session_connected{{{S},session="CLR001N",role="target"}}', "1x40"),
    ], "10m", []),                                               # not for 10 minutes yet
    ("DcgatewaySessionDown", [
        (f'dcgateway_session_connected{{{S},session="CLR001N",role="target"}}', "1 1 0x20"),
        (f'dcgateway_session_connected{{{S},session="ABC123N",role="source"}}', "1x20"),
    ], "10m", [{"session": "CLR001N", "role": "target"}]),
    ("DcgatewaySessionDown", [
        (f'dcgateway_session_connected{{{S},session="CLR001N",role="target"}}', "1 1 0x20"),
    ], "4m", []),
    ("DcgatewayLogonRejectsSpiking", [
        (f'dcgateway_logons_rejected_total{{{S},session="CLR001N",reason="bad_signature"}}',
         "0 0 1 2 3 4"),
        (f'dcgateway_logons_rejected_total{{{S},session="ABC123N",reason="bad_signature"}}',
         "0 0 0 0 0 1"),
    ], "5m", [{"session": "CLR001N"}]),
    ("DcgatewayPortClosed", [
        (f'dcgateway_session_port_closed{{{S},session="CLR001N"}}', "0 0 1x10"),
        (f'dcgateway_port_closures_total{{{S},session="CLR001N"}}', "0 0 1x10"),
        (f'dcgateway_session_port_closed{{{S},session="ABC123N"}}', "0x12"),
        (f'dcgateway_port_closures_total{{{S},session="ABC123N"}}', "0x12"),
    ], "5m", [{"session": "CLR001N"}]),
    ("DcgatewayPortClosed", [                  # the gauge is missing: the counter still tells
        (f'dcgateway_port_closures_total{{{S},session="CLR001N"}}', "0 0 1x10"),
    ], "5m", [{"session": "CLR001N"}]),
    ("DcgatewayKeyExpiringSoon", [
        (f'dcgateway_key_expiry_timestamp_seconds{{{S},access_key_id="AK1",session_id="ABC"}}',
         "259200x20"),                       # 3 days after the test's epoch 0
        (f'dcgateway_key_expiry_timestamp_seconds{{{S},access_key_id="AK2",session_id="CLR"}}',
         "2592000x20"),                      # 30 days
    ], "10m", [{"access_key_id": "AK1", "session_id": "ABC"}]),
    ("DcgatewayJournalFsyncSlow", [          # every fsync between 10 and 25 ms
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.005"}}', "0x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.01"}}', "0x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.025"}}', "0+100x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="+Inf"}}', "0+100x20"),
    ], "15m", [{}]),
    ("DcgatewayJournalFsyncSlow", [          # healthy: all under 250 µs
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.00025"}}', "0+100x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.01"}}', "0+100x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="+Inf"}}', "0+100x20"),
    ], "15m", []),
    ("DcgatewayJournalFsyncSlow", [          # idle: no fsyncs, no alert (NaN quantile)
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="0.01"}}', "0x20"),
        (f'dcgateway_journal_fsync_duration_seconds_bucket{{{S},le="+Inf"}}', "0x20"),
    ], "15m", []),
    ("DcgatewayJournalNotWritable", [
        (f'dcgateway_journal_writable{{{S}}}', "1 0x10"),
    ], "5m", [{}]),
    ("DcgatewayJournalFsyncStalled", [        # one fsync running, growing by 60 s a minute
        (f'dcgateway_journal_fsync_running_seconds{{{S}}}', "0 0 60+60x10"),
    ], "5m", [{}]),
    ("DcgatewayJournalFsyncStalled", [        # healthy: fsyncs of a few ms now and then
        (f'dcgateway_journal_fsync_running_seconds{{{S}}}', "0 0.002 0 0.001 0x10"),
    ], "5m", []),
    ("DcgatewayConfigReloadFailed", [
        (f'dcgateway_config_last_reload_successful{{{S}}}', "1 1 0 0"),
    ], "3m", [{}]),
    ("DcgatewayTargetRejectingCopies", [
        (f'dcgateway_copies_rejected_by_target_total{{{S},session="CLRFIX44"}}', "0 0 1 1 1"),
        (f'dcgateway_copies_rejected_by_target_total{{{S},session="CLR001N"}}', "0x5"),
    ], "4m", [{"session": "CLRFIX44"}]),
    ("DcgatewayTargetRejectingCopies", [          # long ago: no longer firing
        (f'dcgateway_copies_rejected_by_target_total{{{S},session="CLRFIX44"}}', "0 1x20"),
    ], "20m", []),
    ("DcgatewayCopiesUntranslatable", [
        (f'dcgateway_copies_untranslatable_total{{{S},session="CLRFIX44"}}', "0 0 2 2 2"),
        (f'dcgateway_copies_untranslatable_total{{{S},session="CLR001N"}}', "0x5"),
    ], "4m", [{"session": "CLRFIX44"}]),
    ("DcgatewayClusterStreamLostRecords", [
        (f'dcgateway_cluster_stream_missing_records{{{S}}}', "0 0 4023x5"),
        ('dcgateway_cluster_stream_missing_records{job="dcgw",instance="gw2"}', "0x7"),
    ], "4m", [{}]),
    ("DcgatewayClusterTakeoverFailing", [
        (f'dcgateway_cluster_takeover_failures_total{{{S}}}', "0 1 2 3 4 5"),
        ('dcgateway_cluster_takeover_failures_total{job="dcgw",instance="gw2"}', "0 1 1 1 1 1"),
    ], "5m", [{}]),
]


def test_every_alert_has_a_unit_test() -> None:
    assert {c[0] for c in CASES} == {r["alert"] for r in rules()}


def test_promtool_unit_tests(tmp_path: Path) -> None:
    tool = promtool()
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    severity = {r["alert"]: r["labels"]["severity"] for r in rules()}
    tests = []
    for alert, series, at, expected in CASES:
        tests.append({
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [
                {"exp_labels": {"job": "dcgw", "instance": "gw1",
                                "severity": severity[alert], **labels}}
                for labels in expected]}],
        })
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([tool, "test", "rules", "tests.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# -- grafana-dashboard.json ---------------------------------------------------------------------

def dashboard_exprs(doc: dict[str, Any]) -> list[str]:
    out = []
    for panel in doc["panels"]:
        out.extend(t["expr"] for t in panel.get("targets", []))
        for inner in panel.get("panels", []):
            out.extend(t["expr"] for t in inner.get("targets", []))
    for var in doc["templating"]["list"]:
        q = var.get("query")
        out.append(q["query"] if isinstance(q, dict) else str(q or ""))
    return out


def test_dashboard_is_valid_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and doc["schemaVersion"] >= 30
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert all(t["refId"] for t in p["targets"]), p["title"]
    # no two panels overlap
    cells = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_dashboard_uses_only_exposed_metric_names() -> None:
    names = known_names()
    used: set[str] = set()
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        used |= set(NAME.findall(expr))
    assert used <= names, used - names
    main = {"dcgateway_messages_received_total", "dcgateway_messages_sent_total",
            "dcgateway_fanout_latency_seconds_bucket", "dcgateway_target_backlog_messages",
            "dcgateway_session_connected", "dcgateway_session_next_in_seq_num",
            "dcgateway_session_next_out_seq_num", "dcgateway_logons_accepted_total",
            "dcgateway_logons_rejected_total", "dcgateway_port_closures_total",
            "dcgateway_resend_requests_served_total", "dcgateway_messages_resent_total",
            "dcgateway_journal_appended_records_total", "dcgateway_journal_appended_bytes_total",
            "dcgateway_journal_fsync_duration_seconds_bucket", "dcgateway_config_reloads_total",
            "dcgateway_config_reload_failures_total", "dcgateway_key_expiry_timestamp_seconds",
            "dcgateway_build_info"}
    assert main <= used, main - used
