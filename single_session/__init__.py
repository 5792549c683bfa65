"""Server-side Flask sessions in MongoDB, bound to Flask-Login users: one device
per user, log out everywhere."""

from __future__ import annotations

from .exceptions import ConfigurationError
from .exceptions import IndexConflict
from .exceptions import LoginDenied
from .exceptions import SessionDataError
from .exceptions import SessionStoreUnavailable
from .exceptions import SessionTooLarge
from .exceptions import SingleSessionError
from .extension import logout_everywhere
from .extension import revocation
from .extension import SessionInfo
from .extension import SingleSession
from .sessions import Revocation
from .sessions import ServerSession
from .signals import session_revoked

__all__ = [
    "ConfigurationError",
    "IndexConflict",
    "LoginDenied",
    "Revocation",
    "ServerSession",
    "SessionDataError",
    "SessionInfo",
    "SessionStoreUnavailable",
    "SessionTooLarge",
    "SingleSession",
    "SingleSessionError",
    "logout_everywhere",
    "revocation",
    "session_revoked",
]
