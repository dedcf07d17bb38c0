"""Checks shared by the tests that walk a data_dir: everything the gateway writes under it is
private to its user (files 0600, directories 0700)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def loose_modes(root: Path) -> list[str]:
    """Every file under ``root`` not 0600 and every directory not 0700 (root included)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            st = os.lstat(name)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want:
                bad.append(f"{os.path.relpath(name, root)}: {stat.S_IMODE(st.st_mode):o}")
    return bad
