"""dcgateway.config: the contract's files load as written; every invalid config is refused with
file, line, path and what was expected; groups round-trip through dump/write/load."""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from dcgateway.config import (
    Administrator,
    Entity,
    Filters,
    GatewayConfig,
    GroupDef,
    IncludeExclude,
    SessionDef,
    dump_groups,
    groups_from_data,
    load_config,
    load_groups,
    write_groups_atomic,
)
from dcgateway.errors import ConfigError

from .tlsfiles import encrypted_key, self_signed

REPO = Path(__file__).resolve().parent.parent
REPO_CONFIG = REPO / "config"
#: The operator contract's gateway.yaml and groups.yaml, as the venue hands them to users.
CONTRACT = Path(__file__).resolve().parent / "contract"
# The contract's files when present; else the repo's shipped copy (same entities, sessions,
# groups and the same lines the mutations below edit).
BASE = CONTRACT if (CONTRACT / "gateway.yaml").is_file() else REPO_CONFIG
GATEWAY_TEXT = (BASE / "gateway.yaml").read_text()
GROUPS_TEXT = (BASE / "groups.yaml").read_text()
needs_contract = pytest.mark.skipif(not (CONTRACT / "gateway.yaml").is_file(),
                                    reason=f"operator contract not found at {CONTRACT}")


def write(tmp_path: Path, gateway: str = GATEWAY_TEXT, groups: str = GROUPS_TEXT) -> Path:
    (tmp_path / "gateway.yaml").write_text(gateway)
    (tmp_path / "groups.yaml").write_text(groups)
    return tmp_path / "gateway.yaml"


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle``."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def assert_expected_contract(config: GatewayConfig, folder: Path) -> None:
    g = config.gateway
    assert config.path == folder / "gateway.yaml"
    assert g.comp_id == "DCGW"
    assert (g.listen.host, g.listen.port) == ("127.0.0.1", 9878)
    assert (g.metrics.host, g.metrics.port) == ("127.0.0.1", 9100)
    assert g.data_dir == folder / "var"
    assert g.keystore.path == folder / "var" / "keys.db"
    assert g.keystore.master_key_file == folder / "var" / "master.key"
    assert g.market_close.time == datetime.time(16, 0)
    assert g.market_close.tz == ZoneInfo("America/Chicago")
    assert (g.week_start.day, g.week_start.time) == (6, datetime.time(16, 0))
    assert g.logon_timeout_s == 60 and g.sending_time_tolerance_s == 30
    assert g.smtp is not None and (g.smtp.host, g.smtp.port) == ("127.0.0.1", 8025)
    assert g.smtp.sender == "dcgateway@localhost"
    assert (g.max_message_size, g.heartbeat_min_s, g.heartbeat_max_s) == (65536, 5, 60)
    assert config.entities == (
        Entity("TRADECO", (Administrator("tina", "tina@tradeco.example"),)),
        Entity("CLEARCO", (Administrator("carl", "carl@clearco.example"),)))
    assert config.sessions == (
        SessionDef("ABC123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABC", "ILINK2"),
        SessionDef("ABD123N", "source", "TRADECO", "ilink2", "FIX.4.2", "ABD", "ILINK2"),
        SessionDef("CLR001N", "target", "CLEARCO", "ilink2", "FIX.4.2", "CLR", "ILINK2"),
        SessionDef("CLRFIX44", "target", "CLEARCO", "fix", "FIX.4.4", "CLRFIX44", "FIX.4.4"))
    assert config.groups_file == folder / "groups.yaml"
    assert config.groups == (
        GroupDef("CLEARCO", "clearco-all-fills", "ilink2",
                 Filters(frozenset({"execution"}),
                         account=IncludeExclude(frozenset({"ACCT01", "ACCT02"})),
                         symbol=IncludeExclude(None, frozenset({"GEZ6"}))),
                 ("ABC123N", "ABD123N"), ("CLR001N",)),
        GroupDef("CLEARCO", "clearco-everything-fix", "fix",
                 Filters(frozenset({"execution", "acknowledgment", "order"})),
                 ("ABC123N",), ("CLRFIX44",)))
    assert config.session("ABC123N").key_scope == "ABC"
    assert config.session("CLRFIX44").key_scope == "CLRFIX44"
    assert config.session("NOPE") is None
    assert config.entity("CLEARCO").administers("carl")
    assert not config.entity("CLEARCO").administers("tina")
    assert config.entity("NOPE") is None


# -- the contract and the shipped config load ---------------------------------------------------

@needs_contract
def test_contract_files_copied_side_by_side_load(tmp_path: Path) -> None:
    shutil.copy(CONTRACT / "gateway.yaml", tmp_path)
    shutil.copy(CONTRACT / "groups.yaml", tmp_path)
    assert_expected_contract(load_config(tmp_path / "gateway.yaml"), tmp_path)


@needs_contract
def test_contract_files_load_in_place_read_only() -> None:
    before = sorted(p.name for p in CONTRACT.iterdir())
    config = load_config(CONTRACT / "gateway.yaml")
    assert_expected_contract(config, CONTRACT)
    assert sorted(p.name for p in CONTRACT.iterdir()) == before      # nothing written


def test_repo_config_loads_with_data_under_config_var() -> None:
    config = load_config(REPO_CONFIG / "gateway.yaml")
    assert_expected_contract(config, REPO_CONFIG)
    assert config.gateway.data_dir == REPO_CONFIG / "var"


def test_config_is_frozen_and_hashable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    with pytest.raises(AttributeError):
        config.gateway.comp_id = "X"          # type: ignore[misc]
    assert hash(config.groups) == hash(load_config(tmp_path / "gateway.yaml").groups)
    assert config.with_groups(()).groups == () and config.with_groups(()).session("ABC123N")


def test_relative_paths_resolve_against_the_naming_files_folder(tmp_path: Path,
                                                                monkeypatch) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "dc").mkdir()
    text = GATEWAY_TEXT.replace("groups_file: groups.yaml", "groups_file: dc/groups.yaml")
    (sub / "gateway.yaml").write_text(text)
    (sub / "dc" / "groups.yaml").write_text(GROUPS_TEXT)
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/gateway.yaml")
    assert config.path == sub / "gateway.yaml"
    assert config.gateway.data_dir == sub / "var"
    assert config.gateway.keystore.path == sub / "var" / "keys.db"
    assert config.groups_file == sub / "dc" / "groups.yaml"
    assert len(config.groups) == 2


def test_optional_keys_and_defaults(tmp_path: Path) -> None:
    self_signed(tmp_path / "tls", "gw-")
    text = GATEWAY_TEXT.replace("  logon_timeout_s: 60", "  heartbeat_max_s: 90\n"
                                "  tls: {cert_file: tls/gw-cert.pem, key_file: tls/gw-key.pem}\n"
                                "  environment: CERT\n  logon_timeout_s: 60")
    text = re.sub(r"  keystore:\n.*\n.*\n", "", text)      # keystore defaults to data_dir
    text = text.replace("  smtp: {", "  # smtp: {")
    text = text.replace("    profile: fix  ", "    key_scope: 5\n    profile: fix  ")
    config = load_config(write(tmp_path, text))
    g = config.gateway
    assert g.heartbeat_max_s == 90 and g.environment == "CERT" and g.smtp is None
    assert g.tls is not None and g.tls.cert_file == tmp_path / "tls" / "gw-cert.pem"
    assert g.tls.ca_file is None and g.tls.require_client_cert is False
    assert g.keystore.path == tmp_path / "var" / "keys.db"
    assert (g.write_buffer_high, g.write_buffer_low, g.max_connections) == (1_048_576, 262_144,
                                                                           1024)
    assert config.session("CLRFIX44").key_scope == "CLRFI"


def test_each_keystore_path_defaults_on_its_own(tmp_path: Path) -> None:
    """README: keystore.path defaults to data_dir/keys.db, master_key_file to
    data_dir/master.key; giving one of them leaves the other at its default."""
    text = re.sub(r"  keystore:\n.*\n.*\n", "  keystore: {path: elsewhere/keys.db}\n",
                  GATEWAY_TEXT)
    g = load_config(write(tmp_path, text)).gateway
    assert g.keystore.path == tmp_path / "elsewhere" / "keys.db"
    assert g.keystore.master_key_file == tmp_path / "var" / "master.key"
    text = re.sub(r"  keystore:\n.*\n.*\n", "  keystore: {master_key_file: k/master.key}\n",
                  GATEWAY_TEXT)
    g = load_config(write(tmp_path, text)).gateway
    assert (g.keystore.path, g.keystore.master_key_file) == (tmp_path / "var" / "keys.db",
                                                              tmp_path / "k" / "master.key")


def _tls_problems(tmp_path: Path, cert: str, key: str, ca: str = "") -> list[str]:
    line = f"  tls: {{cert_file: {cert}, key_file: {key}" + (f", ca_file: {ca}" if ca else "")
    text = GATEWAY_TEXT.replace("  logon_timeout_s: 60", line + "}\n  logon_timeout_s: 60")
    return problems_of(write(tmp_path, text))


def test_tls_files_that_cannot_be_used_are_refused_with_the_key(tmp_path: Path) -> None:
    """check-config loads the certificate and key as the listener will: a file that is not a
    certificate, a key that is not the certificate's, an encrypted key (never prompted for),
    a CA file without certificates: each named with its key and line, before any start."""
    cert, key = self_signed(tmp_path / "a")
    _, other_key = self_signed(tmp_path / "b")
    encrypted = encrypted_key(key, tmp_path / "enc.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    f = tmp_path / "gateway.yaml"
    line = line_of(GATEWAY_TEXT, "  logon_timeout_s: 60")
    assert _tls_problems(tmp_path, "junk.pem", str(key)) == [
        f"{f}:{line}: gateway.tls.cert_file: {tmp_path / 'junk.pem'} holds no PEM certificate; "
        "expected a PEM certificate (chain)"]
    assert _tls_problems(tmp_path, str(cert), str(cert)) == [
        f"{f}:{line}: gateway.tls.key_file: {cert} holds no PEM private key; expected the "
        "certificate's PEM private key"]
    assert _tls_problems(tmp_path, str(cert), str(encrypted)) == [
        f"{f}:{line}: gateway.tls.key_file: {encrypted} is encrypted with a passphrase; "
        "expected an unencrypted PEM private key (readable by the gateway's user only)"]
    [mismatch] = _tls_problems(tmp_path, str(cert), str(other_key))
    assert mismatch.startswith(f"{f}:{line}: gateway.tls.key_file: OpenSSL cannot use "
                               f"{other_key} with {cert} (")
    assert mismatch.endswith("expected the private key that belongs to cert_file")
    [bad_ca] = _tls_problems(tmp_path, str(cert), str(key), "junk.pem")
    assert bad_ca.startswith(f"{f}:{line}: gateway.tls.ca_file: cannot load "
                             f"{tmp_path / 'junk.pem'} (")
    config = load_config(write(tmp_path, GATEWAY_TEXT.replace(
        "  logon_timeout_s: 60", f"  tls: {{cert_file: {cert}, key_file: {key}, ca_file: {cert}}}"
        "\n  logon_timeout_s: 60")))
    assert config.gateway.tls is not None and config.gateway.tls.ca_file == cert


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file\n")
    f = write(tmp_path)
    assert problems_of(f) == [
        f"{f}:{line_of(GATEWAY_TEXT, 'data_dir:')}: gateway.data_dir: {tmp_path / 'var'} exists "
        "and is not a folder; expected a folder path (relative to this file's folder)"]


def test_unquoted_time_is_not_read_as_a_base_60_number(tmp_path: Path) -> None:
    text = GATEWAY_TEXT.replace('market_close: {time: "16:00"', "market_close: {time: 16:00")
    assert 'time: 16:00' in text
    config = load_config(write(tmp_path, text))
    assert config.gateway.market_close.time == datetime.time(16, 0)


def test_filter_values_are_the_text_typed(tmp_path: Path) -> None:
    """YAML 1.1 would read NO as false, ON as true and 00123 as 123."""
    groups = GROUPS_TEXT.replace("{include: [ACCT01, ACCT02]}", "{include: [NO, 00123]}")
    groups = groups.replace("symbol: {exclude: [GEZ6]}",
                            "symbol: [ON, 'yes']\n      side: {exclude: [sell, '5']}\n"
                            "      sender_sub_id: {include: [MSG]}")
    group = load_config(write(tmp_path, groups=groups)).groups[0]
    assert group.filters.account == IncludeExclude(frozenset({"NO", "00123"}))
    assert group.filters.symbol == IncludeExclude(frozenset({"ON", "yes"}))
    assert group.filters.side == IncludeExclude(None, frozenset({"2", "5"}))
    assert group.filters.sender_sub_id == IncludeExclude(frozenset({"MSG"}))


@pytest.mark.parametrize("text", ["groups: []\n", "", "# no groups yet\n", "groups:\n"])
def test_groups_file_without_groups_is_valid(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, groups=text)).groups == ()


# -- invalid configs: file, line, path, expectation ---------------------------------------------

TRADECO_TARGET = ("  - comp_id: TRD001N\n    role: target\n    entity: TRADECO\n"
                  "    profile: ilink2\n\ngroups_file:")

# (id, file edited, old, new, text on the problem's line, path, what is wrong, expected)
INVALID = [
    ("bad-role", "gateway", "role: source                     # source: order entry traffic",
     "role: sorce #", "role: sorce", "sessions[0].role", "'sorce' is not allowed",
     "expected one of source, target"),
    ("unknown-entity", "gateway", "entity: CLEARCO\n    profile: fix",
     "entity: CLEARC\n    profile: fix", "entity: CLEARC\n", "sessions[3].entity",
     "unknown entity 'CLEARC'", "expected one of CLEARCO, TRADECO"),
    ("unknown-key", "gateway", "logon_timeout_s: 60", "logon_timout_s: 60", "logon_timout_s",
     "gateway.logon_timout_s", "unknown key 'logon_timout_s' (did you mean 'logon_timeout_s'?)",
     "expected one of comp_id, listen, metrics,"),
    ("bad-port", "gateway", "port: 9878}", "port: 98780}", "port: 98780",
     "gateway.listen.port", "'98780' is out of range", "expected a whole number from 0 to 65535"),
    ("port-not-a-number", "gateway", "port: 9100}", "port: http}", "port: http",
     "gateway.metrics.port", "'http' is not a whole number", "expected a whole number"),
    ("commit-delay-too-long", "gateway", "logon_timeout_s: 60",
     "logon_timeout_s: 60\n  journal_commit_delay_s: 5", "journal_commit_delay_s: 5",
     "gateway.journal_commit_delay_s", "'5' is out of range", "expected a number from 0 to 1"),
    ("max-pending-too-small", "gateway", "logon_timeout_s: 60",
     "logon_timeout_s: 60\n  target_max_pending: 5", "target_max_pending: 5",
     "gateway.target_max_pending", "'5' is out of range",
     "expected a whole number from 100 to 10000000"),
    ("bad-tz", "gateway", "tz: America/Chicago}\n  week", "tz: America/Chicgo}\n  week",
     "America/Chicgo", "gateway.market_close.tz", "'America/Chicgo' is not a known time zone "
     "(did you mean 'America/Chicago'?)", "expected an IANA time zone name"),
    ("bad-time", "gateway", 'day: sunday, time: "16:00"', 'day: sunday, time: "4pm"', "4pm",
     "gateway.week_start.time", "'4pm' is not a time", 'expected a quoted 24-hour time "HH:MM"'),
    ("bad-weekday", "gateway", "day: sunday", "day: sundae", "sundae", "gateway.week_start.day",
     "'sundae' is not allowed", "expected one of monday, tuesday"),
    ("duplicate-comp-id", "gateway", "comp_id: ABD123N", "comp_id: ABC123N\n",
     "comp_id: ABC123N\n", "sessions[1].comp_id", "'ABC123N' is already used by sessions[0]",
     "expected each comp_id once"),
    ("ilink2-comp-id-length", "gateway", "comp_id: CLR001N", "comp_id: CLR01N", "CLR01N",
     "sessions[2].comp_id", "'CLR01N' is not an iLink SenderCompID (6 characters)",
     "expected 7 characters for profile ilink2: Session ID (3) + Firm ID (3) + fault-tolerance "
     "letter P, B, U or N"),
    ("ilink2-comp-id-letter", "gateway", "comp_id: CLR001N", "comp_id: CLR001X", "CLR001X",
     "sessions[2].comp_id", "'CLR001X' is not an iLink SenderCompID", "expected 7 characters"),
    ("comp-id-with-equals", "gateway", "comp_id: DCGW", "comp_id: DC=GW", "DC=GW",
     "gateway.comp_id", "'DC=GW' is not valid", "expected 1-64 printable ASCII characters"),
    ("missing-key", "gateway", "    role: target                     # target",
     "    # role: target", "comp_id: CLR001N", "sessions[2].role", "missing",
     "expected one of source, target"),
    ("duplicate-yaml-key", "gateway", "  data_dir: var", "  data_dir: var\n  data_dir: var2",
     "data_dir: var2", "gateway.data_dir", "duplicate key (first on line",
     "expected each key once"),
    ("groups-unknown-session", "groups", "targets: [CLR001N]", "targets: [CLR009N]", "CLR009N",
     "groups[0].targets[0]", "unknown session 'CLR009N'",
     "expected a target session of entity CLEARCO: CLR001N, CLRFIX44"),
    ("groups-source-not-a-source", "groups", "sources: [ABC123N]\n", "sources: [CLR001N]\n",
     "sources: [CLR001N]", "groups[1].sources[0]", "'CLR001N' is a target session",
     "expected a source session: ABC123N, ABD123N"),
    ("groups-target-not-a-target", "groups", "targets: [CLRFIX44]", "targets: [ABC123N]",
     "targets: [ABC123N]", "groups[1].targets[0]", "'ABC123N' is a source session",
     "expected a target session of entity CLEARCO"),
    ("groups-duplicate-name", "groups", "name: clearco-everything-fix", "name: clearco-all-fills\n",
     "name: clearco-all-fills\n", "groups[1].name",
     "duplicate group name 'clearco-all-fills' in entity CLEARCO (also groups[0])",
     "expected group names unique within an entity"),
    ("groups-unknown-category", "groups", "[execution]", "[execution, fills]", "fills]",
     "groups[0].filters.categories[1]", "'fills' is not allowed",
     "expected one of execution, acknowledgment, order, mass_action, reject"),
    ("groups-unknown-filter-key", "groups", "symbol: {exclude", "symbl: {exclude", "symbl",
     "groups[0].filters.symbl", "unknown key 'symbl' (did you mean 'symbol'?)",
     "expected one of categories, account, symbol, security_exchange, side, sender_sub_id"),
    ("groups-bad-side", "groups", "symbol: {exclude", "side: {include: [sideways]}\n"
     "      symbol: {exclude", "sideways", "groups[0].filters.side.include[0]",
     "'sideways' is not a Side (54) value", "expected a FIX Side (54) code"),
    ("groups-empty-sources", "groups", "sources: [ABC123N]\n", "sources: []\n", "sources: []",
     "groups[1].sources", "empty list", "expected a non-empty list of source sessions"),
    ("groups-unknown-entity", "groups", "  - entity: CLEARCO\n    name: clearco-e",
     "  - entity: CLEARKO\n    name: clearco-e", "CLEARKO", "groups[1].entity",
     "unknown entity 'CLEARKO'", "expected one of CLEARCO, TRADECO"),
    ("groups-scalar-for-list", "groups", "targets: [CLRFIX44]", "targets: CLRFIX44",
     "targets: CLRFIX44", "groups[1].targets", "'CLRFIX44' is a single value",
     "expected a non-empty list of target sessions"),
    ("groups-two-front-ends-one-target", "groups", "targets: [CLRFIX44]", "targets: [CLR001N]",
     "front_end: fix", "groups[1].front_end", "'fix' differs from 'ilink2' used by group "
     "clearco-all-fills for target CLR001N", "expected one front end per target"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_names_file_line_path_and_expectation(tmp_path: Path, case) -> None:
    _, which, old, new, anchor, path, what, expected = case
    texts = {"gateway": GATEWAY_TEXT, "groups": GROUPS_TEXT}
    assert old in texts[which], f"test mutation does not apply: {old!r}"
    texts[which] = texts[which].replace(old, new, 1)
    problems = problems_of(write(tmp_path, texts["gateway"], texts["groups"]))
    file = tmp_path / f"{which}.yaml"
    line = line_of(texts[which], anchor)
    prefix = f"{file}:{line}: {path}: "
    mine = [p for p in problems if p.startswith(prefix)]
    assert mine, f"no problem starting {prefix!r} in {problems}"
    assert mine[0].startswith(prefix + what), mine[0]
    assert f"; {expected}" in mine[0], mine[0]


def test_target_of_another_entity(tmp_path: Path) -> None:
    gateway = GATEWAY_TEXT.replace("\ngroups_file:", TRADECO_TARGET)
    groups = GROUPS_TEXT.replace("targets: [CLRFIX44]", "targets: [TRD001N]")
    problems = problems_of(write(tmp_path, gateway, groups))
    line = line_of(groups, "targets: [TRD001N]")
    assert problems == [f"{tmp_path / 'groups.yaml'}:{line}: groups[1].targets[0]: 'TRD001N' "
                        "belongs to entity TRADECO; expected a target session of entity CLEARCO: "
                        "CLR001N, CLRFIX44"]


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    gateway = (GATEWAY_TEXT.replace("port: 9878}", "port: -1}")
               .replace("logon_timeout_s: 60", "logon_timout_s: 60")
               .replace("role: source                     # source: order entry traffic",
                        "role: sorce #")
               .replace("tz: America/Chicago}\n  week", "tz: Mars/Olympus}\n  week"))
    groups = GROUPS_TEXT.replace("[execution]", "[fills]").replace("symbol:", "symbl:")
    problems = problems_of(write(tmp_path, gateway, groups))
    paths = [p.split(": ")[1] for p in problems]
    assert paths == ["gateway.listen.port", "gateway.market_close.tz", "gateway.logon_timout_s",
                     "sessions[0].role", "groups[0].filters.categories[0]",
                     "groups[0].filters.symbl"], problems
    assert all(re.match(r"^/.+\.yaml:\d+: ", p) for p in problems)
    # a session with a problem of its own does not also make groups naming it "unknown"
    assert not any("ABC123N" in p for p in problems)


def test_relative_display_name_as_given(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", GATEWAY_TEXT.replace("role: source                     # source",
                                                    "role: sorce #"))
    monkeypatch.chdir(tmp_path)
    problems = problems_of(Path("config/gateway.yaml"))
    line = line_of(GATEWAY_TEXT, "role: source                     # source")
    assert problems == [f"config/gateway.yaml:{line}: sessions[0].role: 'sorce' is not allowed; "
                        "expected one of source, target"]


def make_many_sources(n: int, target_profile: str, groups_of: int | None = None) -> tuple[str, str]:
    sources = [f"S{i:05d}N" for i in range(n)]
    sessions = "".join(f"  - {{comp_id: {s}, role: source, entity: TRADECO, profile: ilink2}}\n"
                       for s in sources)
    target = ("  - {comp_id: CLR001N, role: target, entity: CLEARCO, profile: ilink2}\n"
              if target_profile == "ilink2" else
              "  - {comp_id: CLR001N, role: target, entity: CLEARCO, profile: fix}\n")
    head = GATEWAY_TEXT[:GATEWAY_TEXT.index("sessions:")]
    gateway = head + "sessions:\n" + sessions + target + "groups_file: groups.yaml\n"
    size = groups_of or n
    chunks = [sources[i:i + size] for i in range(0, n, size)]
    groups = "groups:\n" + "".join(
        f"  - entity: CLEARCO\n    name: g{k}\n    front_end: {target_profile}\n"
        f"    filters: {{categories: [execution]}}\n    sources: [{', '.join(chunk)}]\n"
        "    targets: [CLR001N]\n" for k, chunk in enumerate(chunks))
    return gateway, groups


def test_more_than_1000_sources_on_an_ilink2_target(tmp_path: Path) -> None:
    gateway, groups = make_many_sources(1001, "ilink2")
    problems = problems_of(write(tmp_path, gateway, groups))
    assert problems == [f"{tmp_path / 'groups.yaml'}:6: groups[0].sources: 1001 source sender "
                        "comps reach ilink2 target CLR001N; expected at most 1000 for an ilink2 "
                        "target"]


def test_1000_sources_on_ilink2_and_1001_on_fix_targets_are_fine(tmp_path: Path) -> None:
    assert len(load_config(write(tmp_path, *make_many_sources(1000, "ilink2"))).sessions) == 1001
    assert len(load_config(write(tmp_path, *make_many_sources(1001, "fix"))).groups) == 1


def test_source_limit_counts_every_group_reaching_the_target(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, *make_many_sources(1001, "ilink2", groups_of=600)))
    assert len(problems) == 1
    assert "groups[1].sources: 1001 source sender comps reach ilink2 target CLR001N (over all " \
           "its groups); expected at most 1000" in problems[0]


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    text = GATEWAY_TEXT.replace("logon_timeout_s: 60", "logon_timeout_s: 60: 61")
    problems = problems_of(write(tmp_path, text))
    line = line_of(text, "logon_timeout_s: 60: 61")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'gateway.yaml'}:{line}: invalid YAML at column")
    assert problems[0].endswith("; expected well-formed YAML")


def test_malformed_groups_yaml_and_control_characters(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, groups=GROUPS_TEXT.replace("[ABC123N]", "[ABC123N")))
    assert len(problems) == 1 and "groups.yaml:" in problems[0] and "invalid YAML" in problems[0]
    problems = problems_of(write(tmp_path, GATEWAY_TEXT.replace("DCGW", "DC\x01GW")))
    assert f"{tmp_path / 'gateway.yaml'}:{line_of(GATEWAY_TEXT, 'DCGW')}: " in problems[0]
    assert "U+0001" in problems[0]


def test_missing_files(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "nope.yaml")
    assert problems == [f"{tmp_path / 'nope.yaml'}: file not found; expected a readable YAML file"]
    path = write(tmp_path)
    (tmp_path / "groups.yaml").unlink()
    assert problems_of(path) == [f"{tmp_path / 'groups.yaml'}: file not found; expected a "
                                 "readable YAML file"]


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("- a\n- b\n", "(top): a list given; expected a mapping with keys gateway, entities"),
    ("gateway: {}\n", "gateway.comp_id: missing"),
])
def test_degenerate_gateway_files(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, text))
    assert any(expected in p for p in problems), problems
    if text.startswith("gateway"):
        assert any("entities: missing" in p for p in problems)
        assert any("sessions: missing" in p for p in problems)


# -- load_groups, dump_groups, write_groups_atomic ----------------------------------------------

def test_load_groups_alone(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    assert load_groups(tmp_path / "groups.yaml", config.sessions, config.entities) == config.groups
    (tmp_path / "groups.yaml").write_text(GROUPS_TEXT.replace("[CLR001N]", "[CLR009N]"))
    with pytest.raises(ConfigError) as info:
        load_groups(tmp_path / "groups.yaml", config.sessions, ["CLEARCO", "TRADECO"])
    assert info.value.problems[0].startswith(f"{tmp_path / 'groups.yaml'}:")


def test_dump_and_atomic_write_round_trip(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    extra = GroupDef("TRADECO", "tradeco-own", "fix",
                     Filters(frozenset({"reject", "mass_action"}),
                             side=IncludeExclude(frozenset({"1"}), frozenset({"5"})),
                             account=IncludeExclude(frozenset({"NO", "007"}))),
                     ("ABD123N", "ABC123N"), ("CLRFIX44",))
    groups = config.groups + (extra,)
    with pytest.raises(ConfigError):      # CLRFIX44 belongs to CLEARCO, not TRADECO
        groups_from_data([yaml.safe_load(dump_groups([extra]))["groups"][0]], config.sessions,
                         config.entities)
    groups = config.groups + (GroupDef("CLEARCO", *[getattr(extra, f) for f in
                                                    ("name", "front_end", "filters",
                                                     "sources", "targets")]),)
    target = tmp_path / "groups.yaml"
    target.chmod(0o640)
    write_groups_atomic(target, groups)
    assert load_groups(target, config.sessions, config.entities) == groups
    assert load_config(tmp_path / "gateway.yaml").groups == groups
    assert isinstance(yaml.safe_load(target.read_text()), dict)
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml", "groups.yaml"]
    write_groups_atomic(target, ())
    assert load_groups(target, config.sessions, config.entities) == ()


def test_groups_from_data_reports_paths_without_a_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    data = {"entity": "CLEARCO", "name": "x", "front_end": "fix",
            "filters": {"categories": ["execution"]}, "sources": ["ABC123N"],
            "targets": ["ABC123N"]}
    with pytest.raises(ConfigError) as info:
        groups_from_data([data], config.sessions, config.entities)
    assert info.value.problems == ["groups[0].targets[0]: 'ABC123N' is a source session; "
                                   "expected a target session of entity CLEARCO: CLR001N, "
                                   "CLRFIX44"]


def test_cross_field_and_session_rules_are_all_reported(tmp_path: Path) -> None:
    gateway = (GATEWAY_TEXT
               .replace("port: 9100}", "port: 9878}")
               .replace("logon_timeout_s: 60", "logon_timeout_s: 60\n  heartbeat_min_s: 61\n"
                        "  write_buffer_low: 2000000")
               .replace("\ngroups_file:",
                        "  - {comp_id: ABC999N, role: target, entity: CLEARCO, profile: ilink2}\n"
                        "  - {comp_id: FOO, role: target, entity: CLEARCO, profile: fix, "
                        "key_scope: 4}\n"
                        "  - {comp_id: BAR123N, role: target, entity: CLEARCO, profile: ilink2, "
                        "begin_string: FIX.4.4}\n"
                        "  - {comp_id: DCGW, role: target, entity: CLEARCO, profile: fix}\n"
                        "\ngroups_file:"))
    problems = problems_of(write(tmp_path, gateway))
    found = [p.split(": ", 1)[1] for p in problems]
    assert found == [
        "gateway.metrics: 127.0.0.1:9878 is the listen address 127.0.0.1:9878; expected a "
        "different port for metrics",
        "gateway.heartbeat_min_s: 61 is above heartbeat_max_s 60; expected heartbeat_min_s <= "
        "heartbeat_max_s",
        "gateway.write_buffer_low: 2000000 is not below write_buffer_high 1048576; expected "
        "write_buffer_low < write_buffer_high",
        "sessions[4].comp_id: key scope 'ABC' is shared with sessions[0] of entity TRADECO; "
        "expected sessions sharing a key scope (Session ID) to belong to one entity",
        "sessions[5].key_scope: 4 is longer than comp_id 'FOO'; expected a number of leading "
        "characters from 1 to 3",
        "sessions[6].begin_string: 'FIX.4.4' with profile ilink2; expected FIX.4.2 (iLink 2 is "
        "FIX 4.2)",
        "sessions[7].comp_id: 'DCGW' is the gateway's own comp_id; expected a comp_id other than "
        "gateway.comp_id"], problems
    assert problems[0].startswith(f"{tmp_path / 'gateway.yaml'}:{line_of(gateway, 'metrics')}:")


# -- one front end per target --------------------------------------------------------------------

def test_groups_delivering_to_one_target_must_share_a_front_end(tmp_path: Path) -> None:
    groups = GROUPS_TEXT.replace("targets: [CLRFIX44]", "targets: [CLR001N]")
    problems = problems_of(write(tmp_path, groups=groups))
    line = line_of(groups, "front_end: fix")
    assert problems == [f"{tmp_path / 'groups.yaml'}:{line}: groups[1].front_end: 'fix' differs "
                        "from 'ilink2' used by group clearco-all-fills for target CLR001N; "
                        "expected one front end per target"]
    # the same front end for a shared target is fine
    same = groups.replace("front_end: fix", "front_end: ilink2")
    loaded = load_config(write(tmp_path, groups=same)).groups
    assert [(g.front_end, g.targets) for g in loaded] == [("ilink2", ("CLR001N",))] * 2


def test_front_end_rule_names_the_target_and_the_first_group_reaching_it(tmp_path: Path) -> None:
    groups = (GROUPS_TEXT.replace("targets: [CLRFIX44]", "targets: [CLRFIX44, CLR001N]")
              + "  - entity: CLEARCO\n    name: clearco-third\n    front_end: ilink2\n"
                "    filters: {categories: [order]}\n    sources: [ABD123N]\n"
                "    targets: [CLR001N, CLRFIX44]\n")
    problems = problems_of(write(tmp_path, groups=groups))
    file = tmp_path / "groups.yaml"
    second = line_of(groups, "front_end: fix")
    third = line_of(groups, "name: clearco-third") + 1
    assert problems == [
        f"{file}:{second}: groups[1].front_end: 'fix' differs from 'ilink2' used by group "
        "clearco-all-fills for target CLR001N; expected one front end per target",
        f"{file}:{third}: groups[2].front_end: 'ilink2' differs from 'fix' used by group "
        "clearco-everything-fix for target CLRFIX44; expected one front end per target"]


def test_front_end_rule_ignores_groups_refused_for_other_reasons(tmp_path: Path) -> None:
    """No cascade: a group with a problem of its own does not claim its targets' front end."""
    groups = (GROUPS_TEXT.replace("targets: [CLRFIX44]", "targets: [CLR001N]")
              .replace("[execution]", "[fills]"))
    problems = problems_of(write(tmp_path, groups=groups))
    assert len(problems) == 1 and "groups[0].filters.categories[0]: 'fills'" in problems[0]


def test_front_end_rule_in_load_groups_and_groups_from_data(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    data = {"entity": "CLEARCO", "name": "clearco-fix-too", "front_end": "fix",
            "filters": {"categories": ["execution"]}, "sources": ["ABC123N"],
            "targets": ["CLR001N"]}
    existing = yaml.safe_load(dump_groups(config.groups))["groups"]
    with pytest.raises(ConfigError) as info:
        groups_from_data(existing + [data], config.sessions, config.entities)
    assert info.value.problems == ["groups[2].front_end: 'fix' differs from 'ilink2' used by "
                                   "group clearco-all-fills for target CLR001N; expected one "
                                   "front end per target"]
    target = tmp_path / "groups.yaml"
    target.write_text(GROUPS_TEXT.replace("targets: [CLRFIX44]", "targets: [CLR001N]"))
    with pytest.raises(ConfigError) as info:
        load_groups(target, config.sessions, config.entities)
    assert info.value.problems == [
        f"{target}:{line_of(GROUPS_TEXT, 'front_end: fix')}: groups[1].front_end: 'fix' differs "
        "from 'ilink2' used by group clearco-all-fills for target CLR001N; expected one front "
        "end per target"]
