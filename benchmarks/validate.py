"""Validation benchmark: a typical ~250-byte FIX 4.2 ExecutionReport (35=8, ~25 fields, no
groups) through ``Validator.validate``, against the FIX 4.2 data dictionary.

* ``cached``: the message's layout has been compiled (the steady state of a session: one
  regex ``fullmatch`` per message);
* ``cached_mixed``: four ER layouts (new, partial fill, fill, cancel) in random order;
* ``uncached``: every message takes the slow path (full parse + dictionary walk), as a layout's
  first sightings and any invalid message do;
* ``fields``: ``RawMessage.fields()`` alone (the codec's full parse), for reference.

Messages are decoded before timing, fresh for each round (``fields()`` caches its parse on the
message). Prints one JSON line; each figure is the median of --rounds timed rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable

from dcgateway.fix import codec
from dcgateway.fix.codec import RawMessage
from dcgateway.fix.dictionary import load_dictionary
from dcgateway.fix.validate import ValidationOptions, Validator

HEADER = [(49, "ABC123N"), (56, "DCGW"), (50, "TRADER1")]
BASE = [(37, "ORD123456"), (11, "CL001234"), (17, "EX0012345"), (20, 0)]
TAIL = [(1, "ACCT01"), (55, "ESZ6"), (207, "XCME"), (54, 1), (38, 100), (40, 2), (44, "4512.25"),
        (59, 0)]
LAYOUTS = {
    "fill": BASE + [(150, 2), (39, 2)] + TAIL + [(32, 10), (31, "4512.25"), (151, 0), (14, 100),
                                                 (6, "4512.25"), (60, "20261124-20:10:11.123")],
    "partial": BASE + [(150, 1), (39, 1)] + TAIL + [(32, 10), (31, "4512.25"), (151, 90),
                                                    (14, 10), (6, "4512.25")],
    "new": BASE + [(150, 0), (39, 0)] + TAIL + [(151, 100), (14, 0), (6, 0),
                                                (60, "20261124-20:10:11.123")],
    "cancel": BASE + [(150, 4), (39, 4), (41, "CL001233")] + TAIL + [(151, 0), (14, 0),
                                                                         (6, 0), (58, "cxl")],
}


def execution_report(seq: int, layout: str = "fill") -> bytes:
    header = [*HEADER[:2], (34, seq), HEADER[2], (52, "20261124-20:10:11.123")]
    return codec.encode_fields("FIX.4.2", "8", header, LAYOUTS[layout])


def decoded(raws: list[bytes]) -> list[RawMessage]:
    out = [m for m in codec.Decoder().feed(b"".join(raws)) if isinstance(m, RawMessage)]
    assert len(out) == len(raws)
    return out


def timed(msgs: list[RawMessage], fn: Callable[[RawMessage], object]) -> float:
    """µs per message of ``fn`` over ``msgs``."""
    t0 = time.perf_counter()
    for m in msgs:
        fn(m)
    return (time.perf_counter() - t0) / len(msgs) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--slow-messages", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    dd = load_dictionary("FIX.4.2")
    rnd = random.Random(1)
    typical = [execution_report(i) for i in range(1, args.messages + 1)]
    mixed = [execution_report(i, rnd.choice(sorted(LAYOUTS))) for i in range(1, args.messages + 1)]
    fast = Validator(dd)
    for raw in [execution_report(1, name) for name in LAYOUTS] * 2:
        assert fast.validate(decoded([raw])[0]) is None          # compile the four layouts
    assert fast.cached_layouts == len(LAYOUTS)
    slow = Validator(dd, ValidationOptions(layout_cache_size=0))
    figures: dict[str, list[float]] = {k: [] for k in ("cached", "cached_mixed", "uncached",
                                                        "fields")}
    for _ in range(args.rounds):
        figures["cached"].append(timed(decoded(typical), fast.validate))
        figures["cached_mixed"].append(timed(decoded(mixed), fast.validate))
        few = decoded(typical[:args.slow_messages])
        figures["uncached"].append(timed(few, slow.validate))
        figures["fields"].append(timed(decoded(typical[:args.slow_messages]), RawMessage.fields))
    assert all(fast.validate(m) is None for m in decoded(mixed[:100]))
    out: dict[str, object] = {"bench": "validate"}
    out.update({f"{k}_us_per_msg": round(statistics.median(v), 3) for k, v in figures.items()})
    out.update({"message_bytes": len(typical[0]), "fields": typical[0].count(b"\x01"),
                "rounds": args.rounds, "python": sys.version.split()[0]})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
