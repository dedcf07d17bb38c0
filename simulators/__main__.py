"""``python -m simulators source|target ...``: the simulators' command lines in one place.

Each simulator is also a command of its own (``python -m simulators.source``,
``python -m simulators.target``); this only dispatches, so ``--help`` of either works the same.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = ("source", "target")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m simulators {{{','.join(COMMANDS)}}} [options]  "
              "(--help after the command for its options)", file=sys.stderr)
        return 2
    if args[0] == "source":
        from .source import main as run
    else:
        from .target import main as run
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
