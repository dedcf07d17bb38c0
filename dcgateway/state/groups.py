"""Drop copy groups kept in the groups file named by gateway.yaml (the embedded state store).

Every change is a read-modify-write of the whole file under an exclusive ``flock`` on its
folder (two editors never lose each other's change; no lock file is left behind), validated with
the same rules as ``check-config`` and written atomically (a reader sees the old file or the new
one). The running gateway notices the new file by its stat signature and swaps its routing table.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import (
    GatewayConfig,
    GroupDef,
    declares_no_groups,
    group_to_data,
    groups_from_data,
    load_groups,
    write_groups_atomic,
)
from ..errors import ConfigError, DcGatewayError, UsageError
from ..fsutil import atomic_write, stat_signature
from .base import AuditSink
from .status import read_status

LOCK_TIMEOUT_S = 10.0


@contextlib.contextmanager
def folder_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive flock on ``path``'s folder for a read-modify-write of ``path``."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DcGatewayError(f"{path.parent}: another change to the groups is in "
                                         f"progress (waited {timeout:g}s)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def find_group(groups: Sequence[GroupDef], name: str, entity: str | None) -> GroupDef:
    """The group ``name`` (of ``entity`` when given); UsageError when absent or ambiguous."""
    found = [g for g in groups if g.name == name and (entity is None or g.entity == entity)]
    if not found:
        where = f" in entity {entity}" if entity else ""
        raise UsageError(f"no group named {name!r}{where}")
    if len(found) > 1:
        owners = ", ".join(sorted(g.entity for g in found))
        raise UsageError(f"group name {name!r} is used by entities {owners}; expected --entity "
                         "ENTITY to say which")
    return found[0]


class GroupsRefused(DcGatewayError):
    """A change the running gateway refused (it goes on with the groups it had): undone."""


class FileGroupStore:
    """:class:`~dcgateway.state.base.GroupStore` on the groups file."""

    def __init__(self, config: GatewayConfig, audit: AuditSink) -> None:
        self.config = config
        self.path = config.groups_file
        self.audit = audit
        #: Called with the new groups once they are written, still under the lock: None when
        #: they are in use, else why they were refused; then the file is put back as it was and
        #: the change fails (:class:`GroupsRefused`). The command line sets it to wait for a
        #: running gateway to follow the change (see ``dcgateway.cli.groups``).
        self.confirm: Callable[[tuple[GroupDef, ...]], str | None] | None = None

    def current(self) -> tuple[GroupDef, ...]:
        return load_groups(self.path, self.config.sessions, self.config.entities)

    def signature(self) -> Hashable:
        return stat_signature(self.path)

    def declares_no_groups(self) -> bool:
        """The file says ``groups: []`` (see :func:`~dcgateway.config.declares_no_groups`)."""
        return declares_no_groups(self.path)

    def _change(self, edit: Any) -> tuple[GroupDef, ...]:
        """Apply ``edit(current groups data) -> new groups data`` under the lock; the new
        groups are validated whole before anything is written."""
        with folder_lock(self.path):
            current = [group_to_data(g) for g in self.current()]
            data = edit(current)
            try:
                groups = groups_from_data(data, self.config.sessions, self.config.entities)
            except ConfigError as exc:
                raise ConfigError([f"refused: {p}" for p in exc.problems]) from None
            self._check_served(groups)
            before = self.path.read_bytes() if self.confirm is not None else b""
            write_groups_atomic(self.path, groups)
            refused = self.confirm(groups) if self.confirm is not None else None
            if refused is not None:
                mode = self.path.stat().st_mode & 0o777
                atomic_write(self.path, before, mode)
                raise GroupsRefused(f"{refused}; {self.path} is back as it was")
        return groups

    def _check_served(self, groups: Sequence[GroupDef]) -> None:
        """Refuse groups naming a session the running gateway does not serve: it reads the
        sessions from gateway.yaml when it starts, so a session added to the file since would
        make it refuse the whole new groups file and go on routing by the old one."""
        status = read_status(self.config.gateway.data_dir)
        served = status.get("sessions")
        if not isinstance(served, list):
            return                         # no gateway running (or one that does not say)
        named = dict.fromkeys(c for g in groups for c in (*g.sources, *g.targets))
        missing = [c for c in named if c not in served]
        if missing:
            raise ConfigError([
                f"refused: session {c!r} is in {self.config.path} but not served by the running "
                f"gateway (pid {status.get('pid')}), which reads its sessions when it starts; "
                f"expected a restart of the gateway before a group names {c!r}"
                for c in missing])

    def create(self, data: Mapping[str, Any], *, actor: str | None) -> GroupDef:
        """Add a group (``data`` in groups.yaml's shape, ``entity`` included)."""
        groups = self._change(lambda cur: cur + [dict(data)])
        created = groups[-1]
        self.audit.record("groups", "group_create", who=actor, entity=created.entity,
                          group=created.name)
        return created

    def replace(self, entity: str, name: str, data: Mapping[str, Any], *,
                actor: str | None) -> GroupDef:
        """Replace ``entity``'s group ``name`` by ``data`` (which may rename it; its entity
        stays ``entity``)."""
        new_data = {**data, "entity": entity}

        def edit(cur: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for i, g in enumerate(cur):
                if g["entity"] == entity and g["name"] == name:
                    return cur[:i] + [new_data] + cur[i + 1:]
            raise UsageError(f"no group named {name!r} in entity {entity}")
        groups = self._change(edit)
        new = find_group(groups, str(new_data.get("name", name)), entity)
        self.audit.record("groups", "group_replace", who=actor, entity=entity, group=name)
        return new

    def delete(self, entity: str, name: str, *, actor: str | None) -> GroupDef:
        deleted: list[dict[str, Any]] = []

        def edit(cur: list[dict[str, Any]]) -> list[dict[str, Any]]:
            keep = [g for g in cur if not (g["entity"] == entity and g["name"] == name)]
            if len(keep) == len(cur):
                raise UsageError(f"no group named {name!r} in entity {entity}")
            deleted.extend(g for g in cur if g not in keep)
            return keep
        self._change(edit)
        self.audit.record("groups", "group_delete", who=actor, entity=entity, group=name)
        return groups_from_data(deleted, self.config.sessions, self.config.entities)[0]
