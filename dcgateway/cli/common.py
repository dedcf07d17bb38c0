"""What every ``dcgateway`` command shares: the global options (``--config``, ``--json``,
``--as``), an argument parser whose errors return instead of exiting, the :class:`Output` of a
command (text, or one JSON document with ``--json``) and the helpers handlers use.

A command module defines ``register(subparsers, common)`` calling :func:`add_command`; a handler
gets ``(args, out)``, uses :func:`load` and :func:`require_admin`, prints with ``out.result`` and
raises :class:`~dcgateway.errors.DcGatewayError` subclasses for errors (their ``exit_code``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..config import GatewayConfig, load_config
from ..errors import UsageError
from ..state import STATUS_FILE_NAME as STATUS_NAME
from ..state import read_status

DEFAULT_CONFIG = "config/gateway.yaml"

Handler = Callable[[argparse.Namespace, "Output"], int]
Registrar = Callable[[Any, argparse.ArgumentParser], None]


# ---------------------------------------------------------------------------------------------
# Parser plumbing: argparse errors become return values, not SystemExit
# ---------------------------------------------------------------------------------------------

class ArgumentError(Exception):
    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage, self.message = usage, message


class ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors (exit 2) and --help/--version (exit 0) return from
    :func:`main` instead of calling sys.exit, so ``main([...])`` always returns an int."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self.format_usage(), message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--config/--json/--as. On subcommands the defaults are SUPPRESS, so that an option given
    before the subcommand is not overwritten by the subcommand's default."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value
    parser.add_argument("--config", metavar="PATH", default=default(DEFAULT_CONFIG),
                        help=f"gateway.yaml to use (default {DEFAULT_CONFIG})")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output: one JSON document on stdout")
    parser.add_argument("--as", dest="actor", metavar="NAME", default=default(None),
                        help="the administrator acting (audited; must administer the entity)")


def add_command(subparsers: Any, common: argparse.ArgumentParser, name: str, handler: Handler,
                help: str) -> argparse.ArgumentParser:
    """Add one leaf subcommand that runs ``handler(args, out) -> exit code``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, parents=[common], help=help,
                                                            description=help)
    parser.set_defaults(handler=handler)
    return parser


class Output:
    """Where results and errors go: text, or one JSON document on stdout with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def result(self, data: Any, text: str) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=False))
        elif text:
            print(text)

    def fail(self, problems: Sequence[str], code: int) -> int:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if self.json:
            print(json.dumps({"ok": False, "errors": list(problems)}, indent=2))
        return code


# ---------------------------------------------------------------------------------------------
# Helpers for every command (other modules' registrars use these too)
# ---------------------------------------------------------------------------------------------

def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of text cells as left-aligned columns (the first row is the heading)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def load(args: argparse.Namespace, *, groups: bool = True, serving: bool = False
         ) -> GatewayConfig:
    """The configuration named by --config (raises ConfigError: exit 2 with every problem);
    ``groups=False`` for commands that do not use the groups; ``serving`` for what serves or
    checks for it (``run``, ``demo``, ``portal``, ``check-config``): the TLS files are loaded
    (see :func:`load_config`)."""
    return load_config(args.config, groups=groups, tls_files=serving)


def require_admin(config: GatewayConfig, actor: str | None, entity: str) -> None:
    """Refuse (UsageError, exit 2) when --as NAME was given and NAME does not administer
    ``entity`` (CLI.md: the exchange's operators act through the portal; on the command line
    they act without --as, as whoever has the files). Without --as nothing is checked."""
    if actor is None:
        return
    ent = config.entity(entity)
    if ent is None or not ent.administers(actor):
        raise UsageError(f"{actor} does not administer {entity}")


def administered(config: GatewayConfig, actor: str) -> list[str]:
    """The entities ``actor`` administers."""
    return [e.name for e in config.entities if e.administers(actor)]


def acting_for(config: GatewayConfig, actor: str | None) -> list[str] | None:
    """For a listing with --as NAME: the entities NAME may see (refused, exit 2, when NAME acts
    for none); None without --as (everything)."""
    if actor is None:
        return None
    mine = administered(config, actor)
    if not mine:
        raise UsageError(f"{actor} does not administer any entity")
    return mine


def node_view(config: GatewayConfig, node_id: str | None = None
              ) -> tuple[GatewayConfig, dict[str, Any], str | None]:
    """Whose files a command reads: (the configuration as that gateway runs with it, its
    status document or {} when it does not run, the node's ID in a cluster or None).

    Alone: the gateway's own ``data_dir``. In a cluster each node keeps its own session files
    and copy of the journal (``data_dir/NODE_ID``): ``node_id`` when given, else the node that
    serves (its status file, rewritten while it serves; the newest if a frozen node's remains),
    else, none serving, the node whose files were written last."""
    from ..cluster.nodeconfig import for_node  # in a cluster only: nats-py stays unloaded
    if config.cluster is None:
        if node_id is not None:
            raise UsageError(f"--node {node_id}: {config.path} has no cluster: section")
        return config, read_status(config.gateway.data_dir), None
    views = [for_node(config, n.node_id) for n in config.cluster.nodes
             if node_id is None or n.node_id == node_id]
    if not views:
        known = ", ".join(n.node_id for n in config.cluster.nodes)
        raise UsageError(f"--node {node_id}: no such node in {config.path}; expected one of "
                         f"{known}")

    def written(view: GatewayConfig, name: str) -> float:
        try:
            return (view.gateway.data_dir / name).stat().st_mtime
        except OSError:
            return 0.0
    serving = [(written(v, STATUS_NAME), v, s) for v in views
               if (s := read_status(v.gateway.data_dir))]
    if serving:
        _, view, status = max(serving, key=lambda t: t[0])
        return view, status, view.cluster.node_id if view.cluster else None
    view = max(views, key=lambda v: max(written(v, "sessions"), written(v, "journal")))
    return view, {}, view.cluster.node_id if view.cluster else None
