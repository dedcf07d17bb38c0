"""The fan-out, sans I/O: source messages -> routing -> journal -> per-target outboxes.

* :mod:`.router`        :class:`Fanout`: journal and route a source's batch; decisions for the
  shell (:class:`RefuseSource`, :class:`HoldSources`); :func:`target_rejects`
* :mod:`.outbox`        :class:`Outbox`: a target's outbound stream, merged by seq, handed out
  in budgeted takes once durable; spills to the journal when the target is slow
* :mod:`.adapt`         :class:`CopyAdapter`: a ``fix`` copy made valid in the target's data
  dictionary (FIX 4.2 <-> 4.4 translation), or its seq gap-filled
* :mod:`.target_store`  :class:`TargetStore`: the session store of a target (seqs shared between
  copies and the session's own messages; copies carried over a sequence reset)

Nothing here imports asyncio or the network shell; the tests drive it with no event loop.
"""

from .adapt import CopyAdapter
from .outbox import MAX_ADMIN_QUEUED, TAKE_BUDGET, Outbox, PendingCopies, SendingTimes
from .router import CANNOT_STORE_TEXT, Decision, Fanout, HoldSources, RefuseSource, target_rejects
from .target_store import TargetStore

__all__ = ["CANNOT_STORE_TEXT", "CopyAdapter", "Decision", "Fanout", "HoldSources",
           "MAX_ADMIN_QUEUED", "Outbox", "PendingCopies", "RefuseSource", "SendingTimes",
           "TAKE_BUDGET", "TargetStore", "target_rejects"]
