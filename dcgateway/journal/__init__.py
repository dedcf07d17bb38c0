"""The journal: every source message is appended here, with the target sequence numbers it was
given, before any copy of it leaves; copies and resends are read back from it by target seq.

* :mod:`.base`      the seam: :class:`Journal`, :class:`Committer`, :class:`Entry`
* :mod:`.segment`   :class:`SegmentJournal`, the embedded implementation: CRC-framed segment
  files, per-target indexes, checkpoints (the why is in its docstring)
* :mod:`.commit`    :class:`GroupCommitter`: the commit of each read (durability ``fsync`` or
  ``os``), one fdatasync at a time in its sync thread
* :mod:`.recovery`  from the files back to a consistent journal (:class:`Recovery`)
* :mod:`.replay`    reading what a target was sent, without the writer's lock (the CLI)
* :mod:`.format`, :mod:`.index`  the on-disk record and index formats
"""

from .base import Committer, Entry, Journal
from .commit import GroupCommitter
from .recovery import Recovery
from .segment import SegmentJournal

__all__ = ["Committer", "Entry", "GroupCommitter", "Journal", "Recovery", "SegmentJournal"]
