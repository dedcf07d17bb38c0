"""dcgateway: a real-time FIX drop copy fan-out gateway."""

__version__ = "0.1.0"

from dcgateway.hotpath import prefer_pure as _prefer_pure

_prefer_pure()      # DCGATEWAY_PURE=1: load the hot path's .py files, not its compiled modules
