"""dcgateway.cli: exit codes, error output without tracebacks, --json shapes, and the groups
commands round-tripping through a real groups file (copies in tmp_path; nothing mocked but a
terminal on stdin and, for ``run``, the gateway module)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from dcgateway.cli import COMMANDS, main
from dcgateway.config import load_config, load_groups

from .test_config import GATEWAY_TEXT, GROUPS_TEXT, REPO, line_of, write

CREATE = ["groups", "create", "--entity", "CLEARCO", "--name", "clearco-new", "--front-end",
          "fix", "--filter", "categories=execution,order", "--filter", "account=ACCT01,ACCT02",
          "--filter", "symbol!=GEZ6", "--filter", "side=buy", "--source", "ABC123N", "ABD123N",
          "--target", "CLRFIX44"]


class FakeTerminal(io.StringIO):
    """Answers typed at a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def config(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))        # not a terminal
    return write(tmp_path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# -- check-config and parsing -------------------------------------------------------------------

def test_check_config_ok(config: Path, capsys) -> None:
    assert run(capsys, "check-config", "--config", str(config)) == (
        0, "ok: 4 sessions, 2 groups\n", "")


def test_check_config_json_before_or_after_the_command(config: Path, capsys) -> None:
    for argv in (["check-config", "--json", "--config", str(config)],
                 ["--json", "--config", str(config), "check-config"]):
        code, out, err = run(capsys, *argv)
        assert (code, err) == (0, "")
        assert json.loads(out) == {"ok": True, "sessions": 4, "groups": 2}


def test_check_config_reports_every_error_exit_2(tmp_path: Path, capsys) -> None:
    gateway = GATEWAY_TEXT.replace("port: 9878}", "port: 98780}").replace(
        "logon_timeout_s: 60", "logon_timout_s: 60")
    groups = GROUPS_TEXT.replace("[execution]", "[fills]")
    path = write(tmp_path, gateway, groups)
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines == [
        f"error: {path}:{line_of(gateway, 'port: 98780')}: gateway.listen.port: '98780' is out "
        "of range; expected a whole number from 0 to 65535",
        lines[1],
        f"error: {tmp_path / 'groups.yaml'}:{line_of(groups, '[fills]')}: "
        "groups[0].filters.categories[0]: 'fills' is not allowed; expected one of execution, "
        "acknowledgment, order, mass_action, reject"]
    assert lines[1].startswith(f"error: {path}:{line_of(gateway, 'logon_timout_s')}: "
                               "gateway.logon_timout_s: unknown key 'logon_timout_s'")
    code, out, err = run(capsys, "check-config", "--json", "--config", str(path))
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False and [f"error: {e}" for e in doc["errors"]] == lines


def test_check_config_missing_file_and_default_path(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = run(capsys, "check-config", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and err == f"error: {tmp_path / 'nope.yaml'}: file not found; expected a " \
                                "readable YAML file\n"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    write(tmp_path / "config")
    assert run(capsys, "check-config")[0] == 0          # default --config config/gateway.yaml


@pytest.mark.parametrize("argv", [[], ["bogus"], ["check-config", "--bogus"],
                                  ["groups"], ["groups", "show"], ["keys"], ["keys", "create"],
                                  ["groups", "create", "--front-end", "fix44"]])
def test_argparse_errors_exit_2_with_a_message(argv: list[str], capsys) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("usage: dcgateway") and "\nerror: " in err


def test_argparse_errors_with_json_are_one_document_on_stdout(capsys) -> None:
    code, out, err = run(capsys, "groups", "bogus", "--json")
    assert code == 2 and "\nerror: argument COMMAND: invalid choice: 'bogus'" in err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["errors"][0].startswith("argument COMMAND: invalid choice")


def test_a_reader_that_goes_away_is_no_traceback(config: Path) -> None:
    """``dcgateway ... --json | head -1``: the pipe closes before the output is written; the
    command says so in one line on stderr and exits 1 (no traceback, no second failure at
    the interpreter's exit)."""
    for argv in (["groups", "list", "--json"], ["groups", "list"], ["check-config", "--json"]):
        proc = subprocess.Popen([sys.executable, "-m", "dcgateway", *argv, "--config",
                                 str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=REPO)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()                          # the reader is gone before any output
        with proc.stderr:
            err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1, err
        assert err == "error: the output was closed before it was all written (broken pipe)\n"


def test_a_broken_pipe_of_a_socket_is_an_error_about_it(config: Path, capsys,
                                                       monkeypatch) -> None:
    """A BrokenPipeError from a connection (SMTP, NATS) while stdout is fine is that
    connection's failure, not "the output was closed"."""
    from dcgateway.cli import groups as groups_cli

    def broken(args, out):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(groups_cli, "_cmd_groups_list", broken)
    assert run(capsys, "groups", "list", "--config", str(config)) == (
        1, "", "error: Broken pipe\n")


def test_help_and_version_exit_0(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "check-config" in out and "groups" in out
    code, out, _ = run(capsys, "groups", "create", "--help")
    assert code == 0 and "--front-end" in out and "--as NAME" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("dcgateway ")


def test_command_table_has_the_implemented_commands_only() -> None:
    assert set(COMMANDS) == {"run", "check-config", "groups", "keys", "sessions", "replay", "demo",
                             "portal", "users", "cluster"}


# -- run ------------------------------------------------------------------------------------

def test_run_refuses_a_bad_config_before_starting(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dcgateway.gateway", None)    # importing it would fail
    path = write(tmp_path, GATEWAY_TEXT.replace("day: sunday", "day: someday"))
    code, _, err = run(capsys, "run", "--config", str(path))
    assert code == 2 and "gateway.week_start.day: 'someday' is not allowed" in err


def test_run_hands_the_config_to_the_gateway(config: Path, capsys, monkeypatch) -> None:
    seen = []
    fake = types.ModuleType("dcgateway.gateway")
    fake.run = lambda cfg: seen.append(cfg) or 7
    monkeypatch.setitem(sys.modules, "dcgateway.gateway", fake)
    assert run(capsys, "run", "--config", str(config))[0] == 7
    assert seen == [load_config(config)]


def test_run_names_the_listener_it_cannot_open(tmp_path: Path) -> None:
    """An address that is not this machine's (TEST-NET-1): exit 1 with the setting, the
    address and the reason, not a bare OS message."""
    path = write(tmp_path, GATEWAY_TEXT.replace("listen: {host: 127.0.0.1, port: 9878}",
                                                "listen: {host: 192.0.2.1, port: 9878}"))
    proc = subprocess.run([sys.executable, "-m", "dcgateway", "run", "--config", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("error: gateway.listen: cannot listen on 192.0.2.1:9878: "
            in proc.stderr), proc.stderr


# -- groups ---------------------------------------------------------------------------------

def test_groups_round_trip(config: Path, capsys) -> None:
    c = str(config)
    code, out, err = run(capsys, *CREATE, "--config", c, "--as", "carl")
    assert (code, err) == (0, "") and "created group CLEARCO/clearco-new" in out
    groups_file = config.parent / "groups.yaml"
    assert isinstance(yaml.safe_load(groups_file.read_text()), dict)
    assert sorted(p.name for p in config.parent.iterdir()) == ["gateway.yaml", "groups.yaml",
                                                               "var"]
    loaded = load_config(config)
    new = loaded.groups[-1]
    assert (new.entity, new.name, new.front_end) == ("CLEARCO", "clearco-new", "fix")
    assert new.filters.categories == {"execution", "order"}
    assert new.filters.account.include == {"ACCT01", "ACCT02"}
    assert new.filters.symbol.exclude == {"GEZ6"} and new.filters.side.include == {"1"}
    assert (new.sources, new.targets) == (("ABC123N", "ABD123N"), ("CLRFIX44",))

    code, out, _ = run(capsys, "groups", "list", "--config", c)
    assert code == 0 and [ln.split()[1] for ln in out.splitlines()] == [
        "NAME", "clearco-all-fills", "clearco-everything-fix", "clearco-new"]
    code, out, _ = run(capsys, "groups", "list", "--json", "--config", c)
    assert [g["name"] for g in json.loads(out)["groups"]] == [
        "clearco-all-fills", "clearco-everything-fix", "clearco-new"]

    code, out, _ = run(capsys, "groups", "show", "clearco-new", "--config", c)
    assert code == 0 and yaml.safe_load(out)["filters"]["side"] == {"include": ["1"]}
    code, out, _ = run(capsys, "groups", "show", "clearco-new", "--json", "--config", c)
    assert json.loads(out)["targets"] == ["CLRFIX44"]

    code, out, _ = run(capsys, "groups", "delete", "clearco-new", "--config", c, "--as", "carl")
    assert code == 0 and "deleted group CLEARCO/clearco-new" in out
    assert load_config(config).groups == loaded.groups[:-1]
    code, _, err = run(capsys, "groups", "show", "clearco-new", "--config", c)
    assert code == 2 and "no group named 'clearco-new'" in err

    audit = [json.loads(line) for line in
             (config.parent / "var" / "groups-audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["who"], a["group"]) for a in audit] == [
        ("group_create", "carl", "clearco-new"), ("group_delete", "carl", "clearco-new")]


def test_filter_takes_several_values_after_one_flag(config: Path, capsys) -> None:
    """CLI.md: ``--filter KEY=VALUE...``, like ``--source SID...``; repeated flags add up."""
    argv = ["groups", "create", "--entity", "CLEARCO", "--name", "one-flag", "--front-end",
            "fix", "--filter", "categories=execution,order", "account=ACCT01,ACCT02",
            "symbol!=GEZ6", "--filter", "side=buy", "--source", "ABC123N", "--target",
            "CLRFIX44", "--config", str(config)]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, ""), err
    new = load_config(config).groups[-1]
    assert new.filters.categories == {"execution", "order"}
    assert new.filters.account.include == {"ACCT01", "ACCT02"}
    assert new.filters.symbol.exclude == {"GEZ6"} and new.filters.side.include == {"1"}


def test_create_json_output(config: Path, capsys) -> None:
    code, out, _ = run(capsys, *CREATE, "--json", "--config", str(config))
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["created"]["name"] == "clearco-new"


@pytest.mark.parametrize("change, message", [
    (["--target", "ABC123N"], "refused: groups[2].targets[1]: 'ABC123N' is a source session; "
                              "expected a target session of entity CLEARCO"),
    (["--name", "clearco-all-fills"], "refused: groups[2].name: duplicate group name "
                                      "'clearco-all-fills' in entity CLEARCO"),
    (["--source", "NOPE001N"], "refused: groups[2].sources[2]: unknown session 'NOPE001N'"),
    (["--filter", "categories=fills"], "refused: groups[2].filters.categories[2]: 'fills' is "
                                       "not allowed"),
    (["--filter", "colour=red"], "--filter 'colour=red': unknown filter key 'colour'; expected "
                                 "one of categories, account"),
    (["--filter", "categories!=order"], "--filter 'categories!=order': categories are listed "
                                        "with '=' only"),
    (["--filter", "side=sideways"], "refused: groups[2].filters.side.include[1]: 'sideways' is "
                                    "not a Side (54) value"),
])
def test_create_refusals_exit_2_and_leave_the_file_alone(config: Path, capsys, change,
                                                        message) -> None:
    groups_file = config.parent / "groups.yaml"
    before = groups_file.read_bytes()
    code, out, err = run(capsys, *CREATE, *change, "--config", str(config))   # last --name wins
    assert (code, out) == (2, "")
    assert f"error: {message}" in err, err
    assert groups_file.read_bytes() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["gateway.yaml", "groups.yaml"]


def test_create_without_a_terminal_names_the_missing_flags(config: Path, capsys) -> None:
    code, _, err = run(capsys, "groups", "create", "--config", str(config), "--entity",
                       "CLEARCO", "--name", "x", "--filter", "account=A1")
    assert code == 2
    assert err == ("error: missing --front-end, --filter categories=..., --source, --target "
                   "(stdin is not a terminal, so there is nothing to prompt)\n")


def test_create_prompts_for_the_six_steps_on_a_terminal(config: Path, capsys,
                                                        monkeypatch) -> None:
    answers = ["NOPE", "CLEARCO",           # 1. entity (a wrong answer is asked again)
               "clearco-all-fills", "clearco-prompted",   # 2. name (taken, then a new one)
               "fix",                        # 3. front end
               "execution, acknowledgment",  # 4. categories ...
               "symbol!=GEZ6", "colour=red", "account=ACCT9", "",   # ... and more filters
               "ABC123N ABD123N",            # 5. sources
               "CLRFIX44"]                   # 6. targets (of CLEARCO; fix front end)
    monkeypatch.setattr(sys, "stdin", FakeTerminal("\n".join(answers) + "\n"))
    code, out, err = run(capsys, "groups", "create", "--config", str(config))
    assert code == 0, err
    assert "1/6 registered entity (TRADECO, CLEARCO)" in err and "6/6 target sessions" in err
    assert "already has a group named 'clearco-all-fills'" in err
    assert "unknown filter key 'colour'" in err
    new = load_config(config).groups[-1]
    assert (new.entity, new.name, new.front_end) == ("CLEARCO", "clearco-prompted", "fix")
    assert new.filters.categories == {"execution", "acknowledgment"}
    assert new.filters.symbol.exclude == {"GEZ6"} and new.filters.account.include == {"ACCT9"}
    assert (new.sources, new.targets) == (("ABC123N", "ABD123N"), ("CLRFIX44",))


def test_prompts_end_of_input_is_a_usage_error(config: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTerminal("CLEARCO\n"))
    code, _, err = run(capsys, "groups", "create", "--config", str(config))
    assert code == 2 and "no answer for '2/6 group name' (end of input)" in err


def test_as_must_administer_the_entity(config: Path, capsys) -> None:
    c = str(config)
    groups_file = config.parent / "groups.yaml"
    before = groups_file.read_bytes()
    assert run(capsys, *CREATE, "--config", c, "--as", "tina") == (
        2, "", "error: tina does not administer CLEARCO\n")
    assert run(capsys, "groups", "delete", "clearco-all-fills", "--config", c, "--as", "tina") \
        == (2, "", "error: tina does not administer CLEARCO\n")
    assert run(capsys, "groups", "show", "clearco-all-fills", "--config", c, "--as", "nobody") \
        == (2, "", "error: nobody does not administer CLEARCO\n")
    assert run(capsys, *CREATE, "--config", c, "--as", "nobody") == (
        2, "", "error: nobody does not administer CLEARCO\n")
    code, out, err = run(capsys, "--as", "tina", "groups", "list", "--config", c)
    assert (code, out) == (0, "no groups\n")
    code, _, err = run(capsys, "groups", "list", "--config", c, "--as", "nobody")
    assert code == 2 and "nobody does not administer any entity" in err
    assert groups_file.read_bytes() == before
    code, out, _ = run(capsys, "groups", "delete", "clearco-all-fills", "--config", c, "--as",
                       "carl")
    assert code == 0
    config_now = load_config(config)
    assert [g.name for g in load_groups(config_now.groups_file, config_now.sessions,
                                        config_now.entities)] == ["clearco-everything-fix"]


def test_as_lists_only_the_entities_name_administers(config: Path, capsys) -> None:
    """--as (CLI.md: refused for entities NAME does not administer): keys list and sessions
    list show only NAME's entities, and refuse a NAME that administers none, an operator of
    the portal included."""
    c = str(config)
    config.write_text(config.read_text()
                      + "operators:\n  - {name: olga, email: olga@exchange.example}\n")
    code, out, _ = run(capsys, "sessions", "list", "--json", "--config", c, "--as", "carl")
    assert code == 0 and {r["entity"] for r in json.loads(out)["sessions"]} == {"CLEARCO"}
    code, out, _ = run(capsys, "sessions", "list", "--json", "--config", c)
    assert {r["entity"] for r in json.loads(out)["sessions"]} == {"CLEARCO", "TRADECO"}
    for argv in (["keys", "list"], ["sessions", "list"], ["groups", "list"]):
        for name in ("nobody", "olga"):
            code, _, err = run(capsys, *argv, "--config", c, "--as", name)
            assert (code, err) == (2, f"error: {name} does not administer any entity\n"), argv
    code, _, err = run(capsys, "groups", "delete", "clearco-all-fills", "--config", c,
                       "--as", "olga")
    assert (code, err) == (2, "error: olga does not administer CLEARCO\n")


def test_key_file_out_must_name_a_file_in_an_existing_folder(config: Path, capsys) -> None:
    c = str(config)
    code, out, _ = run(capsys, "keys", "create", "--session-id", "CLRFIX44", "--json",
                       "--config", c)
    key = json.loads(out)["access_key_id"]
    folder = config.parent / "keys"
    folder.mkdir()
    code, _, err = run(capsys, "keys", "download", key, "--out", str(folder), "--config", c)
    assert (code, err) == (2, f"error: --out {folder}: is a folder; expected the path of the "
                              "key file to write\n")
    missing = config.parent / "nowhere" / "k.csv"
    code, _, err = run(capsys, "keys", "download", key, "--out", str(missing), "--config", c)
    assert (code, err) == (2, f"error: --out {missing}: the folder {missing.parent} does not "
                              "exist\n")
    assert not missing.parent.exists()
    code, _, _ = run(capsys, "keys", "download", key, "--out", str(folder / "k.csv"),
                     "--config", c)
    assert code == 0 and (folder / "k.csv").stat().st_mode & 0o777 == 0o600


def test_key_file_out_never_replaces_a_device_pipe_or_link(config: Path, capsys) -> None:
    """The key file is written beside the path and renamed over it: over a device (``--out
    /dev/null`` as root), a pipe or a symbolic link that would put the secret in a plain file
    in its place. Refused (exit 2) and left as it was; a regular file is replaced."""
    c = str(config)
    code, out, _ = run(capsys, "keys", "create", "--session-id", "CLRFIX44", "--json",
                       "--config", c)
    key = json.loads(out)["access_key_id"]
    pipe = config.parent / "pipe"
    os.mkfifo(pipe)
    target = config.parent / "real.csv"
    target.write_text("old\n")
    link = config.parent / "link.csv"
    link.symlink_to(target)
    for path, what in ((pipe, "is not a regular file (a device, pipe or socket); expected "
                              "the path of the key file to write"),
                       (link, "is a symbolic link; give the path of the key file itself")):
        code, _, err = run(capsys, "keys", "download", key, "--out", str(path), "--config", c)
        assert (code, err) == (2, f"error: --out {path}: {what}\n")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and link.is_symlink()
    assert target.read_text() == "old\n"
    dev = config.parent / "null"             # a device of our own, never the machine's
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:                  # not root: the pipe above is the same check
        pass
    else:
        code, _, err = run(capsys, "keys", "download", key, "--out", str(dev), "--config", c)
        assert code == 2 and "is not a regular file" in err
        assert stat.S_ISCHR(os.lstat(dev).st_mode)
    code, _, _ = run(capsys, "keys", "download", key, "--out", str(target), "--config", c)
    assert code == 0 and target.read_text().startswith("Session ID,Access ID,Secret Key")


def test_keys_list_names_an_unconfigured_session_id(config: Path, capsys) -> None:
    """As keys create does: a Session ID the configuration does not know is an error (exit
    2), not an empty list."""
    code, _, err = run(capsys, "keys", "list", "--session-id", "XYZ", "--config", str(config))
    assert code == 2 and err.startswith("error: Session ID 'XYZ' is not configured (configured: ")
    assert "ABC" in err and "CLR" in err
    # with --as, the Session IDs of other entities are not named
    code, _, err = run(capsys, "keys", "list", "--session-id", "XYZ", "--config", str(config),
                       "--as", "carl")
    assert code == 2 and "CLR" in err and "ABC" not in err, err
    code, out, _ = run(capsys, "keys", "list", "--session-id", "CLRFIX44", "--config",
                       str(config))
    assert (code, out) == (0, "no key pairs\n")


def test_tls_files_are_loaded_by_what_serves_not_by_every_command(config: Path,
                                                                   capsys) -> None:
    """The TLS key is often readable by the gateway's service account only: check-config and
    run load it (and name what is wrong), the state commands only need it to exist."""
    (config.parent / "junk.pem").write_text("not a certificate\n")
    config.write_text(config.read_text().replace(
        "  logon_timeout_s: 60", "  tls: {cert_file: junk.pem, key_file: junk.pem}\n"
        "  logon_timeout_s: 60"))
    c = str(config)
    code, _, err = run(capsys, "check-config", "--config", c)
    assert code == 2 and "gateway.tls.cert_file: " in err and "holds no PEM certificate" in err
    for argv in (["keys", "list"], ["sessions", "list"], ["users", "list"]):
        code, _, err = run(capsys, *argv, "--config", c)
        assert code == 0, (argv, err)


def test_a_broken_groups_file_does_not_block_keys_sessions_or_unlock(config: Path,
                                                                      capsys) -> None:
    (config.parent / "groups.yaml").write_text("groups:\n  - entity: [\n")
    c = str(config)
    assert run(capsys, "groups", "list", "--config", c)[0] == 2
    for argv in (["keys", "list"], ["sessions", "list"], ["sessions", "unlock", "ABC123N"],
                 ["users", "list"]):
        code, _, err = run(capsys, *argv, "--config", c)
        assert code == 0, (argv, err)


def test_ambiguous_group_name_needs_entity(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    gateway = GATEWAY_TEXT.replace("\ngroups_file:", "  - comp_id: TRD001N\n    role: target\n"
                                   "    entity: TRADECO\n    profile: ilink2\n\ngroups_file:")
    path = write(tmp_path, gateway)
    c = str(path)
    assert run(capsys, "groups", "create", "--config", c, "--entity", "TRADECO", "--name",
               "clearco-all-fills", "--front-end", "ilink2", "--filter", "categories=order",
               "--source", "ABC123N", "--target", "TRD001N")[0] == 0
    code, _, err = run(capsys, "groups", "delete", "clearco-all-fills", "--config", c)
    assert code == 2 and "used by entities CLEARCO, TRADECO; expected --entity" in err
    assert run(capsys, "groups", "delete", "clearco-all-fills", "--entity", "TRADECO",
               "--config", c)[0] == 0
    assert [g.entity for g in load_config(path).groups] == ["CLEARCO", "CLEARCO"]


def test_json_errors_are_one_document_on_stdout(config: Path, capsys) -> None:
    code, out, err = run(capsys, "groups", "show", "nope", "--json", "--config", str(config))
    assert code == 2 and err.startswith("error: no group named 'nope'")
    assert json.loads(out) == {"ok": False, "errors": [err[len("error: "):].rstrip("\n")]}


# -- python -m dcgateway as a real process --------------------------------------------------

def test_python_m_dcgateway_subprocess(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = write(tmp_path / "good")
    bad = write(tmp_path / "bad", GATEWAY_TEXT.replace("profile: fix ", "profile: fixx "))
    for path, expected_code in ((good, 0), (bad, 2)):
        proc = subprocess.run([sys.executable, "-m", "dcgateway", "check-config", "--config",
                               str(path)], capture_output=True, text=True, cwd=tmp_path,
                              timeout=60)
        assert proc.returncode == expected_code, proc.stderr
        assert "Traceback" not in proc.stderr
    assert "sessions[3].profile: 'fixx' is not allowed; expected one of ilink2, fix" in proc.stderr


def test_demo_refuses_a_rate_or_duration_that_is_not_above_zero(capsys) -> None:
    """A negative rate ran flat out and a negative duration stopped at once, both exit 0:
    usage errors now (exit 2, named), before anything starts."""
    for argv in (["--rate", "-5"], ["--duration", "-1"], ["--rate", "0"], ["--rate", "nan"],
                 ["--duration", "soon"], ["--kill-after", "0"]):
        assert main(["demo", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert f"error: argument {argv[0]}: expected a number above 0, got {argv[1]!r}" in err
