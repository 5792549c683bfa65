"""The Flask extension: configuration, request hooks, Flask-Login signals, and
the public API for ending sessions."""

from __future__ import annotations

import functools
import logging
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import current_app
from flask import flash
from flask import Flask
from flask import got_request_exception
from flask import has_request_context
from flask import request
from flask.globals import request_ctx
from flask_login import current_user
from flask_login import logout_user
from flask_login.signals import session_protected
from flask_login.signals import user_accessed
from flask_login.signals import user_loaded_from_cookie
from flask_login.signals import user_logged_in
from flask_login.signals import user_logged_out

from . import policy
from . import remember
from .config import check as check_config
from .config import check_limit
from .config import DEFAULTS
from .config import duration
from .config import location as check_location
from .config import LONGEST_DURATION
from .config import on_limit as check_on_limit
from .config import record_device as check_record_device
from .config import timeout as config_timeout
from .exceptions import ConfigurationError
from .exceptions import LoginDenied
from .exceptions import SessionStoreUnavailable
from .flash_cookie import FlashCookie
from .sessions import aware
from .sessions import end_login
from .sessions import holds_place
from .sessions import is_moving
from .sessions import is_remembered
from .sessions import LOGGED_OUT
from .sessions import LOGIN_KEYS
from .sessions import past_lifetime
from .sessions import Revocation
from .sessions import ServerSession
from .sessions import ServerSessionInterface
from .sessions import write_session
from .signals import session_revoked
from .store import RequestBudget
from .store import SessionStore
from .tokens import SignerCache

if t.TYPE_CHECKING:
    from flask import Response
    from pymongo.collection import Collection

EXTENSION_NAME = "single_session"

logger = logging.getLogger("single_session")

#: Default flash messages for a device whose session was revoked, by reason.
#: Every reason a session is revoked or ended for.
REASONS = (
    policy.SIGNED_IN_ELSEWHERE,
    policy.LOGOUT_EVERYWHERE,
    policy.LOGOUT_OTHERS,
    policy.REVOKED,
    policy.REMEMBER_TOKEN_REUSED,
    LOGGED_OUT,
)

DEFAULT_REVOKED_MESSAGES: dict[str, str] = {
    policy.SIGNED_IN_ELSEWHERE: (
        "You were signed out because your account signed in on another device."
    ),
    policy.LOGOUT_EVERYWHERE: "You were signed out on all devices.",
    policy.LOGOUT_OTHERS: "This device was signed out from another of your devices.",
    policy.REVOKED: "This device was signed out from another device.",
    policy.REMEMBER_TOKEN_REUSED: (
        "You were signed out because your sign-in cookie was used on another device."
    ),
}

_MAX_IP = 64
_MAX_USER_AGENT = 512


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's sessions, as :meth:`SingleSession.sessions_of` lists them."""

    #: Opaque name of the session, for :meth:`SingleSession.revoke`. Not its id.
    handle: str
    #: When the session was created (aware, UTC).
    created_at: datetime
    #: When the user logged in on this device (kept across remember-me
    #: restores; :meth:`SingleSession.logout_others` sets it to its own time).
    login_at: datetime | None
    #: When the device was last seen (to within ``SINGLE_SESSION_TOUCH_INTERVAL``).
    last_seen: datetime
    #: The client's address when the session was created or logged in (``None``
    #: when ``SINGLE_SESSION_RECORD_DEVICE`` is off).
    ip: str | None
    #: The client's User-Agent then, at most 512 characters.
    user_agent: str | None
    #: This is the session of the current request.
    current: bool
    #: The device has a remember-me cookie.
    remembered: bool


class _State:
    """What the extension keeps for one app, in ``app.extensions["single_session"]``."""

    def __init__(
        self, app: Flask, extension: SingleSession, store: SessionStore
    ) -> None:
        self.app = app
        #: The app's config (the same object for the app's whole life).
        self.config = app.config
        self.extension = extension
        self.store = store
        self.session_signer = SignerCache("single_session.session")
        self.flash_cookie = FlashCookie()
        self.remember_signer = SignerCache("single_session.remember", parts=2)
        #: The clock. Tests replace it to move time forward.
        self.clock: t.Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._touch_interval: tuple[tuple[t.Any, ...], timedelta] | None = None

    def now(self) -> datetime:
        # BSON keeps milliseconds; so does everything compared with it.
        now = self.clock()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def idle_lifetime(self) -> timedelta:
        # (Flask's config attribute is a timedelta already.) At most a hundred
        # years, as any duration setting of the library: Flask takes any, but
        # a stored expiry must still be a date.
        return min(self.app.permanent_session_lifetime, LONGEST_DURATION)

    def absolute_lifetime(self) -> timedelta | None:
        value = self.config["SINGLE_SESSION_ABSOLUTE_LIFETIME"]
        return (
            None
            if value is None
            else duration("SINGLE_SESSION_ABSOLUTE_LIFETIME", value)
        )

    def touch_interval(self) -> timedelta:
        # (Read on every request: worked out again only when a setting changes.)
        settings = (
            self.config["SINGLE_SESSION_TOUCH_INTERVAL"],
            self.config["PERMANENT_SESSION_LIFETIME"],
        )
        cached = self._touch_interval
        # (By identity: True == 1, and the setting's check must run again.)
        if (
            cached is not None
            and cached[0][0] is settings[0]
            and cached[0][1] is settings[1]
        ):
            return cached[1]
        interval = duration("SINGLE_SESSION_TOUCH_INTERVAL", settings[0], zero=True)
        # At most half the idle lifetime: a longer one would let a session in
        # use, whose contents do not change, expire.
        interval = min(interval, self.idle_lifetime() / 2)
        self._touch_interval = (settings, interval)
        return interval

    def max_size(self) -> int | None:
        size: int | None = self.config["SINGLE_SESSION_MAX_SIZE"]
        return size

    def remember_ids(self, value: str) -> tuple[str, ...] | None:
        """The (series, token) in a remember-me cookie value of this library's,
        or ``None``. The value is wrapped in Flask-Login's format ("value|HMAC");
        only the inner, signed value counts."""
        signer = self.remember_signer.get(self.app)
        return None if signer is None else signer.unsign(value.rsplit("|", 1)[0])

    def refresh_remember(self) -> bool:
        return bool(self.config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"))

    def on_limit(self) -> str:
        # (Checked again here, as the limit is: a test may set it after init.)
        return check_on_limit(self.config["SINGLE_SESSION_ON_LIMIT"])

    def limit_for(self, user: t.Any) -> int | None:
        limit = self.config["SINGLE_SESSION_MAX_SESSIONS"]
        if callable(limit):
            limit = limit(user)
        return check_limit(limit)

    def device(self) -> dict[str, str] | None:
        record = check_record_device(self.config["SINGLE_SESSION_RECORD_DEVICE"])
        if not record or not has_request_context():
            return None
        environ = request.environ
        return {
            "ip": (environ.get("REMOTE_ADDR") or "")[:_MAX_IP],
            "user_agent": environ.get("HTTP_USER_AGENT", "")[:_MAX_USER_AGENT],
        }

    def load_user(self, user_id: str) -> t.Any:
        """The user Flask-Login's ``user_loader`` gives for ``user_id``, or
        ``None``."""
        login_manager = getattr(self.app, "login_manager", None)
        loader = getattr(login_manager, "_user_callback", None)
        return None if loader is None else loader(user_id)

    def bind_outside_login(self, session: ServerSession, user_id: str) -> None:
        """Bind a session whose ``_user_id`` was set without ``login_user()``."""
        user = self.load_user(user_id)
        if user is not None:
            try:
                policy.bind(self, session, user, user_id)
                return
            except LoginDenied:
                pass
        logger.warning(
            "single_session dropped the login of %r: the user is unknown or"
            " over the session limit. Log users in with login_user().",
            user_id,
        )
        for key in LOGIN_KEYS:
            dict.pop(session, key, None)

    def persist(self, session: ServerSession) -> None:
        write_session(self, session)


def get_state(app: Flask) -> _State:
    try:
        state: _State = app.extensions[EXTENSION_NAME]
    except KeyError:
        raise RuntimeError(
            "The current Flask app is not registered with this 'SingleSession'"
            " instance. Did you forget to call 'init_app', or did you create"
            " multiple 'SingleSession' instances?"
        ) from None
    return state


class SingleSession:
    """Server-side sessions in MongoDB, bound to Flask-Login users.

    :param app: the app to set up now; or call :meth:`init_app` later.
    :param collection: the pymongo ``Collection`` to keep sessions in (or one
        with its API, such as mongomock's). Without it, ``init_app`` builds one
        from ``SINGLE_SESSION_MONGODB_URI``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        collection: Collection[dict[str, t.Any]] | None = None,
    ) -> None:
        self.collection = collection
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        collection: Collection[dict[str, t.Any]] | None = None,
    ) -> None:
        """Register the extension on ``app``: its session interface, request
        hooks, Flask-Login receivers and the ``flask single-session`` commands.
        It never waits for the database: indexes are created on the first write.

        :param collection: this app's collection (an app factory's test app
            given a mongomock collection, say), in place of the one given to the
            constructor or built from the configuration.

        Configuration (defaults in brackets):

        - ``SINGLE_SESSION_MONGODB_URI`` [None], ``SINGLE_SESSION_DATABASE``
          [the URI's database, else ``"single_session"``],
          ``SINGLE_SESSION_COLLECTION`` [``"sessions"``]: where sessions live
          when no ``collection`` was given.
        - ``SINGLE_SESSION_MAX_SESSIONS`` [1]: sessions per user; ``None`` for no
          limit, or a callable taking the user and returning either.
        - ``SINGLE_SESSION_ON_LIMIT`` [``"evict"``]: ``"evict"`` (the newest login
          wins) or ``"deny"`` (``login_user`` raises :exc:`LoginDenied`).
        - ``SINGLE_SESSION_TOUCH_INTERVAL`` [60 s]: an unmodified session is
          written back (last seen, idle expiry) at most this often.
        - ``SINGLE_SESSION_ABSOLUTE_LIFETIME`` [None]: a session ends this long
          after it was created, however active.
        - ``SINGLE_SESSION_TIMEOUT`` [3 s]: how long the database calls of one
          request may take together (a call outside a request, or a clean-up
          after a failure, gets as long on its own).
        - ``SINGLE_SESSION_MAX_SIZE`` [65536]: bytes of stored session data.
        - ``SINGLE_SESSION_RECORD_DEVICE`` [True]: store ip and User-Agent.
        - ``SINGLE_SESSION_REVOKED_MESSAGE`` [per-reason messages]: flashed
          (category ``"warning"``) to a device whose session was revoked; a
          string, a dict by reason, or ``None`` for none.

        Flask's ``SESSION_COOKIE_*``, ``PERMANENT_SESSION_LIFETIME`` (the idle
        lifetime), ``SESSION_REFRESH_EACH_REQUEST``, ``SECRET_KEY`` and
        ``SECRET_KEY_FALLBACKS`` keep their meaning, as do Flask-Login's
        ``REMEMBER_COOKIE_*``.
        """
        if EXTENSION_NAME in app.extensions:
            raise RuntimeError(
                "A 'SingleSession' instance has already been registered on this Flask"
                " app. Import and use that instance instead."
            )
        config = app.config
        for key, default in DEFAULTS.items():
            config.setdefault(key, default)
        config.setdefault("SINGLE_SESSION_REVOKED_MESSAGE", DEFAULT_REVOKED_MESSAGES)
        check_config(config, REASONS)

        store = SessionStore(
            self._collection_source(
                app, collection if collection is not None else self.collection
            ),
            config_timeout(config),
            functools.partial(_request_budget, app),
        )
        state = _State(app, self, store)
        app.extensions[EXTENSION_NAME] = state
        app.session_interface = ServerSessionInterface(state)
        # First of all before_request functions, last of all after_request ones.
        app.before_request_funcs.setdefault(None, []).insert(0, _before_request)
        app.after_request_funcs.setdefault(None, []).insert(0, _after_request)
        app.teardown_request_funcs.setdefault(None, []).append(_teardown_request)
        got_request_exception.connect(_on_request_exception, app)
        user_accessed.connect(_on_user_accessed, app)
        user_logged_in.connect(_on_user_logged_in, app)
        user_loaded_from_cookie.connect(_on_user_logged_in, app)
        user_logged_out.connect(_on_logged_out, app)
        session_protected.connect(_on_login_ended, app)

        from .cli import single_session_cli

        app.cli.add_command(single_session_cli)

    def _collection_source(
        self, app: Flask, collection: Collection[dict[str, t.Any]] | None
    ) -> t.Callable[[], Collection[dict[str, t.Any]]]:
        if collection is not None:
            return lambda: collection
        uri = app.config["SINGLE_SESSION_MONGODB_URI"]
        if not uri:
            raise ConfigurationError(
                "single_session needs a MongoDB collection. Either pass one,"
                " SingleSession(app, collection=client.mydb.sessions) or"
                " init_app(app, collection=...), or set SINGLE_SESSION_MONGODB_URI"
                " (with SINGLE_SESSION_DATABASE and SINGLE_SESSION_COLLECTION if the"
                " defaults do not suit)."
            )
        check_location(app.config)
        database = app.config["SINGLE_SESSION_DATABASE"]
        name = app.config["SINGLE_SESSION_COLLECTION"]
        options: dict[str, t.Any] = {}
        if "connecttimeoutms=" not in uri.lower():
            # A mongodb+srv:// URI's DNS lookup, at the first call, waits this
            # long, outside pymongo.timeout (the driver's default is 20 s): no
            # longer than a request's calls may take together.
            options["connectTimeoutMS"] = int(config_timeout(app.config) * 1000)

        def connect() -> Collection[dict[str, t.Any]]:
            # Called lazily in each process (never before a fork): pymongo
            # clients must not be shared across processes.
            from pymongo import MongoClient

            client: MongoClient[dict[str, t.Any]] = MongoClient(
                uri, connect=False, **options
            )
            db = (
                client[database]
                if database
                else client.get_default_database("single_session")
            )
            return db[name]

        return connect

    # -- public API ------------------------------------------------------------

    def logout_everywhere(self, user: t.Any) -> int:
        """End every session of ``user`` (a user object or its id), on every
        device, remember-me included. Returns how many sessions ended. One
        database update, whatever their number.

        Called in a request of that same user, it logs this request out too
        (:func:`flask_login.logout_user`), so the response already shows the
        user signed out and the rest of the session's data (flashed messages, a
        cart) carries on in a new anonymous session."""
        state = get_state(current_app)
        user_id = _user_id(user)
        count = policy.revoke_all(state, user_id, policy.LOGOUT_EVERYWHERE)
        session = _current_session()
        if session is not None and session.user_id == user_id:
            session.revoked_here = True
            logout_user()
        return count

    def logout_others(self, user: t.Any) -> int:
        """End every session of ``user`` but the current request's, which gets a
        fresh id (call it after a password change). Outside a request, or when
        the current session is not ``user``'s, ends them all. Returns how many
        ended."""
        state = get_state(current_app)
        user_id = _user_id(user)
        session = _current_session()
        if session is None or session.user_id != user_id:
            return policy.revoke_all(state, user_id, policy.LOGOUT_OTHERS)
        # The new id first: taking the session checks that it is still live
        # (a device evicted meanwhile ends nobody). Its login time becomes now,
        # and only older logins end, in the policy's order, so that a login
        # from elsewhere racing this one is ordered with it as the policy
        # orders logins: the newer one stays, never neither.
        now = state.now()
        try:
            if not _rotate(state, session, user, now):
                if session.frozen:
                    return _moving_elsewhere(state, session, user_id, now)
                return 0
        except LoginDenied:
            # Under "deny", with a limit lowered since, the others hold every
            # place: they end first, then this session takes one. Unless it
            # lost its own place while it moved (a login from elsewhere took
            # it): that login stays, and this request is logged out.
            key = session.key
            current = None if key is None else state.store.load(key, now)
            if current is not None and is_moving(current, now):
                session.frozen = True
                return _moving_elsewhere(state, session, user_id, now, current)
            if (
                current is None
                or "revoked" in current
                or past_lifetime(state, current, state.now())
            ):
                logout_user()
                return 0
            count = _revoke_older(state, user_id, session, now)
            try:
                _rotate(state, session, user, now)
            except LoginDenied:
                logout_user()  # its place went to a login from elsewhere
            return count
        return _revoke_older(state, user_id, session, now)

    def sessions_of(self, user: t.Any) -> list[SessionInfo]:
        """The live sessions of ``user`` (a user object or its id), newest login
        first. One query."""
        state = get_state(current_app)
        # (First: asking a current_user proxy for its id may restore the
        # request's login from its remember-me, and give it its key.)
        user_id = _user_id(user)
        session = _current_session()
        current_key = session.key if session is not None else None
        infos: list[SessionInfo] = []
        by_handle: dict[str, int] = {}
        fields = [
            "handle",
            "created_at",
            "login_at",
            "seen_at",
            "device",
            "remember",
            "moving",
        ]
        now = state.now()
        for document in state.store.user_sessions(user_id, now, fields):
            if is_moving(document, now):
                continue  # its successor, under a new id, is the device's
            if not holds_place(state, document, now):
                continue  # past a lifetime lowered since its last write
            created_at, seen_at = document.get("created_at"), document.get("seen_at")
            if not isinstance(created_at, datetime) or not isinstance(
                seen_at, datetime
            ):
                continue  # malformed: removed when its device comes back
            login_at = document.get("login_at")
            device = document.get("device")
            if not isinstance(device, dict):
                device = {}
            ip, user_agent = device.get("ip"), device.get("user_agent")
            info = SessionInfo(
                handle=str(document.get("handle")),
                created_at=created_at,
                login_at=login_at if isinstance(login_at, datetime) else None,
                last_seen=seen_at,
                ip=ip if isinstance(ip, str) else None,
                user_agent=user_agent if isinstance(user_agent, str) else None,
                current=document["_id"] == current_key,
                remembered=is_remembered(document, now),
            )
            # One row per handle, the device's: a move that failed half-way
            # in an outage may leave its new session beside the old one (see
            # take_back), under the same handle.
            seen = by_handle.get(info.handle)
            if seen is None:
                by_handle[info.handle] = len(infos)
                infos.append(info)
            elif info.current:
                infos[seen] = info
        return infos

    def revoke(self, user: t.Any, handle: str) -> bool:
        """End one session of ``user``, named by its handle (from
        :meth:`sessions_of`). Returns whether it was live. One update. Called
        on the current request's own session, it logs this request out too, as
        :meth:`logout_everywhere` does."""
        state = get_state(current_app)
        user_id = _user_id(user)
        query = {
            "user_id": user_id,
            "handle": str(handle),
            "purge_at": {"$gt": state.now()},
        }
        # (Two while the device's session moves to a new id: the handle goes
        # with it.)
        ended = state.store.revoke(query, policy.REVOKED, state.now()) > 0
        session = _current_session()
        document = session.document if session is not None else None
        if (
            ended
            and session is not None
            and document is not None
            and document.get("handle") == str(handle)
            and document.get("user_id") == user_id
        ):
            session.revoked_here = True
            logout_user()
        return ended


def logout_everywhere(user: t.Any) -> int:
    """End every session of ``user`` (a user object or its id) in the current
    app. Returns how many ended. See :meth:`SingleSession.logout_everywhere`."""
    return get_state(current_app).extension.logout_everywhere(user)


def revocation() -> Revocation | None:
    """Why this request's session (or remember-me) cookie no longer works, as a
    :class:`~single_session.sessions.Revocation`, or ``None``."""
    session = _current_session()
    if session is None:
        return None
    if session.remember_pending:
        # A remembered login is restored, or found revoked, when the request
        # first asks for the user: ask now.
        current_user._get_current_object()
    return session.revocation


def _user_id(user: t.Any) -> str:
    """The id Flask-Login stores in the session for ``user`` (a user object,
    or its id)."""
    get_id = _id_getter(user)
    return str(user) if get_id is None else str(get_id())


def _id_getter(user: t.Any) -> t.Callable[[], t.Any] | None:
    """What ``login_user()`` asks ``user`` for its id (``LoginManager.id_attribute``,
    ``get_id`` by default), or ``None`` if ``user`` is an id itself."""
    if isinstance(user, str):
        return None
    login_manager = getattr(current_app, "login_manager", None)
    get_id = getattr(user, getattr(login_manager, "id_attribute", "get_id"), None)
    return get_id if callable(get_id) else None


def _current() -> tuple[Flask, ServerSession] | None:
    """The current request's app and session, if the session is ours."""
    try:
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:  # no request
        return None
    # Read the context's session directly: since Flask 3.1.3 its ``session``
    # property marks it accessed (and responses that never touched it would get
    # "Vary: Cookie"), and fails while the session is being opened.
    if hasattr(ctx, "_session"):
        session = ctx._session
    else:  # Flask < 3.1.3: a plain attribute
        session = ctx.session
    return (ctx.app, session) if isinstance(session, ServerSession) else None


def _request_budget(app: Flask) -> RequestBudget | None:
    """The database budget of the request ``app`` is handling, if any: it lives
    on the request's session, so a thread given a copy of the request context
    shares it, and nothing is left behind when the request ends."""
    current = _current()
    return current[1].budget if current is not None and current[0] is app else None


def _current_session() -> ServerSession | None:
    current = _current()
    return None if current is None else current[1]


def _moving_elsewhere(
    state: _State,
    session: ServerSession,
    user_id: str,
    now: datetime,
    current: dict[str, t.Any] | None = None,
) -> int:
    """``logout_others`` found its session moving to a new id in another
    request (``current``, else what the login found). Another request of this
    browser moves it (a double click, a login of the same user in another
    tab): that one keeps the session, under the new id, and this one ends the
    other logins. A remember-me restore of the session while it was still
    live runs elsewhere, with a copy of this device's remember-me cookie
    (this browser has the live session, so it would not restore); which of
    the two is the owner cannot be told, so every session of the user ends,
    this one included. (A restore of an expired session may be this
    browser's own: it is treated as one of its requests.)"""
    current = current if current is not None else session.frozen_by
    if current is None:
        return 0
    expires_at = current.get("expires_at")
    if (
        not current.get("restoring")
        or not isinstance(expires_at, datetime)
        # (now: the restore came later)
        or aware(expires_at) <= state.now()
        or past_lifetime(state, current, state.now())
    ):
        # The session's own login, under whatever id it gets, stays; and so
        # do logins that came after this call began, or after the other
        # request began to move the session (as they would, had this call
        # run after it).
        moving = current.get("moving")
        cut = min(aware(moving), now) if isinstance(moving, datetime) else now
        return policy.revoke_all(
            state,
            user_id,
            policy.LOGOUT_OTHERS,
            keep=current["_id"],
            keep_login=policy.login_of(current),
            older_than=(cut, ""),
        )
    session.frozen = False
    count = policy.revoke_all(state, user_id, policy.LOGOUT_OTHERS)
    session.revoked_here = True
    logout_user()
    return count


def _revoke_older(
    state: _State, user_id: str, session: ServerSession, now: datetime
) -> int:
    key = session.key
    assert key is not None
    return policy.revoke_all(
        state, user_id, policy.LOGOUT_OTHERS, keep=key, older_than=(now, key)
    )


def _rotate(
    state: _State, session: ServerSession, user: t.Any, login_at: datetime
) -> bool:
    """Give the current session a new id, logged in at ``login_at``, as a new
    login of the same user on this device would (keeping its age and
    remember-me), through the policy (raises :exc:`LoginDenied`). Returns
    whether the session is still this request's and live: if it was revoked
    or ended meanwhile, this request is logged out; if another request is
    moving it, this one leaves it to that one (``session.frozen``)."""
    document = session.document
    if document is None:
        return False
    if _id_getter(user) is None:
        # An id (a str, an int...): the policy may need the user object.
        user = state.load_user(_user_id(user))
    if session.saved or user is None:
        # In a streamed body the response's cookies are out, and without a
        # user (the user_loader knows it no more) there is no policy to run:
        # the session keeps its id, if it is still live.
        current = state.store.load(document["_id"], login_at)
        return (
            current is not None
            and "revoked" not in current
            and not is_moving(current, login_at)
            and not past_lifetime(state, current, login_at)
        )
    # (A new token: copies of the device's cookie made before no longer work.)
    renewed = remember.renewed(
        state.app, state, document.get("remember"), login_at, request
    )
    revoked = policy.bind(
        state,
        session,
        user,
        document["user_id"],
        login_at=login_at,
        remember=document.get("remember") if renewed is None else renewed[0],
        rotating=True,
    )
    if session.frozen:
        return False  # (a double click: the other request moves it)
    if revoked:
        now = state.now()
        current = state.store.load(document["_id"], now)
        if current is not None and "revoked" not in current and is_moving(current, now):
            # Another request of this browser is giving it a new id (a double
            # click): that one's response carries the cookie; this one leaves it.
            session.frozen = True
            session.frozen_by = current
            return False
        logout_user()  # revoked or ended meanwhile (the new session too)
        return False
    if renewed is not None:
        stored, value = renewed
        session.remember_cookie = ("set", value, stored["expires_at"])
    return True


# -- request hooks ---------------------------------------------------------------


def _before_request() -> None:
    current = _current()
    if current is None:
        return
    app, session = current
    if session.unavailable is not None:
        raise session.unavailable
    if session.revocation is not None:
        _tell_why(app, session.revocation)


def _tell_why(app: Flask, revoked: Revocation) -> None:
    """Tell the app, and by default the user, why the device was signed out."""
    session_revoked.send(
        app,
        handle=revoked.handle,
        user_id=revoked.user_id,
        reason=revoked.reason,
        at=revoked.at,
    )
    messages = app.config["SINGLE_SESSION_REVOKED_MESSAGE"]
    message = (
        messages.get(revoked.reason) if isinstance(messages, Mapping) else messages
    )
    if message:
        flash(message, "warning")


def _after_request(response: Response) -> Response:
    current = _current()
    if current is None:
        return response
    app, session = current
    if session.unavailable is None:
        try:
            get_state(app).persist(session)
        except SessionStoreUnavailable as e:
            # Here, unlike in save_session, the failure can still become the
            # response: a 503, with no cookie set.
            session.unavailable = e
            response = app.make_response(app.handle_user_exception(e))
        else:
            remember.update_cookie(app, session, request, response)
            return response
    if session.stored_anew:
        # A login or restore was stored before the database failed: its cookies
        # go out with the 503, or the stored login would be held by no device
        # (under "deny", holding a place) and a rotated remember-me token would
        # later look stolen.
        remember.update_cookie(app, session, request, response)
        return response
    # Otherwise leave every cookie as it is (a remember-me must not be lost to
    # an outage).
    remember.strip_flask_login_cookie(app, response)
    return response


def _teardown_request(error: BaseException | None) -> None:
    """Take back a session stored under a new id in this request (a login, a
    remember-me restore, a first write) whose cookie never went out: the request
    failed before its response's cookies were set (a 500), or made no response
    at all (an exception propagated in debug or testing). No device holds it,
    and a login would otherwise hold a place under the policy (under "deny",
    the user's only one) until it expires."""
    current = _current()
    if current is None:
        return
    app, session = current
    no_response = error is not None and error is session.no_response
    cookies_lost = no_response or not session.saved  # (a 500 raised in a write)
    take_back = session.stored_anew and cookies_lost
    # The device keeps its old cookie then, and also after a 503 (which leaves
    # the cookies as they were, unless a login's must go out): a request that
    # was to tell it why it was signed out gives the telling back.
    telling_lost = session.told_claim is not None and (
        cookies_lost or (session.unavailable is not None and not session.stored_anew)
    )
    if not (take_back or telling_lost):
        return  # (the common case first)
    opened_in = session.opened_in
    if opened_in is None or opened_in() is not request_ctx._get_current_object():  # type: ignore[attr-defined]
        return  # a copy of the request context (in a thread) ends, not the request
    store = get_state(app).store
    if telling_lost:
        assert session.told_claim is not None
        store.release_claim(*session.told_claim)
    if not take_back:
        return
    key = session.key
    assert key is not None  # stored_anew
    try:
        store.delete(key, cleanup=True, keep_tombstone=True)
    except Exception:
        # Best effort: the app's own error, if any, is what the request ends on.
        logger.warning(
            "single_session could not take back a session no device holds",
            exc_info=True,
        )


def _on_request_exception(app: Flask, **extra: t.Any) -> None:
    """Flask's handle_exception is about to re-raise (in debug or testing, or
    with PROPAGATE_EXCEPTIONS) or to make a 500 page: when it re-raises, no
    response is made, whatever cookies were set on the one it dropped."""
    session = _current_session()
    if session is None:
        return
    propagate = app.config["PROPAGATE_EXCEPTIONS"]
    if propagate is None:  # (as handle_exception decides)
        propagate = app.testing or app.debug
    if propagate:
        # (Only if this very error then ends the request: an API library's
        # error handler may send the signal itself and still answer.)
        session.no_response = extra.get("exception")


# -- Flask-Login receivers ---------------------------------------------------------


def _on_user_accessed(app: Flask, **extra: t.Any) -> None:
    """Restore a login from this library's remember-me cookie when the request
    first asks for the user, as Flask-Login restores from its own cookie: after
    the app's before_request functions (a user_loader may rely on them), and
    only for requests that look at the user."""
    session = _current_session()
    if session is None:
        return
    _guard_remember_cookie(app)
    if not session.remember_pending or session.saved:
        # (After the response's cookies were set, as in a streamed body, a
        # restore could not hand the device its new token: the user stays
        # anonymous there, and the next request restores.)
        return
    told = session.revocation is not None
    try:
        remember.restore(app, get_state(app), session, request)
    except SessionStoreUnavailable as e:
        _unavailable(session, e)
        raise
    if session.revocation is not None and not told:
        _tell_why(app, session.revocation)  # revoked while it was restored


def _guard_remember_cookie(app: Flask) -> None:
    """Keep Flask-Login from reading this library's remember-me cookie itself.

    It does so when the session's user does not load (deleted, disabled) and
    the session does not say "clear", which this library cannot put beside a
    login without breaking ``login_remembered()``. It would then hand the
    cookie's series and token to the ``user_loader`` as a user id: a 500 with
    the usual ``int()`` loader, and a secret in the app's hands. The cookie is
    this library's to restore (with per-device tokens); Flask-Login's own
    cookie format, or any other, still reaches Flask-Login's code (to be
    refused by "clear"). Installed once per LoginManager, when the first
    request asks for the user, since the app may set it up after
    ``init_app``."""
    login_manager = getattr(app, "login_manager", None)
    read_cookie = getattr(login_manager, "_load_user_from_remember_cookie", None)
    if read_cookie is None or getattr(read_cookie, "single_session_guard", False):
        return

    def load_user_from_remember_cookie(cookie: str) -> t.Any:
        state = current_app.extensions.get(EXTENSION_NAME)
        if state is not None and state.remember_ids(cookie) is not None:
            return None
        return read_cookie(cookie)

    load_user_from_remember_cookie.single_session_guard = True  # type: ignore[attr-defined]
    login_manager._load_user_from_remember_cookie = load_user_from_remember_cookie  # type: ignore[union-attr]


def _on_user_logged_in(app: Flask, user: t.Any = None, **extra: t.Any) -> None:
    session = _current_session()
    if session is None or session.binding or session.frozen:
        # (A frozen request, beside another request of the browser that is
        # giving the session a new id, stores nothing: not a login either.)
        return
    if session.saved:
        # In a streamed body the response's cookies are out: no device could
        # hold the login. As with Flask's cookie session, it lasts only for the
        # rest of this request.
        logger.warning(
            "single_session did not store a login made after the response's"
            " cookies were set (in a streamed body)."
        )
        return
    state = get_state(app)
    user_id = session.get("_user_id")
    if user_id is None:
        return
    wants_remember = session.pop("_remember", None) == "set"
    seconds = session.pop("_remember_seconds", None)
    stored = None
    value = None
    if wants_remember and remember.duration(app, seconds) > timedelta(0):
        stored, value = remember.new_remember(app, state, state.now(), seconds)
    try:
        # The login this device's remember-me holds, if it was not restored in
        # this request: the new login replaces it.
        remembered = (
            remember.remembered_session(app, state, session, request)
            if session.remember_pending
            else None
        )
        policy.bind(
            state, session, user, str(user_id), remember=stored, replaces=remembered
        )
    except (LoginDenied, SessionStoreUnavailable) as e:
        # Undo what login_user() wrote, so that the view sees an anonymous user
        # (a login the device had, which login_user() overwrote, ends: what the
        # request did to it before cannot be told apart).
        for key in LOGIN_KEYS:
            session.pop(key, None)
        app.login_manager._update_request_context_with_user()  # type: ignore[attr-defined]
        if isinstance(e, SessionStoreUnavailable):
            _unavailable(session, e)
        raise
    if value is not None and not session.frozen:
        # (A frozen request stored nothing: its remember-me was not stored.)
        session.remember_cookie = ("set", value, stored["expires_at"])  # type: ignore[index]
    elif wants_remember and value is None:
        # A duration of zero or less: Flask-Login would set a cookie that
        # expires at once, which drops the device's remember-me; so here.
        session.remember_cookie = "delete"


def _on_logged_out(app: Flask, **extra: t.Any) -> None:
    session = _current_session()
    if session is None:
        return
    if session.user_id is None and remember.cookie_name(app) in request.cookies:
        # No login to end here, but the browser asked to be signed out: its
        # remember-me cookie goes, as Flask-Login deletes its own, whether or
        # not this app can verify it (one signed with a key it does not know
        # yet, in a rolling SECRET_KEY rotation, would sign it in elsewhere).
        session.remember_cookie = "delete"
    if session.unverified_cookie:
        # Likewise a session cookie this app cannot verify. The session it
        # names is not ended: nothing that cannot be verified costs a query.
        session.logged_out = True
        return
    moving = session.moving_found
    if moving is not None and isinstance(moving.get("user_id"), str):
        # Sent while another request of the browser gives its session a new
        # id (logout_others, a restore, signing in again): the logout still
        # reaches that login, whose move then ends the new id too. (Even
        # where the view, in this request, saw nobody signed in.)
        state = get_state(app)
        try:
            ended = state.store.end(
                moving["_id"],
                moving["user_id"],
                state.now(),
                LOGGED_OUT,
                login_id=policy.login_of(moving),
            )
        except SessionStoreUnavailable as e:
            _unavailable(session, e)
            raise
        if ended is None:
            # Revoked, or replaced by another user's login in another tab,
            # meanwhile: that login's cookies stand (as in end_login).
            session.remember_cookie = None
        return
    _on_login_ended(app, **extra)


def _on_login_ended(app: Flask, **extra: t.Any) -> None:
    session = _current_session()
    if session is None or session.user_id is None or "_user_id" in session:
        # Nothing was bound, or "basic" session protection kept the login
        # (only marked not fresh).
        return
    if remember.cookie_name(app) in request.cookies:
        session.remember_cookie = "delete"
    try:
        end_login(get_state(app), session)
    except SessionStoreUnavailable as e:
        _unavailable(session, e)
        raise


def _unavailable(session: ServerSession, error: SessionStoreUnavailable) -> None:
    """The database failed in a library call during the request: the request
    becomes a 503 that leaves the stored session and every cookie as they were,
    without waiting on the database again to save the session."""
    session.unavailable = error
