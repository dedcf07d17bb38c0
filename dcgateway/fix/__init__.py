"""Sans-I/O FIX: codec and session state machine. Imports no asyncio, socket or time (docs/architecture.md
rule 1): time is an argument, bytes in, events and bytes out."""
