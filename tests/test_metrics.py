"""dcgateway.metrics: names, types, labels and values as Prometheus scrapes them (real HTTP on
127.0.0.1 port 0, parsed with prometheus-client's text parser)."""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import random
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import prometheus_client
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dcgateway import __version__
from dcgateway.auth.verify import REASONS
from dcgateway.config import SessionDef, load_config
from dcgateway.fix.session_types import (
    AuthFailed,
    Disconnect,
    LoggedOn,
    ProtocolError,
    ResendRequested,
    ResendServed,
    SessionRejectSent,
)
from dcgateway.metrics import (
    LATENCY_BUCKETS,
    OTHER_CATEGORY,
    REFUSAL_REASONS,
    BatchHistogram,
    GatewayMetrics,
    KeyStatus,
    SessionStatus,
    Snapshot,
    TargetStatus,
)
from dcgateway.net.http import serve_http
from dcgateway.routing import CATEGORIES

REPO = Path(__file__).resolve().parents[1]

SESSIONS = (
    SessionDef("ABC123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABC"),
    SessionDef("ABD123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABD"),
    SessionDef("CLR001N", "target", "CLEARCO", "ilink2", "FIX.4.2", "CLR"),
    SessionDef("CLRFIX44", "target", "CLEARCO", "fix", "FIX.4.4", "CLRFIX44"),
)
SOURCES = ("ABC123N", "ABD123N")
TARGETS = ("CLR001N", "CLRFIX44")
ALL = SOURCES + TARGETS
GROUPS = ("CLEARCO/clearco-all-fills", "CLEARCO/clearco-everything-fix")
#: label names whose values must come from configuration or fixed tuples in code
CONFIGURED = {"session": set(ALL), "role": {"source", "target"}, "group": set(GROUPS),
              "category": set(CATEGORIES) | {OTHER_CATEGORY}, "entity": {"TRADECO", "CLEARCO"},
              "profile": {"ilink2", "fix"}}

Families = dict[str, prometheus_client.Metric]


def make(registry: CollectorRegistry | None = None, **kw) -> GatewayMetrics:
    return GatewayMetrics(registry or CollectorRegistry(), sessions=SESSIONS, groups=GROUPS, **kw)


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


@pytest_asyncio.fixture
async def scrape() -> AsyncIterator[Callable]:
    """``await scrape(metrics) -> {family name: family}`` over HTTP."""
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
    servers: dict[int, tuple[asyncio.Server, int]] = {}

    async def _scrape(m: GatewayMetrics) -> Families:
        key = id(m.registry)
        if key not in servers:
            server = await serve_http("127.0.0.1", 0, m.registry, lambda: (True, ""))
            servers[key] = (server, server.sockets[0].getsockname()[1])
        status, text = await _get(servers[key][1], "/metrics")
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(text)}

    yield _scrape
    for server, _ in servers.values():
        server.close()
        await server.wait_closed()
    assert not errors, errors


def samples(fams: Families, name: str, suffix: str = "") -> dict[tuple, float]:
    """``{(label values sorted by label name): value}`` of one family's samples named
    ``name + suffix`` (suffix ``_total`` is implied for counters)."""
    fam = fams[name]
    want = name + (suffix or ("_total" if fam.type == "counter" else ""))
    out = {}
    for s in fam.samples:
        if s.name == want:
            out[tuple(v for _, v in sorted(s.labels.items()))] = s.value
    return out


def value(fams: Families, name: str, suffix: str = "", **labels: str) -> float:
    fam = fams[name]
    want = name + (suffix or ("_total" if fam.type == "counter" else ""))
    found = [s.value for s in fam.samples if s.name == want and s.labels == labels]
    assert len(found) == 1, (name, labels, [s for s in fam.samples if s.name == want][:5])
    return found[0]


def snapshot_fn(**kw) -> Callable[[], Snapshot]:
    snap = Snapshot(
        sessions=[SessionStatus("ABC123N", True, 101, 7), SessionStatus("CLR001N", True, 3, 42,
                                                                        port_closed=False),
                  SessionStatus("ABD123N", False, 1, 1, port_closed=True),
                  SessionStatus("NOTCONF", True, 9, 9)],
        targets=[TargetStatus("CLR001N", 17), TargetStatus("CLRFIX44", 250000, True),
                 TargetStatus("NOTCONF", 5)],
        keys=[KeyStatus("AKIDABC0001", "ABC", 1_900_000_000.0),
              KeyStatus("AKIDCLR0001", "CLR", 1_800_000_000.5)],
        journal_writable=True)
    return lambda: snap._replace(**kw)


# -- naming rules (DESIGN.md rule 6) ------------------------------------------------------------


@pytest.mark.asyncio
async def test_names_types_and_units(scrape) -> None:
    m = make(snapshot=snapshot_fn())
    fams = await scrape(m)
    assert len(fams) >= 30
    for name, fam in fams.items():
        assert name.startswith("dcgateway_"), name
        assert re.fullmatch(r"dcgateway_[a-z0-9_]+", name), name
        for bad in ("millisecond", "_ms", "_us", "micro", "kilo", "_kb", "_mb", "percent"):
            assert bad not in name, name
        assert not name.endswith("_created"), name     # no _created gauges (series x2)
        if fam.type == "counter":
            assert {s.name for s in fam.samples} == {name + "_total"}
            assert not name.endswith("_total")        # the parser strips it: it was there once
        else:
            assert not any(s.name.endswith("_total") for s in fam.samples), name
        if fam.type == "histogram" and ("latency" in name or "duration" in name):
            assert name.endswith("_seconds"), name
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name
        assert fam.documentation, name


@pytest.mark.asyncio
async def test_metric_types(scrape) -> None:
    fams = await scrape(make(snapshot=snapshot_fn()))
    expected = {
        "dcgateway_messages_received": "counter", "dcgateway_messages_sent": "counter",
        "dcgateway_received_bytes": "counter", "dcgateway_sent_bytes": "counter",
        "dcgateway_group_copies": "counter", "dcgateway_fanout_latency_seconds": "histogram",
        "dcgateway_target_backlog_messages": "gauge", "dcgateway_target_catching_up": "gauge",
        "dcgateway_session_connected": "gauge", "dcgateway_session_next_in_seq_num": "gauge",
        "dcgateway_session_next_out_seq_num": "gauge", "dcgateway_session_port_closed": "gauge",
        "dcgateway_session_info": "gauge",
        "dcgateway_logons_accepted": "counter", "dcgateway_logons_rejected": "counter",
        "dcgateway_connections_refused": "counter", "dcgateway_port_closures": "counter",
        "dcgateway_resend_requests_served": "counter", "dcgateway_messages_resent": "counter",
        "dcgateway_messages_gap_filled": "counter", "dcgateway_resend_requests_sent": "counter",
        "dcgateway_session_rejects_sent": "counter",
        "dcgateway_session_protocol_errors": "counter",
        "dcgateway_journal_appended_records": "counter",
        "dcgateway_journal_appended_bytes": "counter", "dcgateway_journal_errors": "counter",
        "dcgateway_journal_fsync_duration_seconds": "histogram",
        "dcgateway_journal_fsync_batch_records": "histogram",
        "dcgateway_journal_writable": "gauge",
        "dcgateway_journal_recovery_duration_seconds": "gauge",
        "dcgateway_config_reloads": "counter", "dcgateway_config_reload_failures": "counter",
        "dcgateway_config_last_reload_successful": "gauge",
        "dcgateway_config_last_reload_success_timestamp_seconds": "gauge",
        "dcgateway_key_expiry_timestamp_seconds": "gauge", "dcgateway_build_info": "gauge",
        "dcgateway_metrics_snapshot_errors": "counter",
    }
    assert {n: fams[n].type for n in expected if n in fams} == expected


@pytest.mark.asyncio
async def test_label_values_only_from_configuration(scrape) -> None:
    m = make(snapshot=snapshot_fn())
    # updates naming things that are not configured are dropped, never become labels
    m.messages_in("EVIL", "execution", 1)
    m.messages_in("ABC123N", "ACCT01", 1)
    m.messages_out("ABC123N", "execution", 1)          # a source is not a copy target
    m.bytes_in("EVIL", 10)
    m.group_copy("CLEARCO/nope", 1)
    m.observe_fanout_latencies("EVIL", [0.001])
    m.logon_rejected("ABC123N", "made_up_reason")
    m.port_closure("EVIL")
    m.resend_served("EVIL", 1, 1)
    fams = await scrape(m)
    keys = {"AKIDABC0001", "AKIDCLR0001"}
    scopes = {"ABC", "CLR"}
    for name, fam in fams.items():
        for s in fam.samples:
            for label, v in s.labels.items():
                if label == "le":
                    continue                       # bucket bounds: fixed in code
                allowed = {"reason": set(REASONS) | set(REFUSAL_REASONS),
                           "access_key_id": keys, "session_id": scopes,
                           "version": {__version__},
                           "python": {platform.python_version()}}.get(label)
                if allowed is None:
                    allowed = CONFIGURED[label]
                assert v in allowed, (name, label, v)
    assert "NOTCONF" not in str([f.samples for f in fams.values()])


@pytest.mark.asyncio
async def test_unconfigured_updates_are_logged_once(caplog) -> None:
    m = make()
    with caplog.at_level(logging.WARNING, "dcgateway.metrics"):
        for _ in range(3):
            m.messages_in("EVIL", "execution", 1)
    assert len([r for r in caplog.records if "EVIL" in r.getMessage()]) == 1


# -- every series exists at 0 from the start ----------------------------------------------------

@pytest.mark.asyncio
async def test_series_exist_at_zero_before_any_event(scrape) -> None:
    fams = await scrape(make())
    received = samples(fams, "dcgateway_messages_received")
    assert set(received) == {(c, s) for s in ALL for c in (*CATEGORIES, OTHER_CATEGORY)}
    assert set(received.values()) == {0}
    sent = samples(fams, "dcgateway_messages_sent")
    assert set(sent) == {(c, t) for t in TARGETS for c in CATEGORIES}
    rejected = samples(fams, "dcgateway_logons_rejected")
    assert set(rejected) == {(r, s) for s in ALL for r in REASONS if r != "unknown_session"}
    assert set(samples(fams, "dcgateway_connections_refused")) == {(r,) for r in REFUSAL_REASONS}
    for name in ("dcgateway_logons_accepted", "dcgateway_port_closures",
                 "dcgateway_resend_requests_served", "dcgateway_messages_resent",
                 "dcgateway_messages_gap_filled", "dcgateway_resend_requests_sent",
                 "dcgateway_session_rejects_sent", "dcgateway_session_protocol_errors",
                 "dcgateway_received_bytes", "dcgateway_sent_bytes"):
        assert samples(fams, name) == {(s,): 0 for s in ALL}, name
    assert samples(fams, "dcgateway_group_copies") == {(g,): 0 for g in GROUPS}
    assert samples(fams, "dcgateway_fanout_latency_seconds", "_count") == {
        (t,): 0 for t in TARGETS}
    for name in ("dcgateway_journal_appended_records", "dcgateway_journal_appended_bytes",
                 "dcgateway_journal_errors", "dcgateway_config_reloads",
                 "dcgateway_config_reload_failures", "dcgateway_metrics_snapshot_errors"):
        assert samples(fams, name) == {(): 0}, name
    assert samples(fams, "dcgateway_journal_fsync_duration_seconds", "_count") == {(): 0}
    # without a snapshot: every session is reported down, nothing else is invented
    assert samples(fams, "dcgateway_session_connected") == {
        (s.role, s.comp_id): 0 for s in SESSIONS}
    assert samples(fams, "dcgateway_session_next_in_seq_num") == {}
    assert samples(fams, "dcgateway_key_expiry_timestamp_seconds") == {}


@pytest.mark.asyncio
async def test_build_info_and_session_info(scrape) -> None:
    fams = await scrape(make())
    assert samples(fams, "dcgateway_build_info") == {
        (platform.python_version(), __version__): 1}
    assert samples(fams, "dcgateway_session_info") == {
        ("TRADECO", "ilink2", "source", "ABC123N"): 1,
        ("TRADECO", "ilink2", "source", "ABD123N"): 1,
        ("CLEARCO", "ilink2", "target", "CLR001N"): 1,
        ("CLEARCO", "fix", "target", "CLRFIX44"): 1}


# -- values after the observe methods -----------------------------------------------------------

@pytest.mark.asyncio
async def test_message_counters(scrape) -> None:
    m = make()
    m.messages_in("ABC123N", "execution", 5)
    m.messages_in("ABC123N", "execution", 2)
    m.messages_in("ABC123N", None, 1)                    # not copyable
    m.messages_in_counts("ABD123N", {"order": 3, "acknowledgment": 4})
    m.messages_out("CLR001N", "execution", 7)
    m.copies_out("CLRFIX44", "order", 3)
    m.bytes_in("ABC123N", 2000)
    m.bytes_out("CLR001N", 1750)
    m.group_copy("CLEARCO/clearco-all-fills", 7)
    m.messages_in("ABC123N", "execution", 0)             # a batch of nothing is fine
    fams = await scrape(m)
    assert value(fams, "dcgateway_messages_received", session="ABC123N",
                 category="execution") == 7
    assert value(fams, "dcgateway_messages_received", session="ABC123N",
                 category=OTHER_CATEGORY) == 1
    assert value(fams, "dcgateway_messages_received", session="ABD123N", category="order") == 3
    assert value(fams, "dcgateway_messages_received", session="ABD123N",
                 category="acknowledgment") == 4
    assert value(fams, "dcgateway_messages_sent", session="CLR001N", category="execution") == 7
    assert value(fams, "dcgateway_messages_sent", session="CLRFIX44", category="order") == 3
    assert value(fams, "dcgateway_received_bytes", session="ABC123N") == 2000
    assert value(fams, "dcgateway_sent_bytes", session="CLR001N") == 1750
    assert value(fams, "dcgateway_group_copies", group="CLEARCO/clearco-all-fills") == 7
    assert sum(samples(fams, "dcgateway_messages_received").values()) == 15


@pytest.mark.asyncio
async def test_fanout_latency_histogram(scrape) -> None:
    m = make()
    m.observe_fanout_latencies("CLR001N", [0.00004, 0.00005, 0.00007, 0.0003, 0.0009, 0.003])
    m.observe_fanout_latencies("CLR001N", iter([2.0]))   # any iterable (a drained deque)
    m.observe_fanout_latencies("CLRFIX44", [])
    fams = await scrape(m)
    fam = fams["dcgateway_fanout_latency_seconds"]
    assert fam.type == "histogram"
    buckets = {float(s.labels["le"]): s.value for s in fam.samples
               if s.name.endswith("_bucket") and s.labels["session"] == "CLR001N"}
    assert sorted(buckets)[:4] == [0.00005, 0.0001, 0.00025, 0.0005]   # sub-millisecond
    assert sorted(buckets) == sorted([*LATENCY_BUCKETS, math.inf])
    assert buckets[0.00005] == 2           # le: a value equal to a bound is in that bucket
    assert buckets[0.0001] == 3
    assert buckets[0.0005] == 4
    assert buckets[0.001] == 5
    assert buckets[0.005] == 6
    assert buckets[1.0] == 6
    assert buckets[math.inf] == 7
    assert value(fams, "dcgateway_fanout_latency_seconds", "_count", session="CLR001N") == 7
    assert value(fams, "dcgateway_fanout_latency_seconds", "_sum",
                 session="CLR001N") == pytest.approx(2.00436)
    assert value(fams, "dcgateway_fanout_latency_seconds", "_count", session="CLRFIX44") == 0


def test_batch_histogram_matches_prometheus_client() -> None:
    """Same buckets, same counts, same sum as prometheus_client.Histogram for the same values,
    including values exactly on a bound."""
    rng = random.Random(7)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(200)]
    values += [rng.expovariate(2000) for _ in range(2000)] + [0.0, 5.0]
    reg = CollectorRegistry()
    ref = Histogram("ref_seconds", "reference", buckets=LATENCY_BUCKETS, registry=reg)
    for v in values:
        ref.observe(v)
    mine = BatchHistogram("ref_seconds", "reference", (), LATENCY_BUCKETS)
    mine.child().observe_many(values[:1000])
    for v in values[1000:]:
        mine.child().observe(v)

    def key(s: Sample) -> tuple:
        return s.name, tuple(sorted(s.labels.items()))
    want = {key(s): s.value for s in next(iter(reg.collect())).samples
            if not s.name.endswith("_created")}
    got = {key(s): s.value for s in mine.collect().samples}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k]), k


def test_batch_histogram_rejects_bad_buckets() -> None:
    for buckets in ((), (0.1, 0.1), (0.2, 0.1), (0.1, math.inf)):
        with pytest.raises(ValueError):
            BatchHistogram("x_seconds", "x", (), buckets)


@pytest.mark.asyncio
async def test_journal_metrics(scrape) -> None:
    m = make()
    m.journal_append(10, 2500)
    m.journal_append(3, 700)
    m.fsync(0.0002, 10)
    m.fsync(0.004, 3)
    m.journal_error()
    m.recovered(1.25)
    fams = await scrape(m)
    assert value(fams, "dcgateway_journal_appended_records") == 13
    assert value(fams, "dcgateway_journal_appended_bytes") == 3200
    assert value(fams, "dcgateway_journal_errors") == 1
    assert value(fams, "dcgateway_journal_recovery_duration_seconds") == 1.25
    fsync = "dcgateway_journal_fsync_duration_seconds"
    assert value(fams, fsync, "_count") == 2
    assert value(fams, fsync, "_sum") == pytest.approx(0.0042)
    assert value(fams, fsync, "_bucket", le="0.00025") == 1
    assert value(fams, fsync, "_bucket", le="0.005") == 2
    batch = "dcgateway_journal_fsync_batch_records"
    assert value(fams, batch, "_sum") == 13
    assert value(fams, batch, "_bucket", le="5.0") == 1


@pytest.mark.asyncio
async def test_commit_wait_histogram(scrape) -> None:
    """``GroupCommitter(on_wait=metrics.commit_wait)``: one observation per commit."""
    m = make()
    name = "dcgateway_journal_commit_wait_seconds"
    assert value(await scrape(m), name, "_count") == 0       # exposed before the first commit
    on_wait: Callable[[float, int], None] = m.commit_wait
    for seconds, commits in ((0.0003, 1), (0.0004, 1), (0.003, 5)):
        on_wait(seconds, commits)
    fams = await scrape(m)
    assert fams[name].type == "histogram"
    assert value(fams, name, "_count") == 7
    assert value(fams, name, "_sum") == pytest.approx(0.0157)
    assert value(fams, name, "_bucket", le="0.00025") == 0
    assert value(fams, name, "_bucket", le="0.0005") == 2
    assert value(fams, name, "_bucket", le="0.005") == 7


@pytest.mark.asyncio
async def test_fsync_fits_the_group_committer_callback() -> None:
    """``GroupCommitter(on_fsync=metrics.fsync)``: called as on_fsync(seconds, records)."""
    m = make()
    on_fsync: Callable[[float, int], None] = m.fsync
    on_fsync(0.001, 4)
    assert m.registry.get_sample_value("dcgateway_journal_fsync_batch_records_sum") == 4


@pytest.mark.asyncio
async def test_logon_metrics(scrape) -> None:
    m = make()
    m.logon_accepted("ABC123N")
    m.logon_accepted("ABC123N")
    m.logon_rejected("CLR001N", "bad_signature")
    m.logon_rejected("CLR001N", "bad_signature")
    m.logon_rejected("CLR001N", "expired_key")
    m.logon_rejected(None, "unknown_session")            # no configured session: no label
    m.logon_rejected("NOTCONF", "unknown_session")
    m.connection_refused("max_connections")
    m.connection_refused("TargetCompID(56) must be DCGW")   # free text: other
    m.port_closure("CLR001N")
    fams = await scrape(m)
    assert value(fams, "dcgateway_logons_accepted", session="ABC123N") == 2
    assert value(fams, "dcgateway_logons_rejected", session="CLR001N",
                 reason="bad_signature") == 2
    assert value(fams, "dcgateway_logons_rejected", session="CLR001N", reason="expired_key") == 1
    assert value(fams, "dcgateway_connections_refused", reason="unknown_session") == 2
    assert value(fams, "dcgateway_connections_refused", reason="max_connections") == 1
    assert value(fams, "dcgateway_connections_refused", reason="other") == 1
    assert value(fams, "dcgateway_port_closures", session="CLR001N") == 1
    assert value(fams, "dcgateway_port_closures", session="ABC123N") == 0


@pytest.mark.asyncio
async def test_resend_metrics(scrape) -> None:
    m = make()
    m.resend_served("CLR001N", 40, 10)
    m.resend_served("CLR001N", 5, 0)
    m.resend_requested("ABC123N")
    fams = await scrape(m)
    assert value(fams, "dcgateway_resend_requests_served", session="CLR001N") == 2
    assert value(fams, "dcgateway_messages_resent", session="CLR001N") == 45
    assert value(fams, "dcgateway_messages_gap_filled", session="CLR001N") == 10
    assert value(fams, "dcgateway_resend_requests_sent", session="ABC123N") == 1


@pytest.mark.asyncio
async def test_session_events_map_to_metrics_and_status(scrape, tmp_path) -> None:
    """The one event sink (runtime.events): each event type's metric, and the status file."""
    from dcgateway.net.acceptor import Refused
    from dcgateway.net.connection import SessionSlot
    from dcgateway.runtime import EventSink, StatusFile
    m = make()
    status = StatusFile(tmp_path, lambda: 1.0, lambda: {"CLR001N": (7, 9)})
    sink = EventSink(m, status, is_locked=lambda name: False)
    slot = SessionSlot("CLR001N", "target", None, None)   # type: ignore[arg-type]
    for ev in (LoggedOn(30, False), AuthFailed("stale_sending_time"), ResendServed(1, 10, 8, 2),
               ResendRequested(5, 9), SessionRejectSent(3, 5, "bad"),
               ProtocolError("seq_too_low", "34 too low")):
        sink(slot, ev)
    assert status.flush()
    assert '"CLR001N": 1.0' in status.path.read_text()      # connected since
    sink(slot, Disconnect("peer closed"))
    assert status.flush()
    assert '"connected": {}' in status.path.read_text()
    assert '"CLR001N": [7, 9]' in status.path.read_text()
    sink(None, AuthFailed("unknown_session"))
    sink(None, Refused("first_message_not_logon"))
    sink(None, object())                                  # anything else: ignored
    fams = await scrape(m)
    assert value(fams, "dcgateway_logons_accepted", session="CLR001N") == 1
    assert value(fams, "dcgateway_logons_rejected", session="CLR001N",
                 reason="stale_sending_time") == 1
    assert value(fams, "dcgateway_resend_requests_served", session="CLR001N") == 1
    assert value(fams, "dcgateway_messages_resent", session="CLR001N") == 8
    assert value(fams, "dcgateway_messages_gap_filled", session="CLR001N") == 2
    assert value(fams, "dcgateway_resend_requests_sent", session="CLR001N") == 1
    assert value(fams, "dcgateway_session_rejects_sent", session="CLR001N") == 1
    assert value(fams, "dcgateway_session_protocol_errors", session="CLR001N") == 1
    assert value(fams, "dcgateway_connections_refused", reason="unknown_session") == 1
    assert value(fams, "dcgateway_connections_refused", reason="first_message_not_logon") == 1


@pytest.mark.asyncio
async def test_reload_metrics(scrape) -> None:
    m = make()
    fams = await scrape(m)
    assert value(fams, "dcgateway_config_last_reload_successful") == 1
    started = value(fams, "dcgateway_config_last_reload_success_timestamp_seconds")
    assert started > 1.6e9
    m.reload(True)
    m.reload(False)
    fams = await scrape(m)
    assert value(fams, "dcgateway_config_reloads") == 2
    assert value(fams, "dcgateway_config_reload_failures") == 1
    assert value(fams, "dcgateway_config_last_reload_successful") == 0
    assert value(fams, "dcgateway_config_last_reload_success_timestamp_seconds") >= started
    m.reload(True)
    fams = await scrape(m)
    assert value(fams, "dcgateway_config_last_reload_successful") == 1


@pytest.mark.asyncio
async def test_set_groups_follows_reloads(scrape) -> None:
    m = make()
    m.group_copy("CLEARCO/clearco-all-fills", 4)
    m.set_groups(["CLEARCO/clearco-all-fills", "CLEARCO/new-group"])
    fams = await scrape(m)
    assert samples(fams, "dcgateway_group_copies") == {
        ("CLEARCO/clearco-all-fills",): 4, ("CLEARCO/new-group",): 0}
    m.group_copy("CLEARCO/new-group", 1)
    m.group_copy("CLEARCO/clearco-everything-fix", 1)     # gone: dropped
    fams = await scrape(m)
    assert value(fams, "dcgateway_group_copies", group="CLEARCO/new-group") == 1


# -- state gauges from the snapshot -------------------------------------------------------------

@pytest.mark.asyncio
async def test_snapshot_gauges(scrape) -> None:
    m = make(snapshot=snapshot_fn())
    fams = await scrape(m)
    assert samples(fams, "dcgateway_session_connected") == {
        ("source", "ABC123N"): 1, ("source", "ABD123N"): 0, ("target", "CLR001N"): 1,
        ("target", "CLRFIX44"): 0}                     # absent from the snapshot: down
    assert samples(fams, "dcgateway_session_next_in_seq_num") == {
        ("ABC123N",): 101, ("CLR001N",): 3, ("ABD123N",): 1}
    assert samples(fams, "dcgateway_session_next_out_seq_num") == {
        ("ABC123N",): 7, ("CLR001N",): 42, ("ABD123N",): 1}
    assert samples(fams, "dcgateway_session_port_closed") == {
        ("ABC123N",): 0, ("CLR001N",): 0, ("ABD123N",): 1}
    assert samples(fams, "dcgateway_target_backlog_messages") == {
        ("CLR001N",): 17, ("CLRFIX44",): 250000}
    assert samples(fams, "dcgateway_target_catching_up") == {("CLR001N",): 0, ("CLRFIX44",): 1}
    assert samples(fams, "dcgateway_key_expiry_timestamp_seconds") == {
        ("AKIDABC0001", "ABC"): 1_900_000_000.0, ("AKIDCLR0001", "CLR"): 1_800_000_000.5}
    assert value(fams, "dcgateway_journal_writable") == 1


@pytest.mark.asyncio
async def test_snapshot_is_read_at_each_scrape(scrape) -> None:
    state = {"writable": True, "backlog": 0}
    m = make()
    m.snapshot = lambda: Snapshot(targets=[TargetStatus("CLR001N", state["backlog"])],
                                  journal_writable=state["writable"])
    fams = await scrape(m)
    assert value(fams, "dcgateway_journal_writable") == 1
    state.update(writable=False, backlog=9)
    fams = await scrape(m)
    assert value(fams, "dcgateway_journal_writable") == 0
    assert value(fams, "dcgateway_target_backlog_messages", session="CLR001N") == 9


@pytest.mark.asyncio
async def test_a_failing_snapshot_does_not_fail_the_scrape(scrape, caplog) -> None:
    def broken() -> Snapshot:
        raise RuntimeError("gateway state unavailable")

    m = make(snapshot=broken)
    m.messages_in("ABC123N", "order", 2)
    with caplog.at_level(logging.ERROR, "dcgateway.metrics"):
        fams = await scrape(m)
    assert value(fams, "dcgateway_metrics_snapshot_errors") == 1
    assert value(fams, "dcgateway_messages_received", session="ABC123N", category="order") == 2
    assert set(samples(fams, "dcgateway_session_connected").values()) == {0}
    assert "snapshot failed" in caplog.text


# -- no global state ----------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_two_gateways_do_not_interfere(scrape) -> None:
    a, b = make(), make()
    a.messages_in("ABC123N", "execution", 5)
    a.observe_fanout_latencies("CLR001N", [0.001])
    b.logon_accepted("ABC123N")
    fa, fb = await scrape(a), await scrape(b)
    assert value(fa, "dcgateway_messages_received", session="ABC123N", category="execution") == 5
    assert value(fb, "dcgateway_messages_received", session="ABC123N", category="execution") == 0
    assert value(fa, "dcgateway_logons_accepted", session="ABC123N") == 0
    assert value(fb, "dcgateway_logons_accepted", session="ABC123N") == 1
    assert value(fb, "dcgateway_fanout_latency_seconds", "_count", session="CLR001N") == 0


def test_default_registry_untouched() -> None:
    make()
    names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("dcgateway") for n in names)


def test_a_registry_is_required() -> None:
    with pytest.raises(ValueError):
        GatewayMetrics(None, sessions=SESSIONS)  # type: ignore[arg-type]


def test_one_registry_holds_one_gateway() -> None:
    """Building twice on one registry is a wiring bug: refused (duplicate names)."""
    reg = CollectorRegistry()
    make(reg)
    with pytest.raises(ValueError):
        make(reg)


def test_metric_names_lists_what_queries_may_use() -> None:
    names = make(process_metrics=False).metric_names()
    assert "dcgateway_messages_received_total" in names
    assert "dcgateway_fanout_latency_seconds_bucket" in names
    assert "dcgateway_session_connected" in names
    assert "dcgateway_messages_received" not in names
    assert not any(n.startswith("dcgateway_process_") for n in names)


def test_from_config() -> None:
    config = load_config(REPO / "config" / "gateway.yaml")
    m = GatewayMetrics.from_config(CollectorRegistry(), config)
    assert m.session_ids == tuple(s.comp_id for s in config.sessions)
    reg = m.registry
    for g in config.groups:
        assert reg.get_sample_value("dcgateway_group_copies_total",
                                    {"group": f"{g.entity}/{g.name}"}) == 0


def test_hot_path_cost_is_per_batch() -> None:
    """A batch of 1,000 latencies costs about as much as 1,000 bisects, far below 1,000
    Histogram.observe calls: loose bound, only to catch a regression to per-value locking."""
    import time
    m = make()
    values = [0.0002] * 1000
    t0 = time.perf_counter()
    for _ in range(20):
        m.observe_fanout_latencies("CLR001N", values)
    per_value = (time.perf_counter() - t0) / 20_000
    assert per_value < 2e-6, per_value


@pytest.mark.asyncio
async def test_a_bad_snapshot_row_drops_the_whole_snapshot(scrape) -> None:
    """A row that cannot be exposed (None seq) fails the snapshot as a whole: no half-filled
    gauges, every session reported down, the error counted."""
    m = make(snapshot=lambda: Snapshot(
        sessions=[SessionStatus("ABC123N", True, 5, 5), SessionStatus("CLR001N", True, None, 1)],
        journal_writable=True))
    fams = await scrape(m)
    assert value(fams, "dcgateway_metrics_snapshot_errors") == 1
    assert samples(fams, "dcgateway_session_next_in_seq_num") == {}
    assert samples(fams, "dcgateway_journal_writable") == {}
    assert set(samples(fams, "dcgateway_session_connected").values()) == {0}
