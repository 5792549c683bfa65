"""Remember me, per device and revocable.

Flask-Login's own remember cookie holds the user id and an HMAC of it: the same
value on every device of a user, valid until it expires, so it cannot be revoked
for one device. Here the cookie (same name and settings, ``REMEMBER_COOKIE_*``)
holds a per-device *series* and a *token*, both random and signed; the database
keeps only their hashes, on the device's session document. Each use rotates the
token. A token that was already rotated away (a copied cookie used after the
real device, or the other way round) is treated as theft: that device's session
and remember-me are revoked. A device whose session is revoked loses its
remember-me with it.

A restore works as Flask-Login's: the login is not fresh (``login_fresh()`` is
False), ``user_loaded_from_cookie`` is sent, and the policy applies, with the
device keeping its original login time (a restore does not jump the queue).
"""

from __future__ import annotations

import logging
import secrets
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import g
from flask_login.signals import user_loaded_from_cookie
from flask_login.utils import decode_cookie
from flask_login.utils import encode_cookie

from .exceptions import LoginDenied
from .exceptions import SessionStoreUnavailable
from .policy import bind
from .policy import REMEMBER_TOKEN_REUSED
from .policy import take_back
from .sessions import aware
from .sessions import LOGIN_KEYS
from .sessions import MAX_REMEMBER_LIFETIME
from .sessions import remember_problem
from .sessions import Revocation
from .sessions import revocation_from_document
from .sessions import ServerSession
from .sessions import tell_once
from .tokens import hash_id
from .tokens import new_id
from .tokens import same_hash

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

    from .extension import _State

logger = logging.getLogger("single_session")

#: A request that presents the token rotated away this recently is a parallel
#: request of the same browser (several tabs after a restart), not a thief.
ROTATION_GRACE = timedelta(seconds=30)


_MAX_SECONDS = MAX_REMEMBER_LIFETIME.total_seconds()


def cookie_name(app: Flask) -> str:
    name: str = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    return name


def duration(app: Flask, seconds: float | None) -> timedelta:
    """How long a remember-me lasts: ``login_user(duration=...)``'s, else
    ``REMEMBER_COOKIE_DURATION``; at most :data:`MAX_REMEMBER_LIFETIME`."""
    value: t.Any = seconds
    if value is None:
        value = app.config.get("REMEMBER_COOKIE_DURATION", timedelta(days=365))
    if isinstance(value, (int, float)):
        # (Anything not above zero, NaN and minus infinity included, is none.)
        value = timedelta(seconds=min(value, _MAX_SECONDS) if value > 0 else 0)
    return min(t.cast(timedelta, value), MAX_REMEMBER_LIFETIME)


def new_remember(
    app: Flask,
    state: _State,
    now: datetime,
    seconds: float | None,
    series: str | None = None,
    expires_at: datetime | None = None,
    previous: str | None = None,
) -> tuple[dict[str, t.Any], str]:
    """The stored part of a remember-me (hashes only) and the cookie value."""
    series = series or new_id()
    token = new_id()
    lifetime = duration(app, seconds)
    stored: dict[str, t.Any] = {
        "series": hash_id(series),
        "token": hash_id(token),
        "expires_at": expires_at or now + lifetime,
        "seconds": lifetime.total_seconds(),
    }
    if previous is not None:
        stored["previous"] = previous
        stored["rotated_at"] = now
    signer = state.remember_signer.get(app)
    assert signer is not None
    # Wrapped in Flask-Login's own cookie format (value|HMAC) so that its
    # login_remembered() keeps working; Flask-Login never logs anyone in with
    # it (see open_session), and only the inner, signed value counts here.
    return stored, encode_cookie(signer.sign(series, token))


def renewed(
    app: Flask,
    state: _State,
    remembered: t.Any,
    now: datetime,
    request: Request,
) -> tuple[dict[str, t.Any], str] | None:
    """For a session getting a new id by ``logout_others`` (after a password
    change, say): its remember-me with a new token in the same series, and the
    cookie for it, if this request holds the current token. A copy of the
    cookie made before then restores nothing: used later, it is taken for a
    stolen one (see :func:`restore`), as after a restore's rotation."""
    if not isinstance(remembered, dict):
        return None
    ids = state.remember_ids(request.cookies.get(cookie_name(app), ""))
    if ids is None:
        return None
    series, token = ids
    token_hash = hash_id(token)
    if not (
        same_hash(str(remembered.get("series")), hash_id(series))
        and same_hash(str(remembered.get("token")), token_hash)
    ):
        return None
    rotated_at = remembered.get("rotated_at")
    if isinstance(rotated_at, datetime) and now - aware(rotated_at) < ROTATION_GRACE:
        # Rotated moments ago (a restore): a copy made before holds an older
        # token already, and a parallel request of this browser that still
        # holds that one would be taken for a thief after a second rotation.
        return None
    return new_remember(
        app,
        state,
        now,
        remembered.get("seconds"),
        series=series,
        expires_at=_kept_expiry(state, remembered),
        previous=token_hash,
    )


def _kept_expiry(state: _State, remembered: dict[str, t.Any]) -> datetime | None:
    """The expiry a new token of the remember-me keeps: the one the login set,
    or, with REMEMBER_COOKIE_REFRESH_EACH_REQUEST, none (``new_remember``
    pushes it forward, as Flask-Login does for its cookie on each response)."""
    expires_at = remembered.get("expires_at")
    if state.refresh_remember() or not isinstance(expires_at, datetime):
        return None
    return aware(expires_at)


def _flask_logins_own(value: str) -> bool:
    """Whether a remember cookie is Flask-Login's own user-id cookie, signed
    with this app's key."""
    try:
        return decode_cookie(value) is not None
    except (TypeError, ValueError):  # (not ASCII: its digest cannot be compared)
        return False


def restore(
    app: Flask, state: _State, session: ServerSession, request: Request
) -> None:
    """Log the device in from its remember-me cookie, if it is valid."""
    session.remember_pending = False
    ids = state.remember_ids(request.cookies.get(cookie_name(app), ""))
    if ids is None:
        # Not ours. The "clear" that open_session left in the session makes
        # Flask-Login ignore it. Flask-Login's own user-id cookie (from before
        # the library) is deleted; one this app cannot verify at all (signed
        # with a key it does not know yet, in a rolling SECRET_KEY rotation)
        # is left as it is, as Flask-Login leaves it.
        if _flask_logins_own(request.cookies.get(cookie_name(app), "")):
            session.remember_cookie = "delete"
        return
    series, token = ids
    store = state.store
    now = state.now()
    document = store.find_remembered(hash_id(series), now)
    if document is None or not isinstance(document.get("user_id"), str):
        if document is None:
            # Revoked while the device was away (its browser closed): tell it
            # why, as a device coming back with its session cookie is told.
            tombstone = store.find_revoked_remembered(hash_id(series))
            if tombstone is not None and _may_be_told(tombstone, token):
                tell_once(state, session, tombstone, now)
        session.remember_cookie = "delete"
        return
    remembered = document["remember"]
    problem = remember_problem(remembered)
    if problem is not None:
        logger.warning(
            "single_session removed a malformed session document: %s", problem
        )
        store.delete(document["_id"])
        session.remember_cookie = "delete"
        return
    token_hash = hash_id(token)
    if not same_hash(str(remembered.get("token")), token_hash):
        # (Counted from when this request came in, not from now: its cookie
        # was sent then, and a slow view may ask for the user much later.)
        if _just_replaced(remembered, token_hash, session.remember_sent_at or now):
            return
        logger.warning(
            "single_session: a remember-me token was used after it was rotated;"
            " revoking that device of user %r.",
            document["user_id"],
        )
        store.revoke(
            {"_id": document["_id"], "user_id": document["user_id"]},
            REMEMBER_TOKEN_REUSED,
            now,
        )
        session.remember_cookie = "delete"
        # This copy of the cookie is told now; the one that holds the current
        # token is told when it comes back (which of the two is the thief
        # cannot be known).
        handle = document.get("handle")
        session.revocation = Revocation(
            reason=REMEMBER_TOKEN_REUSED,
            at=now,
            user_id=document["user_id"],
            handle=handle if isinstance(handle, str) else None,
        )
        return

    user_id = document["user_id"]
    login_manager = app.login_manager  # type: ignore[attr-defined]
    user = state.load_user(user_id)
    if user is None:
        # A user the app no longer knows: the remember-me ends, on the device
        # and on the server, where it would otherwise count as a remembered
        # device (under "deny", holding a place) until it expired.
        store.forget(document["_id"], remembered["token"], now)
        session.remember_cookie = "delete"
        return
    taken = store.take_remembered(document["_id"], remembered["token"], now)
    if taken is None:
        # A parallel request of this browser restores it (or did): this one
        # stays anonymous, but a logout in it still ends that login.
        session.moving_found = document
        return

    dict.pop(session, "_remember", None)
    session["_user_id"] = user_id
    session["_fresh"] = False
    # Flask-Login's own restore leaves out the session identifier, so that its
    # session protection then marks every later request ("basic") or undoes the
    # restore at once ("strong"). Set it, as login_user() does.
    session["_id"] = login_manager._session_identifier_generator()
    stored, value = new_remember(
        app,
        state,
        now,
        remembered.get("seconds"),
        series=series,
        expires_at=_kept_expiry(state, remembered),
        previous=token_hash,
    )
    login_at = document.get("login_at")
    try:
        bind(
            state,
            session,
            user,
            user_id,
            login_at=aware(login_at) if isinstance(login_at, datetime) else None,
            remember=stored,
            moving_from=taken,
        )
    except LoginDenied:
        store.finish_move(taken)
        _not_restored(session)
        return
    except BaseException:
        # The database (or the app's own code, such as a limit callable) failed
        # before the successor was stored: put the device's session back, so
        # that a failure does not cost the device its remember-me (the cookie
        # still holds the old token).
        _not_restored(session, keep_cookie=True)
        store.undo_take(taken)
        raise
    try:
        moved = store.finish_move(taken)
    except SessionStoreUnavailable:
        # Whether the user was revoked meanwhile cannot be told: take the
        # successor back rather than let it out, and put the device's session
        # back (best effort; a move left half-way can be taken again later).
        _undo_restore(state, session, taken)
        raise
    revocation = None if moved is None else revocation_from_document(moved)
    if revocation is not None:
        # The user's sessions were revoked while this one moved (logout
        # everywhere, a newer login): its successor goes the same way.
        successor = session.key
        session.adopt(None, None, {})
        session.revocation = revocation
        _not_restored(session)
        store.revoke({"_id": successor, "user_id": user_id}, revocation.reason, now)
        # Told now: another tab with the same cookie must not be told again.
        assert successor is not None
        session.told_claim = (successor, secrets.token_hex(8))
        store.claim_tombstone(*session.told_claim, now)
        return
    # Its cookie goes out with the response from here on, even a 503: the
    # rotation is stored, and the old token would later look stolen.
    session.remember_cookie = ("set", value, stored["expires_at"])
    if "_login_user" in g:
        login_manager._update_request_context_with_user(user)
    session.binding = True
    try:
        user_loaded_from_cookie.send(app, user=user)
    finally:
        session.binding = False


def _may_be_told(tombstone: dict[str, t.Any], token: str) -> bool:
    """Whether a remember-me cookie with ``token`` may be told why its device
    was revoked: the token the device held then, or the one it held before if
    the revocation came within ROTATION_GRACE of the rotation (the new token
    may not have reached it). A stale copy of the cookie (a thief's, one that
    was reused and told then) must not take the one telling from the device."""
    remember = tombstone.get("remember")
    revoked = tombstone.get("revoked")
    if not isinstance(remember, dict) or not isinstance(revoked, dict):
        return False
    token_hash = hash_id(token)
    current = remember.get("token")
    if isinstance(current, str) and same_hash(current, token_hash):
        return True
    at = revoked.get("at")
    return isinstance(at, datetime) and _just_replaced(remember, token_hash, aware(at))


def _just_replaced(remember: dict[str, t.Any], token_hash: str, when: datetime) -> bool:
    """Whether ``token_hash`` is the token that rotation replaced less than
    ROTATION_GRACE before ``when`` (a parallel request may still present it)."""
    previous = remember.get("previous")
    rotated_at = remember.get("rotated_at")
    return (
        isinstance(previous, str)
        and same_hash(previous, token_hash)
        and isinstance(rotated_at, datetime)
        and when - aware(rotated_at) < ROTATION_GRACE
    )


def remembered_session(
    app: Flask, state: _State, session: ServerSession, request: Request
) -> dict[str, t.Any] | None:
    """The live session this device's remember-me cookie holds (its token
    current), without restoring it: a login on the device replaces it."""
    session.remember_pending = False
    ids = state.remember_ids(request.cookies.get(cookie_name(app), ""))
    if ids is None:
        return None
    series, token = ids
    document = state.store.find_remembered(hash_id(series), state.now())
    if document is None or not same_hash(
        str(document["remember"].get("token")), hash_id(token)
    ):
        return None
    return document


def _not_restored(session: ServerSession, *, keep_cookie: bool = False) -> None:
    """Leave the request anonymous, and the remember-me cookie deleted (or, after
    a failure, as it is)."""
    for key in LOGIN_KEYS:
        dict.pop(session, key, None)
    # Still keep Flask-Login from reading the cookie itself.
    dict.__setitem__(session, "_remember", "clear")
    session.remember_cookie = None if keep_cookie else "delete"


def _undo_restore(
    state: _State, session: ServerSession, taken: dict[str, t.Any]
) -> None:
    successor = session.key
    session.adopt(None, None, {})
    _not_restored(session, keep_cookie=True)
    take_back(state, successor, [taken])


def update_cookie(
    app: Flask, session: ServerSession, request: Request, response: Response
) -> None:
    """Set, refresh or delete this library's remember-me cookie on the response,
    after taking away whatever Flask-Login's after_request did to it."""
    name = cookie_name(app)
    strip_flask_login_cookie(app, response)
    config = app.config
    action = session.remember_cookie
    if action is None and not config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"):
        return  # the common case: nothing to do
    domain = config.get("REMEMBER_COOKIE_DOMAIN")
    path = config.get("REMEMBER_COOKIE_PATH", "/")
    secure = config.get("REMEMBER_COOKIE_SECURE", False)
    httponly = config.get("REMEMBER_COOKIE_HTTPONLY", True)
    samesite = config.get("REMEMBER_COOKIE_SAMESITE")
    if action == "delete":
        if name in request.cookies:
            # With the attributes it was set with: a browser ignores the
            # deletion of a __Secure- or __Host- cookie that is not Secure.
            response.delete_cookie(
                name,
                domain=domain,
                path=path,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
            )
        return
    value: str | None = None
    expires: datetime | None = None
    if isinstance(action, tuple):
        _, value, expires = action
    elif (
        config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST")
        and name in request.cookies
        and session.document is not None
        and session.document.get("remember")
    ):
        value = request.cookies[name]
        seconds = session.document["remember"].get("seconds")
        expires = datetime.now(timezone.utc) + duration(app, seconds)
    if value is None:
        return
    response.set_cookie(
        name,
        value,
        expires=expires,
        domain=domain,
        path=path,
        secure=secure,
        httponly=httponly,
        samesite=samesite,
    )


def strip_flask_login_cookie(app: Flask, response: Response) -> None:
    """Remove what Flask-Login's after_request did to the remember cookie: it
    would set its own user-id cookie, or delete ours whenever the session says
    "clear" (which open_session puts there to keep Flask-Login from honouring a
    cookie on its own). This module alone decides about that cookie."""
    prefix = cookie_name(app) + "="
    headers = response.headers.getlist("Set-Cookie")
    if any(h.startswith(prefix) for h in headers):
        response.headers.remove("Set-Cookie")
        for header in headers:
            if not header.startswith(prefix):
                response.headers.add("Set-Cookie", header)
