"""A hostile client for the tests: holds N idle TCP connections to HOST:PORT and reopens each one
the moment the gateway closes it, for SECONDS, never sending a byte. Prints ``ready`` once N
connections were opened, and rewrites TOTALS (a JSON file) twice a second; the test reads it and
kills the process. Run as a separate process (its own descriptor limit, its own CPU):
``python flood.py HOST PORT N SECONDS TOTALS``."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys


async def hold(host: str, port: int, until: float, totals: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, asyncio.TimeoutError):
            totals["failed"] += 1
            await asyncio.sleep(0.01)
            continue
        totals["opened"] += 1
        try:
            await asyncio.wait_for(reader.read(1), max(0.0, until - loop.time()))
            totals["closed_by_gateway"] += 1
        except (asyncio.TimeoutError, ConnectionError):
            totals["closed_by_gateway"] += 1
        finally:
            writer.transport.abort()


async def report(path: str, until: float, totals: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        with open(path + ".tmp", "w") as f:
            json.dump(totals, f)
        os.replace(path + ".tmp", path)
        await asyncio.sleep(0.5)


async def main(host: str, port: int, n: int, seconds: float, path: str) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    totals = {"opened": 0, "failed": 0, "closed_by_gateway": 0}
    tasks = [asyncio.create_task(hold(host, port, until, totals)) for _ in range(n)]
    tasks.append(asyncio.create_task(report(path, until, totals)))
    while totals["opened"] + totals["failed"] < n and loop.time() < until:
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                     sys.argv[5]))
