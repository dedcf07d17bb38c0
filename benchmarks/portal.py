"""Portal benchmark: what a login costs, how fast the group and key API answers, and whether a
portal serving requests slows the gateway's fan-out.

Real parts: the gateway (``dcgateway run``) and the portal (``dcgateway portal``) are two
subprocesses sharing one state store in a temporary folder; this process drives one FIX source,
K targets and an HTTP client.

* login: ``Accounts.login`` (argon2id verification of the password + a TOTP code), median of
  --logins; and one login over HTTP;
* API: --cycles cycles of create, list, show, replace and delete a group, list key pairs and
  issue one (deleting the older pair once two are live), paced at about --api-rate requests/s
  (the portal's default limit is 20/s a user); p50/p99 per family;
* fan-out: --repeats pairs of throughput runs (the fanout benchmark's flat-out phase, --messages
  ExecutionReports to K targets): one with the portal idle, one while the API cycles run
  beside it; the ratio of the medians (with/without) must stay above 0.95.

Prints one JSON line:
  {"bench": "portal", "login_ms": ..., "login_http_ms": ..., "group_api_p50_ms": ...,
   "group_api_p99_ms": ..., "key_api_p50_ms": ..., "key_api_p99_ms": ...,
   "fanout_deliveries_per_s_without": ..., "fanout_deliveries_per_s_with": ...,
   "fanout_ratio": ..., "lost": 0, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fanout import Counter, issue_keys, pct, throughput, write_config
from dcgateway.auth import logon_signer
from dcgateway.config import load_config
from dcgateway.portal.accounts import Accounts
from dcgateway.state.users import open_user_store
from simulators.fixclient import FixClient

PASSWORD = "benchmark passphrase, long enough"
PORTAL = """
portal:
  listen: {host: 127.0.0.1, port: 0}
  public_url: http://127.0.0.1:0
"""


def login_cost(config_path: Path, n: int) -> float:
    """Median ms of ``Accounts.login`` (argon2id + TOTP) on a scratch users store."""
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory(prefix="dcgw-bench-users-") as tmp:
        users = open_user_store(tmp, Path(tmp) / "master.key", Path(tmp) / "keys.db")
        accounts = Accounts(cfg, users)
        t0 = 1_800_000_000.0
        token, _ = accounts.invite("ops", t0)
        _, uri = accounts.begin_enrolment(token, PASSWORD, t0)
        totp = pyotp.parse_uri(uri)
        accounts.confirm_enrolment(token, totp.at(t0), t0)
        took = []
        for i in range(1, n + 1):
            now = t0 + 30 * i
            start = time.perf_counter()
            assert accounts.login("ops", PASSWORD, totp.at(now), now).outcome == "ok"
            took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


async def start(args: list[str], pattern: str) -> tuple[subprocess.Popen, str]:
    proc = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", "dcgateway", *args], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    if pattern not in line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc, line


class Driver:
    """The HTTP side: one logged-in administrator and the API cycle."""

    def __init__(self, http: httpx.AsyncClient, csrf: str, live_keys: list[str],
                 mix: str = "all") -> None:
        self.http = http
        self.mix = mix
        self.headers = {"X-CSRF-Token": csrf}
        self.live = live_keys
        self.samples: dict[str, list[float]] = {"group": [], "key": [], "other": []}
        self.cycle = 0

    async def call(self, family: str, method: str, path: str, **kw: Any) -> httpx.Response:
        start = time.perf_counter()
        r = await self.http.request(method, "/api/v1" + path, headers=self.headers, **kw)
        self.samples[family].append((time.perf_counter() - start) * 1000)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r

    async def one_cycle(self) -> None:
        self.cycle += 1
        if self.mix == "read":                   # reads only: no file the gateway follows moves
            for path in ("/entities/FIRM/groups", "/entities/FIRM/groups/bench"):
                await self.call("group", "GET", path)
            for path in ("/entities/FIRM/keys", "/entities/FIRM/sessions", "/me",
                         "/entities/FIRM/keys", "/entities/FIRM/audit?limit=50"):
                await self.call("key" if "keys" in path else "other", "GET", path)
            return
        name = f"api-{self.cycle}"
        group = {"name": name, "front_end": "fix", "filters": {"categories": ["execution"]},
                 "sources": ["SRC"], "targets": ["T001"]}
        base = "/entities/FIRM/groups"
        await self.call("group", "POST", base, json=group)
        await self.call("group", "GET", base)
        await self.call("group", "GET", f"{base}/{name}")
        await self.call("group", "PUT", f"{base}/{name}",
                        json={**group, "filters": {"categories": ["execution", "order"]}})
        await self.call("group", "DELETE", f"{base}/{name}")
        await self.call("key", "GET", "/entities/FIRM/keys")
        body: dict[str, str] = {"session_id": "T001"}
        if len(self.live) >= 2:
            body["delete_access_key_id"] = self.live.pop(0)
        r = await self.call("key", "POST", "/entities/FIRM/keys", json=body)
        self.live.append(r.json()["access_key_id"])

    async def run(self, cycles: int | None, rate: float, stop: asyncio.Event | None = None
                  ) -> None:
        """Cycles paced at ``rate`` requests/s (7 requests a cycle)."""
        period = 7 / rate
        done = 0
        while (cycles is None or done < cycles) and not (stop and stop.is_set()):
            started = time.perf_counter()
            await self.one_cycle()
            done += 1
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - started)))


async def log_in(url: str, config_path: Path) -> tuple[httpx.AsyncClient, str, float]:
    cfg = load_config(config_path)
    users = open_user_store(cfg.gateway.data_dir, cfg.gateway.keystore.master_key_file,
                            cfg.gateway.keystore.path)
    token, _ = Accounts(cfg, users).invite("ops", time.time())
    http = httpx.AsyncClient(base_url=url, timeout=30)
    r = await http.post("/api/v1/enrol", json={"token": token, "password": PASSWORD})
    totp = pyotp.parse_uri(r.json()["totp_uri"])
    await http.post("/api/v1/enrol/confirm", json={"token": token, "code": totp.now()})
    start = time.perf_counter()
    r = await http.post("/api/v1/login", json={"user": "ops", "password": PASSWORD,
                                               "code": totp.at(time.time() + 30)})
    took = (time.perf_counter() - start) * 1000
    r.raise_for_status()
    return http, r.json()["csrf_token"], took


async def fanout_pair(src: FixClient, counters: list[Counter], driver: Driver, args,
                      sent: int) -> tuple[float, float, int]:
    """One throughput run with the portal idle, one with the API cycles running beside it."""
    assert src.writer is not None
    _, without, lost1 = await throughput(src.writer, counters, src.next_seq, args.messages,
                                         sent, args.timeout)
    src.next_seq += args.messages
    stop = asyncio.Event()
    load = asyncio.create_task(driver.run(None, args.api_rate, stop))
    await asyncio.sleep(0.3)                      # the load is running before the burst starts
    _, with_portal, lost2 = await throughput(src.writer, counters, src.next_seq, args.messages,
                                             sent + args.messages, args.timeout)
    src.next_seq += args.messages
    stop.set()
    await load
    return without, with_portal, lost1 + lost2


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dcgw-bench-portal-") as tmp:
        cfg_path = write_config(Path(tmp), args.targets)
        cfg_path.write_text(cfg_path.read_text() + PORTAL)
        login_ms = login_cost(cfg_path, args.logins)
        creds = issue_keys(cfg_path)
        gw, line = await start(["run", "--config", str(cfg_path), "--log-level", "WARNING"],
                               "listening on")
        portal, pline = await start(["portal", "--config", str(cfg_path), "--log-level",
                                     "WARNING"], "dcgateway portal on")
        try:
            port = int(line.rsplit(":", 1)[1])
            url = pline.split(" on ", 1)[1].split()[0]
            http, csrf, login_http_ms = await log_in(url, cfg_path)
            driver = Driver(http, csrf, [creds["T001"][0]], args.mix)
            clients = []                  # logged on first: the API cycles replace T001's key
            for t in sorted(c for c in creds if c != "SRC"):
                c = FixClient("127.0.0.1", port, t, begin_string="FIX.4.4", heartbeat=60,
                              signer=logon_signer(*creds[t]), sender_sub_id="OPS")
                assert (await c.logon()).get(35) == b"A"
                clients.append(c)
            src = FixClient("127.0.0.1", port, "SRC", begin_string="FIX.4.4", heartbeat=60,
                            signer=logon_signer(*creds["SRC"]), sender_sub_id="OPS")
            assert (await src.logon()).get(35) == b"A"
            counters = [Counter.take_over(c) for c in clients]
            await driver.run(args.cycles, args.api_rate)          # the API figures
            without, with_portal, lost = [], [], 0
            for i in range(args.repeats):
                a, b, n_lost = await fanout_pair(src, counters, driver, args,
                                                 2 * i * args.messages)
                without.append(a)
                with_portal.append(b)
                lost += n_lost
            for counter in counters:
                counter.close()
            await src.close()
            await http.aclose()
        finally:
            for proc in (portal, gw):
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    g, k = driver.samples["group"], driver.samples["key"]
    ms = [int(x * 1000) for x in g]
    km = [int(x * 1000) for x in k]
    w, wo = statistics.median(with_portal), statistics.median(without)
    return {"bench": "portal", "targets": args.targets, "login_ms": round(login_ms, 1),
            "login_http_ms": round(login_http_ms, 1),
            "group_api_calls": len(g), "group_api_p50_ms": round(pct(ms, 0.5), 2),
            "group_api_p99_ms": round(pct(ms, 0.99), 2),
            "key_api_calls": len(k), "key_api_p50_ms": round(pct(km, 0.5), 2),
            "key_api_p99_ms": round(pct(km, 0.99), 2),
            "fanout_deliveries_per_s_without": round(wo),
            "fanout_deliveries_per_s_with": round(w), "fanout_ratio": round(w / wo, 3),
            "api_rate": args.api_rate, "mix": args.mix, "repeats": args.repeats, "lost": lost}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--messages", type=int, default=100_000, help="per throughput run")
    ap.add_argument("--repeats", type=int, default=5, help="pairs of throughput runs")
    ap.add_argument("--cycles", type=int, default=40, help="API cycles (7 calls each)")
    ap.add_argument("--api-rate", type=float, default=5.0,
                    help="API requests/s offered (default 5: a busy portal, several administrators)")
    ap.add_argument("--logins", type=int, default=5)
    ap.add_argument("--mix", choices=("all", "read"), default="all",
                    help="all: the cycle above; read: GETs only (groups, keys, sessions, audit)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    print(json.dumps(uvloop.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
