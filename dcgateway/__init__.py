"""dcgateway: a real-time FIX drop copy fan-out gateway."""

__version__ = "0.1.0"
