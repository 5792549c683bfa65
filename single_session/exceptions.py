"""The library's exceptions. All of them derive from :class:`SingleSessionError`."""

from __future__ import annotations

from werkzeug.exceptions import ServiceUnavailable


class SingleSessionError(Exception):
    """Base class for every error this library raises."""


class SessionStoreUnavailable(SingleSessionError, ServiceUnavailable):
    """MongoDB did not answer within ``SINGLE_SESSION_TIMEOUT``, or the connection
    failed, or the library cannot use it at all (its client cannot be built,
    or the server refuses its credentials: logged as an error).

    It is an HTTP exception (503), so a request that meets it ends with
    "503 Service Unavailable" instead of continuing as an anonymous session
    that could overwrite data. Register an error handler for it (or for 503) to
    render your own page.
    """

    description = "The session store is unavailable. Please try again in a moment."

    #: Set when a new session's insert failed in a way that it may have been
    #: stored all the same (its reply was lost and the check failed too).
    maybe_stored = False


class LoginDenied(SingleSessionError):
    """Raised by :func:`flask_login.login_user` when ``SINGLE_SESSION_ON_LIMIT`` is
    ``"deny"`` and the user already has the maximum number of sessions.

    The device stays anonymous and keeps its anonymous session data; the user's
    other sessions are untouched.
    """

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(
            f"User {user_id!r} already has {limit} active session(s), the most"
            " allowed (SINGLE_SESSION_MAX_SESSIONS). Sign out on another device"
            " first."
        )
        #: The Flask-Login id of the user that was refused.
        self.user_id = user_id
        #: The limit that was reached.
        self.limit = limit


class SessionDataError(SingleSessionError, ValueError):
    """The session holds a value that cannot be stored. The stored session is
    left as it was."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        #: The session key whose value could not be stored, if one is to blame.
        self.key = key


class SessionTooLarge(SessionDataError):
    """The serialized session is larger than ``SINGLE_SESSION_MAX_SIZE`` (or,
    whatever that says, than a MongoDB document can hold)."""

    def __init__(self, size: int, limit: int, *, setting: bool = True) -> None:
        source = (
            "SINGLE_SESSION_MAX_SIZE"
            if setting
            else "what a MongoDB document can hold beside the rest of the session"
        )
        super().__init__(
            f"The session is {size} bytes, over the limit of {limit} bytes"
            f" ({source}). Store large data elsewhere and keep a reference in"
            " the session."
        )
        self.size = size
        self.limit = limit


class ConfigurationError(SingleSessionError, RuntimeError):
    """The extension is set up in a way that cannot work; the message says how
    to fix it."""


class IndexConflict(ConfigurationError):
    """An index of the same name but with other options already exists."""
