"""The ``dcgateway`` command line (the operator contract: docs/cli.md and the README).

Exit codes: 0 success; 2 a usage or validation error (argparse errors, :class:`UsageError`,
:class:`ConfigError`, :class:`KeyLifecycleError`: anything whose ``exit_code`` is 2); 1 any other
failure. A :class:`DcGatewayError` or a configuration problem is printed as ``error: ...`` lines on
stderr, never as a traceback; with ``--json`` the outcome is also one JSON document on stdout
(``{"ok": false, "errors": [...]}`` on failure).

Every subcommand takes the global options ``--config PATH``, ``--json`` and ``--as NAME``, before
or after its name. Each command group is a module with ``register(subparsers, common)``, listed
in :data:`COMMANDS`; the modules import only :mod:`.common` and the layers below.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from collections.abc import Sequence

from .. import __version__, hotpath
from ..errors import ConfigError, DcGatewayError
from . import cluster, groups, keys, portal, replay, run, sessions
from .common import (
    ArgumentError,
    Handler,
    Output,
    Parser,
    ParserExit,
    Registrar,
    add_global_options,
)

#: command -> registrar(subparsers, common)
COMMANDS: dict[str, Registrar] = {
    "run": run.register_run,
    "check-config": run.register_check_config,
    "groups": groups.register,
    "keys": keys.register,
    "sessions": sessions.register,
    "replay": replay.register,
    "demo": run.register_demo,
    "portal": portal.register_portal,
    "users": portal.register_users,
    "cluster": cluster.register,
}

class _Version(argparse.Action):
    """``--version``: describes the hot path only when asked (that imports every compiled
    module), not while building the parser for every other command."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"dcgateway {__version__} ({hotpath.describe()})")     # stdout, as argparse's
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dcgateway", description="Real-time FIX drop copy fan-out gateway.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version and whether the hot path runs compiled, and exit")
    add_global_options(parser, suppress=False)
    common = Parser(add_help=False)
    add_global_options(common, suppress=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS.values():
        register(subparsers, common)
    return parser


def _os_error_text(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _stdout_gone() -> int:
    """The reader of our stdout went away (``dcgateway ... --json | head``): nothing more can be
    said there, so say it on stderr and point stdout at /dev/null, so that the interpreter's
    final flush of it does not fail again (the Python documentation's advice for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.stderr.write("error: the output was closed before it was all written "
                         "(broken pipe)\n")
    except (OSError, ValueError):
        pass
    return 1


def _stdout_broken() -> bool:
    """Whether our stdout is a pipe whose reader went away (poll: POLLERR on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dcgateway`` and ``python -m dcgateway``; returns the exit code."""
    try:
        code = _main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()                # here, not at exit, where a failure is a traceback
        return code
    except BrokenPipeError:
        return _stdout_gone()


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ParserExit as exc:
        return exc.status
    except ArgumentError as exc:
        sys.stderr.write(exc.usage)
        sys.stderr.write(f"error: {exc.message}\n")
        options = argv[:argv.index("--")] if "--" in argv else argv
        if "--json" in options:           # one JSON document on stdout, as for other errors
            print(json.dumps({"ok": False, "errors": [exc.message]}, indent=2))
        return 2
    out = Output(args.json)
    try:
        handler: Handler = args.handler
        return handler(args, out)
    except BrokenPipeError as exc:
        if _stdout_broken():
            raise                         # main() says so, once
        return out.fail([_os_error_text(exc)], 1)     # a socket's (SMTP, NATS), not ours
    except ConfigError as exc:
        return out.fail(exc.problems, exc.exit_code)
    except DcGatewayError as exc:
        return out.fail(str(exc).splitlines() or [type(exc).__name__], exc.exit_code)
    except OSError as exc:
        return out.fail([_os_error_text(exc)], 1)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return out.fail(["interrupted"], 1)
