"""``dcgateway portal`` as a real process (TLS: HSTS, a ``__Host-`` Secure cookie; a clean stop
on SIGTERM), the commands refusing a configuration without ``portal:``, and ``dcgateway demo``
starting the portal beside the gateway and printing how each user logs in the first time."""

from __future__ import annotations

import json
import re
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp

from dcgateway.cli import main
from tests.integration.test_tls import tls_files  # noqa: F401 - a fixture used below

from .conftest import PASSWORD, portal_config

REPO = Path(__file__).resolve().parents[2]


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 30.0) -> re.Match:
    """The first stdout line matching ``pattern`` (bounded wait; the process is killed and
    its output shown when it does not come)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if m := re.search(pattern, line):
                return m
    finally:
        sel.close()
    proc.kill()
    out, err = proc.communicate(timeout=10)
    raise AssertionError(f"no line matching {pattern!r}: {''.join(seen)}{out}\n{err}")


def enrol_over_http(http: httpx.Client, token: str) -> pyotp.TOTP:
    r = http.post("/api/v1/enrol", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    totp = pyotp.parse_uri(r.json()["totp_uri"])
    r = http.post("/api/v1/enrol/confirm", json={"token": token, "code": totp.now()})
    assert r.status_code == 200, r.text
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """The next time step's code: fresh after the enrolment's, valid for the next 30-60 s."""
    return totp.at(time.time() + 30)


def test_portal_command_serves_tls_and_stops_on_sigterm(tmp_path, tls_files, capsys):  # noqa: F811
    folder = tmp_path / "gw"
    path = portal_config(folder)
    path.write_text(path.read_text().replace(
        "public_url: http://127.0.0.1:0",
        f"public_url: https://127.0.0.1:0\n  tls: {{cert_file: {tls_files / 'server.pem'}, "
        f"key_file: {tls_files / 'server.key'}}}"))
    capsys.readouterr()
    assert main(["users", "invite", "carl", "--json", "--config", str(path)]) == 0
    token = json.loads(capsys.readouterr().out)["enrol_url"].rsplit("/", 1)[1]
    proc = subprocess.Popen([sys.executable, "-m", "dcgateway", "portal", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = read_until(proc, r"dcgateway portal on (https://127\.0\.0\.1:\d+)").group(1)
        trust = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        with httpx.Client(base_url=url, verify=trust, timeout=15) as http:
            page = http.get("/login")
            assert page.status_code == 200 and "Log in" in page.text
            assert page.headers["strict-transport-security"].startswith("max-age=")
            totp = enrol_over_http(http, token)
            r = http.post("/api/v1/login", json={"user": "carl", "password": PASSWORD,
                                                 "code": next_code(totp)})
            assert r.status_code == 200, r.text
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("__Host-dcgw_session=") and "Secure" in cookie
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert http.get("/api/v1/me").json()["user"] == "carl"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "portal stopped" in out and "Traceback" not in err
        assert token not in out + err and PASSWORD not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_commands_need_a_portal_section(tmp_path, capsys):
    folder = tmp_path / "gw"
    path = portal_config(folder)
    text = path.read_text()
    path.write_text(text[:text.index("portal:")])
    for args in (["portal"], ["users", "invite", "carl"]):
        assert main([*args, "--config", str(path)]) == 2
        assert "no portal: section" in capsys.readouterr().err
    portal_config(folder)
    assert main(["users", "invite", "mallory", "--config", str(path)]) == 2
    assert "not an administrator or operator" in capsys.readouterr().err


def test_demo_starts_the_portal_and_prints_how_to_log_in(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(REPO / "config" / "groups.yaml", folder / "groups.yaml")
    text = (REPO / "config" / "gateway.yaml").read_text()
    for port in ("9878", "9100", "8443"):
        text = text.replace(f"port: {port}", "port: 0")
    (folder / "gateway.yaml").write_text(text.replace("127.0.0.1:8443", "127.0.0.1:0"))
    proc = subprocess.Popen([sys.executable, "-m", "dcgateway", "demo", "--duration", "60",
                             "--rate", "50", "--config", str(folder / "gateway.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = read_until(proc, r"portal on (http://127\.0\.0\.1:\d+)").group(1)
        link = read_until(proc, r"carl \(administrator of CLEARCO\): (\S+/enrol/(\S+))")
        assert link.group(1).startswith(url)
        with httpx.Client(base_url=url, timeout=15) as http:
            totp = enrol_over_http(http, link.group(2))
            r = http.post("/api/v1/login", json={"user": "carl", "password": PASSWORD,
                                                 "code": next_code(totp)})
            assert r.status_code == 200, r.text
            groups = http.get("/api/v1/entities/CLEARCO/groups").json()["groups"]
            assert {g["name"] for g in groups} == {"clearco-all-fills", "clearco-everything-fix"}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert "error" not in (folder / "var" / "demo.log").read_text().lower()


def test_users_commands_honour_as(tmp_path, capsys):
    """CLI.md: --as NAME is refused for entities NAME does not administer. carl (CLEARCO) may
    not invite, unlock or reset tina (TRADECO), nor an operator, nor sees them in users list;
    an unknown NAME acts for nobody; an operator (olga) acts on anyone. Refusals exit 2, change
    nothing and are not audited as done."""
    path = portal_config(tmp_path / "gw")
    cfg = ["--config", str(path)]
    for argv in (["users", "invite", "tina"], ["users", "unlock", "tina"],
                 ["users", "reset", "tina"], ["users", "reset", "olga"]):
        capsys.readouterr()
        assert main(argv + cfg + ["--as", "carl"]) == 2, argv
        err = capsys.readouterr().err
        assert "carl does not administer TRADECO" in err or "an exchange operator" in err, err
        assert "Traceback" not in err
    assert main(["users", "invite", "tina", "--as", "nobody"] + cfg) == 2
    assert "nobody is not an administrator or operator" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["users", "list", "--json", "--as", "carl"] + cfg) == 0
    assert [u["user"] for u in json.loads(capsys.readouterr().out)["users"]] == ["carl"]
    assert main(["users", "list", "--json", "--as", "olga"] + cfg) == 0
    assert {"carl", "tina", "olga", "oscar"} <= {
        u["user"] for u in json.loads(capsys.readouterr().out)["users"]}
    audit = tmp_path / "gw" / "var" / "portal-audit.jsonl"
    assert not audit.exists() or audit.read_text() == ""          # nothing done, nothing audited
    assert main(["users", "invite", "carl", "--json", "--as", "carl"] + cfg) == 0
    assert main(["users", "reset", "tina", "--as", "olga"] + cfg) == 0
    assert main(["users", "unlock", "tina", "--as", "tina"] + cfg) == 0
    done = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(a["who"], a["action"], a["user"], a["entity"]) for a in done] == [
        ("carl", "invite", "carl", "CLEARCO"), ("olga", "reset", "tina", "TRADECO"),
        ("tina", "unlock", "tina", "TRADECO")]
