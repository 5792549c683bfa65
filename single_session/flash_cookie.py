"""Flashed messages (and Flask-Login's ``next``) of a session that holds nothing
else, kept in its cookie.

A visitor whose session gets a flashed message and nothing more, such as a
crawler sent from a ``login_required`` page to the login view with Flask-Login's
"Please log in" message, or a device told why it was signed out, would
otherwise cost a stored session each time, kept for the idle lifetime, though
the message is read on the very next request (if the visitor comes back at
all). Such a session travels in its cookie instead, signed as Flask's own
cookie session is (readable by the client, which is shown the messages anyway):
nothing is written. Once it holds anything else, it is stored as any session.
"""

from __future__ import annotations

import hashlib
import typing as t

from flask.sessions import session_json_serializer
from itsdangerous import BadData
from itsdangerous import URLSafeTimedSerializer

if t.TYPE_CHECKING:
    from flask import Flask

#: Starts the cookie value of a flash-only session; a signed session id never
#: does (its characters are base64url's and ".").
PREFIX = "~"
#: A longer one is stored in the database instead: browsers keep at most about
#: 4 KB per cookie, and every request of the site sends it.
MAX_LENGTH = 2000
#: What such a session holds: the messages; the page to go back to after the
#: login, with the session identifier that goes with it (Flask-Login's
#: ``USE_SESSION_FOR_NEXT``: "strong" session protection drops ``next``
#: without it); and whether it is permanent.
KEYS = frozenset({"_flashes", "next", "_id", "_permanent"})


class FlashCookie:
    """Makes and reads the cookie value of a flash-only session, with the app's
    ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (one serializer per set of keys)."""

    def __init__(self) -> None:
        self._cached: tuple[tuple[t.Any, ...], URLSafeTimedSerializer] | None = None

    def _serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        # itsdangerous wants the keys oldest first and the newest (signing) last.
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or []), app.secret_key)
        cached = self._cached
        if cached is None or cached[0] != keys:
            serializer = URLSafeTimedSerializer(
                list(keys),
                salt="single_session.flashes",
                serializer=session_json_serializer,
                signer_kwargs={"digest_method": hashlib.sha256},
            )
            cached = self._cached = (keys, serializer)
        return cached[1]

    def dumps(self, app: Flask, data: t.Mapping[str, t.Any]) -> str | None:
        """The cookie value for ``data`` (which holds :data:`KEYS` and flags,
        nothing else: the caller checks), or ``None`` if it holds none of the
        messages or ``next``, or would make too long a cookie."""
        flashes = data.get("_flashes")
        if "_flashes" in data and not isinstance(flashes, list):
            return None  # not what flash() makes: kept in the database
        next_ = data.get("next")
        if next_ is not None and not (
            isinstance(next_, str) and app.config.get("USE_SESSION_FOR_NEXT")
        ):
            return None  # the app's own "next", not Flask-Login's
        if not flashes and next_ is None:
            return None
        serializer = self._serializer(app)
        if serializer is None:
            return None
        payload = {key: data[key] for key in KEYS if key in data}
        try:
            value = PREFIX + serializer.dumps(payload)
        except (TypeError, ValueError):
            return None  # the database path names the value that cannot be kept
        return value if len(value) <= MAX_LENGTH else None

    def loads(self, app: Flask, value: str, max_age: int) -> dict[str, t.Any] | None:
        """The session in a cookie value :meth:`dumps` made no longer than
        ``max_age`` seconds ago, or ``None``."""
        serializer = self._serializer(app)
        if serializer is None or len(value) > MAX_LENGTH or not value.isascii():
            return None
        try:
            data = serializer.loads(value[len(PREFIX) :], max_age=max_age)
        except (BadData, ValueError, TypeError, KeyError):
            return None
        if (
            not isinstance(data, dict)
            or not set(data) <= KEYS
            or not isinstance(data.get("_flashes", []), list)
        ):
            return None
        return data
