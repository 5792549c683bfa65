"""The session class and the Flask session interface.

Flask calls :meth:`ServerSessionInterface.open_session` when a request starts and
:meth:`~ServerSessionInterface.save_session` when its response is ready. Loading
is one query by ``_id``. Writing to the database happens just before
``save_session``, in an ``after_request`` function that the extension registers
to run last (see :mod:`single_session.extension`): Flask turns an exception raised
inside ``open_session`` or ``save_session`` into a 500, whereas an
``after_request`` function may return another response, which is how a database
failure becomes a real 503. ``save_session`` itself only sets or deletes the
cookie, in the order Flask's own cookie session uses.
"""

from __future__ import annotations

import logging
import secrets
import typing as t
import weakref
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask.globals import request_ctx
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import session_json_serializer
from flask.sessions import SessionInterface
from flask.sessions import SessionMixin
from werkzeug.datastructures import CallbackDict

from . import serialization
from .config import LONGEST_DURATION
from .exceptions import SessionDataError
from .exceptions import SessionStoreUnavailable
from .flash_cookie import KEYS as FLASH_KEYS
from .flash_cookie import PREFIX as FLASH_PREFIX
from .store import DuplicateKeyError
from .store import MOVE_LEASE
from .store import RequestBudget
from .tokens import hash_id
from .tokens import IdSigner
from .tokens import new_id
from .tokens import same_hash

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

    from .extension import _State

logger = logging.getLogger("single_session")


@dataclass(frozen=True)
class Revocation:
    """Why and when the session this request's cookie named was revoked."""

    #: ``"signed_in_elsewhere"``, ``"logout_everywhere"``, ``"logout_others"``,
    #: ``"revoked"``, ``"remember_token_reused"`` or ``"logged_out"``.
    reason: str
    #: When it was revoked (aware, UTC).
    at: datetime
    #: The user the session belonged to.
    user_id: str | None
    #: The revoked session's handle (as in :meth:`SingleSession.sessions_of`).
    handle: str | None


def _on_update(session: ServerSession) -> None:
    session.modified = True
    session.accessed = True


class ServerSession(CallbackDict, SessionMixin):  # type: ignore[type-arg]
    """A session whose contents live in MongoDB. It behaves as Flask's
    :class:`~flask.sessions.SecureCookieSession` does (``modified``,
    ``accessed``, ``permanent``) and adds what the server knows about it."""

    #: Set when the session is read or written; adds ``Vary: Cookie``.
    accessed = False
    _modified = False
    #: Counts changes (and settings of ``modified``), so that a write happens
    #: again in the same request only if the session changed after the first.
    changes = 0

    @property
    def modified(self) -> bool:
        """Set when the session's contents change, or by the app after an
        in-place change (as with Flask's cookie session)."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value
        if value:
            self.changes += 1

    # What the server knows about the session. The defaults live on the
    # class (a session is made on every request that has a cookie); __init__
    # sets only what each session needs its own copy of.

    #: The session id (the secret in the cookie), or ``None`` while nothing
    #: is stored for this session.
    sid: str | None = None
    #: The stored document, as loaded or last written.
    document: dict[str, t.Any] | None = None
    #: The stored form of each key (to send only what changed).
    stored: dict[str, str]
    #: The texts already made of this session's values, key by key, so that a
    #: write serialises only what may have changed.
    loaded: serialization.Entries | None = None
    #: Set when the request's cookie named a session that was revoked.
    revocation: Revocation | None = None
    #: The hash of the remember-me series of that revoked session, if it had one.
    revoked_remember: str | None = None
    #: Set when the database failed while this session was loaded or saved.
    unavailable: SessionStoreUnavailable | None = None
    #: The request came with a session cookie this app verified.
    had_cookie = False
    #: The request came with one it cannot verify: left as it is, unless the
    #: app clears the session or logs out (as Flask's cookie session then
    #: deletes it).
    unverified_cookie = False
    #: ``logout_user()`` was called in this request.
    logged_out = False
    #: The session id the request's cookie carried, and that cookie's value.
    cookie: tuple[str, str] | None = None
    #: The stored session was permanent when the request began.
    was_permanent = False
    #: The id changed in this request, so the cookie must be set.
    sid_changed = False
    #: What to do with the remember-me cookie: ``None``, ``"delete"`` or
    #: ``("set", value, seconds)``.
    remember_cookie: t.Any = None
    #: The request carries a remember-me cookie that may restore a login.
    remember_pending = False
    #: When the request with that cookie came in (the restore happens later,
    #: when the request first asks for the user).
    remember_sent_at: datetime | None = None
    #: The time this request's database calls have taken so far.
    budget: RequestBudget
    #: A login is being bound by the extension itself (not by the app).
    binding = False
    written = False
    written_changes = 0
    #: Written in the middle of the request (a login): the end of the request
    #: compares it whole, as Flask saves a modified session whole.
    written_early = False
    #: The response's cookies are set: too late to restore a login.
    saved = False
    #: Another request of this browser is giving the session a new id: this
    #: one goes on anonymous, stores nothing and leaves the cookie alone.
    frozen = False
    #: The moving document found, when a login of this request was frozen.
    frozen_by: dict[str, t.Any] | None = None
    #: The moving document this request's cookie named, when it was frozen
    #: on load or its remember-me was being restored by a parallel request
    #: (a logout in it still reaches that login).
    moving_found: dict[str, t.Any] | None = None
    #: The stored session was revoked, logged out or expired while this
    #: request ran: the request stores nothing more and leaves the cookies as
    #: they are (expiry included), or sets the new id it gave the session, so
    #: that the device's next request is told why.
    gone_meanwhile = False
    #: The request context that opened the session (a weak reference): copies
    #: of it, handed to threads, share the session but do not own it.
    opened_in: weakref.ref[t.Any] | None = None
    #: The error Flask is re-raising (in debug or testing): if it is the one
    #: that ends the request, no response goes out, whatever cookies were set.
    no_response: BaseException | None = None
    #: The cookie value of a session that holds only flashed messages, kept
    #: in its cookie rather than stored (see :mod:`single_session.flash_cookie`).
    flash_cookie: str | None = None
    #: The request came with such a cookie: what it held.
    from_flash_cookie: dict[str, t.Any] | None = None
    #: (tombstone ``_id``, claim) while this request has the telling of a
    #: revocation: released if the request fails, so that the next one tells.
    told_claim: tuple[str, str] | None = None
    #: The cookie named a revoked session that a parallel request of the
    #: browser was just told about: this one leaves the cookie alone.
    leave_cookie = False
    #: This request revoked its own session (logout_everywhere, revoke):
    #: there is nobody to tell, and the rest of its data carries on.
    revoked_here = False
    #: The app called ``session.clear()`` in this request (before a login,
    #: say): nothing of the old session is carried over to a new one.
    cleared = False

    def __init__(self, initial: t.Mapping[str, t.Any] | None = None) -> None:
        super().__init__(initial, _on_update)
        self.stored = {}
        self.budget = RequestBudget()

    def __getitem__(self, key: str) -> t.Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        self.accessed = True
        return super().setdefault(key, default)

    def clear(self) -> None:
        self.cleared = True
        super().clear()

    def mark_written(self) -> None:
        self.written = True
        self.written_changes = self.changes

    @property
    def stored_anew(self) -> bool:
        """Stored under a new id in this request (a login, a restore): its
        cookie then points at what is in the database."""
        return self.sid_changed and self.document is not None

    @property
    def key(self) -> str | None:
        """The stored document's ``_id`` (the hash of :attr:`sid`)."""
        return None if self.document is None else t.cast(str, self.document["_id"])

    @property
    def user_id(self) -> str | None:
        """The user the stored session is bound to."""
        return None if self.document is None else self.document.get("user_id")

    def adopt(
        self, sid: str | None, document: dict[str, t.Any] | None, stored: dict[str, str]
    ) -> None:
        """Point this session at another stored document (or none)."""
        self.sid_changed = self.sid_changed or sid != self.sid
        self.sid = sid
        self.document = document
        self.stored = stored


_REQUIRED_DATES = ("created_at", "seen_at", "expires_at", "purge_at")


def aware(value: t.Any) -> datetime:
    """A stored date as an aware UTC datetime; ``ValueError`` if it is not one."""
    if not isinstance(value, datetime):
        raise ValueError("not a date")
    if value.tzinfo is None:
        # BSON dates are UTC; a naive one can only come from a driver without
        # tz_aware. Read it as UTC rather than fail.
        return value.replace(tzinfo=timezone.utc)
    return value


def is_moving(document: dict[str, t.Any], now: datetime) -> bool:
    """Whether a session is getting a new id in another request right now."""
    moving = document.get("moving")
    # (See store._not_moving: a mark far in the future is no move either.)
    return (
        isinstance(moving, datetime)
        and now - MOVE_LEASE < aware(moving) <= now + MOVE_LEASE
    )


#: The longest remember-me the library stores, the longest duration setting
#: (a longer duration is cut to it; browsers keep a cookie 400 days at most
#: anyway). A stored lifetime longer than this is not one the library wrote:
#: the document is malformed.
MAX_REMEMBER_LIFETIME = LONGEST_DURATION
_MAX_REMEMBER_SECONDS = MAX_REMEMBER_LIFETIME.total_seconds()


def remember_problem(remember: t.Any) -> str | None:
    """What makes a stored remember-me unusable, or ``None`` if it is sound."""
    if not isinstance(remember, dict):
        return "remember is not a dict"
    if not isinstance(remember.get("token"), str) or not isinstance(
        remember.get("series"), str
    ):
        return "remember has no token or series"
    if not isinstance(remember.get("expires_at"), datetime):
        return "remember.expires_at is not a date"
    seconds = remember.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 < seconds <= _MAX_REMEMBER_SECONDS  # (False for NaN)
    ):
        return "remember.seconds is not a lifetime"
    return None


def session_from_document(document: dict[str, t.Any]) -> ServerSession:
    """A session from a live stored document. Raises ``ValueError`` (or
    ``TypeError``/``KeyError``) if the document is malformed."""
    if "revoked" in document:
        # A tombstone whose "revoked" is not what the library writes: it must
        # not pass for a live session.
        raise ValueError("revoked is malformed")
    stored = document["data"]
    if not isinstance(stored, dict):
        raise ValueError("data is not a dict")
    for name in _REQUIRED_DATES:
        document[name] = aware(document[name])
    if not isinstance(document.get("handle"), str):
        raise ValueError("handle is not a string")
    data, entries = serialization.load_data(stored)
    user_id = document.get("user_id")
    if user_id is not None:
        document["login_at"] = aware(document["login_at"])
        # Flask-Login keeps what get_id() returned (an int, say); the
        # document keeps it as a string.
        login = data.get("_user_id")
        if not isinstance(user_id, str) or login is None or str(login) != user_id:
            raise ValueError("bound user does not match the session's user")
    remember = document.get("remember")
    if remember is not None:
        problem = remember_problem(remember)
        if problem is not None:
            raise ValueError(problem)
        remember["expires_at"] = aware(remember["expires_at"])
    session = ServerSession(data)
    session.document = document
    session.stored = dict(stored)
    session.loaded = entries
    session.was_permanent = bool(data.get("_permanent"))
    return session


#: A request that comes back with the cookie of a revoked session told this
#: recently is taken for a parallel request of the browser that was told (two
#: tabs): it leaves the cookie to that one's response.
TOLD_GRACE = timedelta(seconds=30)


def tell_once(
    state: _State, session: ServerSession, tombstone: dict[str, t.Any], now: datetime
) -> None:
    """Give this request the telling of why ``tombstone``'s session was revoked
    (``session.revocation``) if no request had it yet: a device is told once,
    and a replay of its old cookie (a bot, a thief) is just anonymous."""
    revocation = revocation_from_document(tombstone)
    if revocation is None:
        return
    told_at = tombstone["revoked"].get("told_at")
    if tombstone["revoked"].get("told") is not None:
        if isinstance(told_at, datetime) and now - aware(told_at) < TOLD_GRACE:
            session.leave_cookie = True
        return
    # Kept on the session before the call: a request that fails after the
    # claim (even one whose reply was lost) releases it.
    session.told_claim = (tombstone["_id"], secrets.token_hex(8))
    if state.store.claim_tombstone(*session.told_claim, now):
        session.revocation = revocation
    else:
        # A parallel request claimed it between our read and our claim.
        session.told_claim = None
        session.leave_cookie = True


def revocation_from_document(document: dict[str, t.Any]) -> Revocation | None:
    revoked = document.get("revoked")
    if not isinstance(revoked, dict):
        return None
    try:
        at = aware(revoked.get("at"))
    except ValueError:
        at = datetime.now(timezone.utc)
    user_id = revoked.get("user_id")
    handle = document.get("handle")
    return Revocation(
        reason=str(revoked.get("reason", "revoked")),
        at=at,
        user_id=user_id if isinstance(user_id, str) else None,
        handle=handle if isinstance(handle, str) else None,
    )


class ServerSessionInterface(SessionInterface):
    """Flask's session interface, backed by the app's :class:`SingleSession`."""

    session_class = ServerSession

    @property
    def serializer(self) -> TaggedJSONSerializer:
        """Flask's session serializer, the one of Flask's cookie session
        interface: a tag registered on it (``serializer.register``, as Flask
        documents) stores and loads the app's own types here too."""
        return session_json_serializer

    @serializer.setter
    def serializer(self, value: t.Any) -> None:
        # (Every stored value goes through the shared one: a replacement would
        # be ignored, silently.)
        raise TypeError(
            "single_session stores sessions with Flask's session serializer:"
            " register the app's own tags on it"
            " (app.session_interface.serializer.register(...)) rather than"
            " replacing it."
        )

    def __init__(self, state: _State) -> None:
        self.state = state

    def open_session(self, app: Flask, request: Request) -> ServerSession | None:
        state = self.state
        if not state.config["SECRET_KEY"]:
            # Flask's null session explains what is missing.
            return None
        session = self._load(app, state, request)
        try:
            session.opened_in = weakref.ref(request_ctx._get_current_object())  # type: ignore[attr-defined]
        except RuntimeError:  # opened by hand, outside a request context
            pass
        # Flask-Login would honour a remember cookie on its own (the same cookie
        # for every device of a user) whenever the session gives it no user: no
        # login, or one its user_loader no longer knows. Block that path; the
        # extension restores logins from its own per-device token when the
        # request first asks for the user.
        remember_name = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
        cookies = request.cookies
        # (Looked up with "in" first: werkzeug's get() raises and catches an
        # exception for a missing key, the common case.)
        cookie = cookies[remember_name] if remember_name in cookies else None
        if cookie is None:
            pass
        elif "_user_id" not in session:
            dict.__setitem__(session, "_remember", "clear")
            session.remember_pending = (
                session.unavailable is None and not session.frozen
            )
            if session.remember_pending:
                session.remember_sent_at = state.now()
            if session.revoked_remember is not None and _same_series(
                state, cookie, session.revoked_remember
            ):
                # The remember-me of the very device this request is told about
                # (it went with its session): told once, now; the cookie goes.
                session.remember_pending = False
                session.remember_cookie = "delete"
        elif state.remember_ids(cookie) is None:
            # Beside a login, this library's own cookie stays readable (for
            # login_remembered()); any other is blocked as well.
            dict.__setitem__(session, "_remember", "clear")
        return session

    def _load(self, app: Flask, state: _State, request: Request) -> ServerSession:
        cookies, name = request.cookies, self.get_cookie_name(app)
        if name not in cookies:
            return self.session_class()
        value = cookies[name]
        if value.startswith(FLASH_PREFIX):
            # Flashed messages alone, kept in the cookie: no query.
            max_age = int(state.idle_lifetime().total_seconds())
            data = state.flash_cookie.loads(app, value, max_age)
            if data is None:
                return _unverified()
            session = self.session_class(data)
            session.had_cookie = True
            # (A copy: flash() appends to the session's list in place.)
            session.from_flash_cookie = {
                key: list(value) if isinstance(value, list) else value
                for key, value in data.items()
            }
            session.was_permanent = bool(data.get("_permanent"))
            return session
        signer = state.session_signer.get(app)
        assert signer is not None  # there is a SECRET_KEY
        ids = signer.unsign(value)
        if ids is None:
            # A bad signature costs no database query.
            return _unverified()
        sid = ids[0]
        key = hash_id(sid)
        # The request's first database calls, made before its session exists:
        # they count against the request's budget all the same.
        budget = RequestBudget()
        told: ServerSession | None = None
        try:
            now = state.now()
            document = state.store.load(key, now, budget)
            if document is not None and is_moving(document, now):
                # Another request of this browser is giving it a new id (a
                # restore, logout_others, a login): this one goes on anonymous,
                # and leaves the cookie to that request's response.
                session = self.session_class()
                session.frozen = True
                session.moving_found = document
                return session
            if document is None or past_lifetime(state, document, now):
                # Absent, expired or never ours: never adopt the id. An expired
                # document that the TTL monitor has not removed yet goes now.
                state.store.discard(key, budget)
                return _stale_session(budget)
            if revocation_from_document(document) is not None:
                session = told = _stale_session(budget)
                tell_once(state, session, document, now)
                remember = document.get("remember")
                if isinstance(remember, dict) and isinstance(
                    remember.get("series"), str
                ):
                    session.revoked_remember = remember["series"]
                return session
            try:
                session = session_from_document(document)
            except (ValueError, TypeError, KeyError, RecursionError) as e:
                # (RecursionError: stored JSON nested deeper than the parser
                # goes, which the library never writes.)
                logger.warning(
                    "single_session removed a malformed session document: %s", e
                )
                state.store.delete(key, budget=budget)
                return _stale_session(budget)
        except SessionStoreUnavailable as e:
            # (A session that was being told keeps its claim, to release it.)
            session = told if told is not None else self.session_class()
            session.unavailable = e
            session.had_cookie = True
            return session
        session.budget = budget
        session.sid = sid
        session.had_cookie = True
        session.cookie = (sid, value)
        return session

    def save_session(
        self, app: Flask, session: SessionMixin, response: Response
    ) -> None:
        assert isinstance(session, ServerSession)
        session.saved = True
        # Read first: the cookie logic reads session.permanent, which marks the
        # session accessed.
        accessed = session.accessed
        if not self._set_or_delete_cookie(app, session, response) and accessed:
            _vary_on_cookie(response)

    def _set_or_delete_cookie(
        self, app: Flask, session: ServerSession, response: Response
    ) -> bool:
        """Set or delete the session cookie if it must change; returns whether
        it did (the response then varies by cookie)."""
        if session.frozen or (session.gone_meanwhile and not session.sid_changed):
            return False
        state = self.state
        if session.unavailable is None:
            # The database work is done by now (see the module docstring); a
            # session changed after it, by an after_request function registered
            # even later, is written here.
            state.persist(session)
        elif not session.stored_anew:
            return False  # the database failed: leave the cookie as it is
        if session.sid is None and session.flash_cookie is not None:
            if session.leave_cookie:
                # A parallel tab's response carries the message of the
                # revocation: this one's own messages must not replace it.
                return False
            if session.from_flash_cookie is not None and not (
                _flash_payload(session) != session.from_flash_cookie
                or (session.permanent and app.config["SESSION_REFRESH_EACH_REQUEST"])
            ):
                # The cookie the request came with stands (Flask-Login's own
                # flags change the session on most requests; they are not in
                # it). Sending it again could bring back messages that
                # another tab has shown meanwhile.
                return False
            signer, value = None, session.flash_cookie
        elif session.sid is None:
            # (Cleared by the app, not merely modified: Flask-Login's own
            # after_request pops the marker open_session left for it.)
            cleared = session.unverified_cookie and (
                session.cleared or session.logged_out
            )
            if not (session.had_cookie or cleared) or session.leave_cookie:
                return False  # no cookie, or one left to a parallel request
            signer = value = None
        else:
            signer = state.session_signer.get(app)
            value = self._reusable_value(session, signer)
            if not session.sid_changed and (
                not self.should_set_cookie(app, session)
                or (value is not None and not self._was_or_is_permanent(session))
            ):
                # The common case, a session whose cookie stands: nothing to
                # send. Flask's cookie session sets its cookie again when the
                # session changes because the contents are in it; here they are
                # not, so a browser-session cookie with the same value stands.
                return False
        name = self.get_cookie_name(app)
        attributes: dict[str, t.Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "partitioned": self.get_cookie_partitioned(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }
        if value is None and session.sid is None:
            response.delete_cookie(name, **attributes)
        else:
            if value is None:
                assert signer is not None and session.sid is not None
                value = signer.sign(session.sid)
            response.set_cookie(
                name,
                value,
                expires=self.get_expiration_time(app, session),
                **attributes,
            )
        # (Once: each change of response.vary parses and rewrites the header.)
        _vary_on_cookie(response)
        return True

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        # Flask's, with the idle lifetime cut as the stored expiry is: Flask
        # takes any PERMANENT_SESSION_LIFETIME, a cookie's expiry is a date.
        if session.permanent:
            return datetime.now(timezone.utc) + self.state.idle_lifetime()
        return None

    @staticmethod
    def _reusable_value(session: ServerSession, signer: IdSigner | None) -> str | None:
        """The value of the request's cookie if a new cookie would carry the same:
        the same id, signed with the current key (signing the same id with the
        same key gives the same value), so only the expiry can be new."""
        cookie = session.cookie
        if (
            cookie is not None
            and cookie[0] == session.sid
            and signer is not None
            and not signer.rotating
        ):
            return cookie[1]
        return None

    @staticmethod
    def _was_or_is_permanent(session: ServerSession) -> bool:
        """A permanent cookie's expiry moves; a browser-session cookie that was
        permanent must lose its expiry."""
        return session.was_permanent or bool(dict.get(session, "_permanent"))


def _flash_payload(session: ServerSession) -> dict[str, t.Any]:
    return {key: dict.__getitem__(session, key) for key in FLASH_KEYS if key in session}


def _same_series(state: _State, value: str, series_hash: str) -> bool:
    """Whether a remember-me cookie holds the series ``series_hash`` names."""
    ids = state.remember_ids(value)
    return ids is not None and same_hash(hash_id(ids[0]), series_hash)


def past_lifetime(state: _State, document: dict[str, t.Any], now: datetime) -> bool:
    """Whether a live session is past its idle or absolute lifetime as they are
    set now. Its stored expiry (in the queries) follows the settings of its
    last write; a lifetime lowered since (or an absolute one turned on) ends
    it at once, as it would end Flask's cookie session."""
    if "revoked" in document:
        return False
    for field, cutoff in lifetime_cutoffs(state, now).items():
        value = document.get(field)
        if isinstance(value, datetime) and aware(value) <= cutoff:
            return True
    return False


def lifetime_cutoffs(state: _State, now: datetime) -> dict[str, datetime]:
    """For the lifetimes as set now, the time a live session's ``seen_at``
    (and, with an absolute lifetime, ``created_at``) must be after: the query
    form of :func:`past_lifetime` too, for writes, so that a request that
    loaded the session before it ended cannot bring it back."""
    cutoffs = {}
    for field, lifetime in (
        ("seen_at", state.idle_lifetime()),
        ("created_at", state.absolute_lifetime()),
    ):
        if lifetime is not None:
            try:
                cutoffs[field] = now - lifetime
            except OverflowError:
                pass  # (longer than a datetime reaches back: no cutoff)
    return cutoffs


def holds_place(state: _State, document: dict[str, t.Any], now: datetime) -> bool:
    """Whether a session of a user counts under the policy and is listed: it
    is within its lifetimes as set now, or its device is remembered (and may
    come back at any time)."""
    return not past_lifetime(state, document, now) or is_remembered(document, now)


def is_remembered(document: dict[str, t.Any], now: datetime) -> bool:
    """Whether the session's device has a remember-me that is still valid."""
    remember = document.get("remember")
    expires_at = remember.get("expires_at") if isinstance(remember, dict) else None
    return isinstance(expires_at, datetime) and aware(expires_at) > now


def absolute_end(state: _State, document: dict[str, t.Any]) -> datetime | None:
    """When the session ends however active it is: the end it was created
    with, or the one the absolute lifetime as set now gives it (lowered, or
    turned on, since), whichever comes first."""
    ends = []
    stored = document.get("absolute_expires_at")
    if isinstance(stored, datetime):
        ends.append(aware(stored))
    limit = state.absolute_lifetime()
    end = None if limit is None else later(document.get("created_at"), limit)
    if end is not None:
        ends.append(end)
    return min(ends, default=None)


def later(value: t.Any, delta: timedelta) -> datetime | None:
    """``value + delta`` for a stored date, or ``None`` if it is none (or so
    far off that the sum is past what a datetime holds)."""
    if not isinstance(value, datetime):
        return None
    try:
        return aware(value) + delta
    except OverflowError:
        return None  # (a date the library never wrote)


def _vary_on_cookie(response: Response) -> None:
    """``response.vary.add("Cookie")``, without parsing a header the response
    does not have (the common case; werkzeug's lookup raises and catches an
    exception for it)."""
    if "Vary" in response.headers:
        response.vary.add("Cookie")
    else:
        response.headers["Vary"] = "Cookie"


def _unverified() -> ServerSession:
    """A fresh anonymous session for a request whose cookie this app cannot
    verify (signed with a key it does not know, expired, tampered with). As
    with Flask's cookie session, the cookie is left as it is unless the
    session gets contents (a new cookie), or the view clears it or logs out
    (deleted): during a ``SECRET_KEY`` rotation a worker that does not know
    the new key yet, or another app under the same cookie name, must not
    sign the browser out by being visited."""
    session = ServerSession()
    session.unverified_cookie = True
    return session


def _stale_session(budget: RequestBudget | None = None) -> ServerSession:
    """A fresh anonymous session for a request whose cookie named no live session:
    the cookie is replaced or deleted when the response goes out."""
    session = ServerSession()
    session.had_cookie = True
    if budget is not None:
        session.budget = budget
    return session


#: Why the session of a login ended while another request moved it.
LOGGED_OUT = "logged_out"

#: The keys Flask-Login keeps in the session for a login.
LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")
#: Keys that say how to keep a session, not what is in it.
_FLAGS = {*LOGIN_KEYS, "_permanent"}
#: A session with these keys alone (no login) may live in its cookie.
_FLASH_ONLY = (_FLAGS - {"_user_id"}) | FLASH_KEYS


def new_document(
    state: _State, stored: dict[str, str], now: datetime
) -> dict[str, t.Any]:
    """A new session document (its ``_id`` is set when it is inserted)."""
    idle = state.idle_lifetime()
    absolute = state.absolute_lifetime()
    expires_at = now + idle
    document: dict[str, t.Any] = {
        "handle": new_handle(),
        "data": stored,
        "created_at": now,
        "seen_at": now,
    }
    if absolute is not None:
        document["absolute_expires_at"] = now + absolute
        expires_at = min(expires_at, now + absolute)
    document["expires_at"] = expires_at
    document["purge_at"] = expires_at
    device = state.device()
    if device is not None:
        document["device"] = device
    return document


def new_handle() -> str:
    """The opaque name of a session shown to users and operators; not its id
    (128 random bits, hex)."""
    return secrets.token_hex(16)


def refresh_expiry(
    document: dict[str, t.Any], state: _State, now: datetime
) -> dict[str, t.Any]:
    """The fields a touch writes: last seen, and the expiry that slides with it."""
    expires_at = now + state.idle_lifetime()
    end = absolute_end(state, document)
    if end is not None:
        expires_at = min(expires_at, end)
    fields: dict[str, t.Any] = {"seen_at": now, "expires_at": expires_at}
    purge_at = expires_at
    remember = document.get("remember")
    if isinstance(remember, dict) and isinstance(remember.get("expires_at"), datetime):
        remember_expires_at = aware(remember["expires_at"])
        seconds = remember.get("seconds")
        if state.refresh_remember() and isinstance(seconds, (int, float)):
            # REMEMBER_COOKIE_REFRESH_EACH_REQUEST slides the cookie's expiry;
            # the server's follows it (at each touch).
            remember_expires_at = now + timedelta(seconds=seconds)
            fields["remember.expires_at"] = remember_expires_at
        purge_at = max(purge_at, remember_expires_at)
    fields["purge_at"] = purge_at
    return fields


def insert_new(state: _State, document: dict[str, t.Any], attempts: int = 3) -> str:
    """Insert ``document`` under a new session id and return the id. A taken id
    (astronomically unlikely with 256 random bits, but cheap to handle) gets a new
    one, a bounded number of times."""
    for attempt in range(attempts):
        sid = new_id()
        document["_id"] = hash_id(sid)
        try:
            state.store.insert(document)
        except DuplicateKeyError:
            if attempt == attempts - 1:
                raise
            continue
        except SessionStoreUnavailable as e:
            if not e.maybe_stored:
                # Not stored: nothing for the caller to take back (and no
                # second wait on a dead database to try).
                del document["_id"]
            raise
        return sid
    raise AssertionError("unreachable")


def write_session(state: _State, session: ServerSession) -> None:
    """Bring the stored session in line with ``session``: insert it, update what
    changed, or delete it. Called once per request (again only if the session
    changed after that)."""
    if session.unavailable is not None or session.frozen or session.gone_meanwhile:
        return
    # Flask's cookie session serialises a permanent session whole on every
    # request with SESSION_REFRESH_EACH_REQUEST, which keeps a value changed in
    # place without session.modified: this looks for such a change then too.
    refreshed = bool(dict.get(session, "_permanent")) and bool(
        state.config["SESSION_REFRESH_EACH_REQUEST"]
    )
    in_place = (session.written_early or refreshed) and (
        serialization.may_change_in_place(dict.values(session))
    )
    if session.written and session.changes == session.written_changes:
        if not in_place:
            return
    session.written_early = False
    store = state.store
    document = session.document
    user_id = dict.get(session, "_user_id")

    if (
        document is not None
        and document.get("user_id") is not None
        and (user_id is None or str(user_id) != document["user_id"])
    ):
        # The login ended (logout_user, "strong" session protection, or the app
        # removed the key): the bound session goes; what is left of the data
        # continues as a new anonymous session under a new id.
        end_login(state, session)
        if session.gone_meanwhile:
            session.mark_written()
            return
        document = None
    if user_id is not None and (document is None or document.get("user_id") is None):
        # A login that did not come through login_user(): Flask-Login's test
        # client, session_transaction(), or app code setting the key (an
        # admin's "switch user" too, whose previous login just ended). It goes
        # through the policy all the same (or is dropped if refused).
        state.bind_outside_login(session, str(user_id))
        document = session.document

    if dict.get(session, "_flashes") == []:
        dict.pop(session, "_flashes")  # (messages filtered by hand: none left)
    if document is None and "_user_id" not in session and set(session) <= _FLAGS:
        # Only flags, no content: not worth a new session. (A bot with any
        # remember-me cookie gets "_remember" from open_session, so Flask-Login's
        # session protection adds "_fresh": False; and many apps set
        # session.permanent in a before_request function, for every visitor.)
        # A stored one keeps them: deleting it could race with another
        # request of the browser (a login moving it, a write of another key).
        dict.clear(session)

    session.flash_cookie = None
    if not session:
        if document is not None:
            if not store.delete(document["_id"]):
                # Gone meanwhile (moved to a new id by a login in another tab,
                # say): that request's cookie stands, this one leaves it.
                session.document = None
                session.stored = {}
                session.gone_meanwhile = True
                session.mark_written()
                return
            session.adopt(None, None, {})
        session.mark_written()
        return

    if document is None and set(session) <= _FLASH_ONLY:
        # Flashed messages, Flask-Login's "next", flags: a crawler sent to the
        # login view, a device told why it was signed out. Kept in the cookie,
        # not stored.
        session.flash_cookie = state.flash_cookie.dumps(state.app, session)
        if session.flash_cookie is not None:
            session.mark_written()
            return

    now = state.now()
    if document is None:
        stored, session.loaded, _ = serialization.dump_data(session, state.max_size())
        document = new_document(state, stored, now)
        sid = insert_new(state, document)
        session.adopt(sid, document, stored)
        session.mark_written()
        return

    set_: dict[str, t.Any] = {}
    unset: dict[str, t.Any] = {}
    stored = session.stored
    if session.modified or in_place:
        dumped = serialization.dump_data(session, None, session.loaded)
        stored, session.loaded = dumped.stored, dumped.entries
        for field, text in stored.items() - session.stored.items():
            old = session.stored.get(field)
            if old is not None and serialization.same_value(old, text):
                stored[field] = old  # (the same value: nothing to send)
            else:
                set_["data." + field] = text
        for field in session.stored.keys() - stored.keys():
            unset["data." + field] = ""
        if set_ or unset:
            # Only a change is held to the limit: a session already over it
            # (the limit lowered since, or two tabs' writes merged) is read.
            serialization.check_size(dumped, state.max_size())
        if not serialization.update_fits(set_, unset):
            # (Another request's write to other keys meanwhile is lost then.)
            set_, unset = {"data": stored}, {}
    touch_due = now - document["seen_at"] >= state.touch_interval()
    if not (set_ or unset or touch_due):
        session.mark_written()
        return
    expiry = refresh_expiry(document, state, now)
    set_.update(expiry)
    if store.update_live(
        document["_id"], now, set_, unset, lifetime_cutoffs(state, now)
    ):
        remember_expires_at = expiry.pop("remember.expires_at", None)
        if remember_expires_at is not None:
            document["remember"]["expires_at"] = remember_expires_at
        document.update(expiry)
        document["data"] = stored
        session.stored = stored
    else:
        # Revoked, logged out or expired while this request ran: it stays gone,
        # and so does what this request made of it (nothing may store it again,
        # least of all its login). The cookies are left as they are: the
        # device's next request finds out which, and a revoked device is told
        # why (a remember-me of an expired session may still restore it). A
        # session stored under a new id in this request (a login) hands the
        # device that id all the same, as a permanent cookie if it was one.
        permanent = dict.get(session, "_permanent")
        dict.clear(session)
        if permanent:
            dict.__setitem__(session, "_permanent", True)
        session.document = None
        session.stored = {}
        session.gone_meanwhile = True
    session.mark_written()


def end_login(state: _State, session: ServerSession) -> None:
    """Delete the session bound to a login that ended; the data left in
    ``session`` will be stored again, unbound, under a new id."""
    document = session.document
    if document is None:
        return
    login_id = document.get("login_id")
    ended = state.store.end(
        document["_id"],
        document["user_id"],
        state.now(),
        LOGGED_OUT,
        # (A session stored before login ids lent its _id to its successors.)
        login_id=login_id if isinstance(login_id, str) else document["_id"],
        tombstone_too=session.revoked_here,
    )
    if ended is None:
        # Revoked meanwhile (its device is to be told why), or replaced by
        # another user's login in another tab (whose cookies must stand): this
        # request stores nothing and leaves the cookies alone.
        session.document = None
        session.stored = {}
        session.gone_meanwhile = True
        session.remember_cookie = None
        return
    if document.get("remember"):
        session.remember_cookie = "delete"
    if not session.cleared:
        _carry_over_to_rest(session, session.stored, ended.get("data"))
    session.adopt(None, None, {})


_MISSING = object()


def _carry_over_to_rest(
    session: ServerSession, seen: dict[str, str], theirs: t.Any
) -> None:
    """Another request of the browser (a second tab) may have written to the
    session while this one logged out: its keys go to the rest that carries
    on, as its write would have reached the session had it come first. A key
    this request changed itself keeps this request's value (the later write);
    Flask-Login's keys are the login's, which ended. (As a login carries them
    over, see ``policy._carry_over``.)"""
    if not isinstance(theirs, dict):
        return
    for field in theirs.keys() | seen.keys():
        text = theirs.get(field)
        if text == seen.get(field):
            continue
        key = serialization.unescape_key(field)
        if key in LOGIN_KEYS:
            continue
        mine = dict.get(session, key, _MISSING)
        if mine is not _MISSING and field in seen:
            try:
                mine_text = serialization.dump_value(key, mine)
            except SessionDataError:
                continue  # (the request fails on it when it is saved)
            changed = not serialization.same_value(seen[field], mine_text)
        else:
            changed = (mine is _MISSING) == (field in seen)
        if changed:
            continue  # changed, set or removed by this request too: its write wins
        if text is None:
            dict.pop(session, key, None)
            continue
        try:
            (value,) = serialization.load_data({field: text})[0].values()
        except (ValueError, TypeError, RecursionError):
            continue  # (not the library's: left out)
        dict.__setitem__(session, key, value)
