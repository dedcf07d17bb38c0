"""Thin asyncio shells around the sans-I/O FIX core: the acceptor (one port, sessions told apart by
the Logon's 49/56) and the per-connection protocol that feeds bytes to a FixSession and writes what
it answers."""
