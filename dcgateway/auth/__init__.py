"""Authentication core: iLink 2 style secure logon (docs/venue.md).

* :mod:`.canonical`  canonical Logon string; key scope (Session ID) of a session
* :mod:`.signing`    client helpers: sign a Logon (simulators, tests, users' own clients)
* :mod:`.verify`     :class:`LogonAuthenticator` -> :class:`AuthDecision` (never raises)
* :mod:`.keystore`   :class:`KeyStore`: AES-GCM encrypted file, atomic writes, flock
* :mod:`.lifecycle`  :class:`KeyManager`: ``keys create/list/download/delete``, expiry rules
* :mod:`.audit`      append-only JSON-lines audit log of key operations
* :mod:`.lockout`    persistent port closures (locked sessions), ``unlock_session``
* :mod:`.notices`    which key-expiry notices are due; record of those sent

Nothing here keeps module-level state (docs/architecture.md rule 4); secrets never reach a log line, an
exception message or a repr (rule 7).
"""

from .audit import AUDIT_FILE_NAME, AuditLog
from .canonical import (
                        CANONICAL_TAGS,
                        FIX_REQUIRED_TAGS,
                        ILINK2_REQUIRED_TAGS,
                        canonical_bytes,
                        canonical_string,
                        key_scope,
                        required_tags,
)
from .keystore import KeyInfo, KeyRecord, KeyStore
from .lifecycle import (
                        CSV_COLUMNS,
                        KeyManager,
                        MarketClose,
                        key_file_csv,
                        new_key_expiry,
                        open_key_manager,
                        rotation_expiry,
)
from .lockout import (
                        PORT_CLOSURE_TEXT,
                        STATE_FILE_NAME,
                        PortClosures,
                        locked_sessions,
                        unlock_session,
)
from .notices import NOTICES_FILE_NAME, Notice, NoticeLog, due_notices
from .signing import (
                        METHOD,
                        add_credentials,
                        credential_fields,
                        logon_signer,
                        sign_logon_fields,
                        signature,
                        signed_logon,
)
from .verify import (
                        AUTH_FAILED_TEXT,
                        REASONS,
                        AuthDecision,
                        LogonAuthenticator,
                        SessionAuth,
                        session_auth,
)

__all__ = [
    "AUDIT_FILE_NAME", "AUTH_FAILED_TEXT", "AuditLog", "AuthDecision", "CANONICAL_TAGS",
    "CSV_COLUMNS", "FIX_REQUIRED_TAGS", "ILINK2_REQUIRED_TAGS", "KeyInfo", "KeyManager",
    "KeyRecord", "KeyStore", "LogonAuthenticator", "METHOD", "MarketClose", "NOTICES_FILE_NAME",
    "Notice", "NoticeLog", "PORT_CLOSURE_TEXT", "PortClosures", "REASONS", "STATE_FILE_NAME",
    "SessionAuth", "add_credentials", "canonical_bytes", "canonical_string", "credential_fields",
    "due_notices", "key_file_csv", "key_scope", "locked_sessions", "logon_signer", "new_key_expiry",
    "open_key_manager", "required_tags", "rotation_expiry", "session_auth", "sign_logon_fields",
    "signature", "signed_logon", "unlock_session",
]
