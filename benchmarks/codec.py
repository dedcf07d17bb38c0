"""Codec benchmark: framing + CheckSum verification + header access of a ~250-byte
ExecutionReport, against simplefix's parser on the same bytes, in one run; and the same decode
followed by what a session does next, validation against the FIX 4.2 data dictionary
(``validated_*``: the cost of validation is their difference).

Prints one JSON line:
  {"bench": "codec", "msgs_per_s": N, "us_per_msg": X, "validated_msgs_per_s": V,
   "validated_us_per_msg": Y, "validation_cost_pct": P, "simplefix_msgs_per_s": M, ...}
Each figure is the median of --rounds timed rounds (the machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import simplefix

from dcgateway.fix import codec
from dcgateway.fix.dictionary import load_dictionary
from dcgateway.fix.validate import Validator


def execution_report(seq: int) -> bytes:
    header = [(49, "ABC123N"), (56, "DCGW"), (34, seq), (50, "TRADER1"),
              (52, "20261124-20:10:11.123")]
    body = [(37, "ORD123456"), (11, "CL0000001234"), (17, "EXEC000000012345"), (20, 0),
            (150, "1"), (39, "1"), (1, "ACCT01"), (55, "ESZ6"), (207, "XCME"), (54, 1),
            (38, 100), (44, "4512.25"), (32, 10), (31, "4512.25"), (151, 90), (14, 10), (6, "4512.25"),
            (60, "20261124-20:10:11.123")]
    return codec.encode_fields("FIX.4.2", "8", header, body)


def bench_codec(stream: bytes, count: int, chunk: int) -> float:
    d = codec.Decoder()
    t0 = time.perf_counter()
    got = 0
    for i in range(0, len(stream), chunk):
        for m in d.feed(stream[i:i + chunk]):
            m.header[34]            # header access: the session reads 34/49/56/52 per message
            m.header[49]
            got += 1
    dt = time.perf_counter() - t0
    assert got == count, (got, count)
    return count / dt


def bench_validated(stream: bytes, count: int, chunk: int, validator: Validator) -> float:
    """bench_codec plus Validator.validate on every message (each must be valid)."""
    d = codec.Decoder()
    validate = validator.validate
    t0 = time.perf_counter()
    got = bad = 0
    for i in range(0, len(stream), chunk):
        for m in d.feed(stream[i:i + chunk]):
            m.header[34]
            m.header[49]
            if validate(m) is not None:
                bad += 1
            got += 1
    dt = time.perf_counter() - t0
    assert got == count and bad == 0, (got, count, bad)
    return count / dt


def bench_simplefix(stream: bytes, count: int, chunk: int) -> float:
    p = simplefix.FixParser()
    t0 = time.perf_counter()
    got = 0
    for i in range(0, len(stream), chunk):
        p.append_buffer(stream[i:i + chunk])
        while (m := p.get_message()) is not None:
            m.get(34)
            m.get(49)
            got += 1
    dt = time.perf_counter() - t0
    assert got == count, (got, count)
    return count / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--simplefix-messages", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=16384, help="bytes per feed() (a socket read)")
    args = ap.parse_args(argv)
    one = execution_report(1)
    stream = b"".join(execution_report(i) for i in range(1, args.messages + 1))
    sf_stream = b"".join(execution_report(i) for i in range(1, args.simplefix_messages + 1))
    validator = Validator(load_dictionary("FIX.4.2"))
    ours, validated = [], []
    for _ in range(args.rounds):               # interleaved: both see the same machine
        ours.append(bench_codec(stream, args.messages, args.chunk))
        validated.append(bench_validated(stream, args.messages, args.chunk, validator))
    theirs = [bench_simplefix(sf_stream, args.simplefix_messages, args.chunk) for _ in range(args.rounds)]
    rate = statistics.median(ours)
    vrate = statistics.median(validated)
    sf = statistics.median(theirs)
    print(json.dumps({"bench": "codec", "msgs_per_s": round(rate), "us_per_msg": round(1e6 / rate, 3),
                      "validated_msgs_per_s": round(vrate),
                      "validated_us_per_msg": round(1e6 / vrate, 3),
                      "validation_cost_pct": round((rate / vrate - 1) * 100, 1),
                      "simplefix_msgs_per_s": round(sf), "ratio_to_simplefix": round(rate / sf, 1),
                      "message_bytes": len(one), "rounds": args.rounds,
                      "python": sys.version.split()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
