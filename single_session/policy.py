"""Binding a session to a user, and the per-user limit.

A login stores the session under a fresh id, bound to the user, and then holds
the user to ``SINGLE_SESSION_MAX_SESSIONS``:

``"evict"`` (newest login wins)
    Insert the new session, then read the user's live sessions ordered by
    (login time, ``_id``) and revoke all but the N newest. The order key never
    changes, so concurrent logins agree on who survives, and the last one to
    read sees everyone: when all have finished, exactly the N newest are left.

``"deny"`` (refuse new logins)
    Admission is one atomic insert: each admitted session holds one of N slot
    keys (``"<slot>:<user id>"``) under a unique index. N succeed, the rest get
    :exc:`LoginDenied`, and nothing admitted is ever revoked by another login.
"""

from __future__ import annotations

import logging
import secrets
import typing as t
from datetime import datetime

from . import serialization
from .exceptions import LoginDenied
from .exceptions import SessionStoreUnavailable
from .sessions import absolute_end
from .sessions import aware
from .sessions import holds_place
from .sessions import insert_new
from .sessions import is_moving
from .sessions import lifetime_cutoffs
from .sessions import LOGGED_OUT
from .sessions import LOGIN_KEYS
from .sessions import new_document
from .sessions import ServerSession
from .store import DuplicateKeyError

if t.TYPE_CHECKING:
    from .extension import _State

logger = logging.getLogger("single_session")

#: Revocation reasons.
SIGNED_IN_ELSEWHERE = "signed_in_elsewhere"
LOGOUT_EVERYWHERE = "logout_everywhere"
LOGOUT_OTHERS = "logout_others"
REVOKED = "revoked"
REMEMBER_TOKEN_REUSED = "remember_token_reused"


def bind(
    state: _State,
    session: ServerSession,
    user: t.Any,
    user_id: str,
    *,
    login_at: datetime | None = None,
    remember: dict[str, t.Any] | None = None,
    replaces: dict[str, t.Any] | None = None,
    moving_from: dict[str, t.Any] | None = None,
    rotating: bool = False,
) -> bool:
    """Store ``session`` (which already holds Flask-Login's keys) under a new id,
    bound to ``user_id``, and apply the policy. Raises :exc:`LoginDenied`; the
    session then keeps its old id and the user's other sessions are untouched.
    ``replaces`` is the login the device's remember-me cookie holds, not
    restored in this request: the new login ends it. ``moving_from`` is a
    session the caller took to move it to this new one (a remember-me
    restore): the policy does not count it, and the new one keeps its login
    and handle. With ``rotating`` (the same login under a new id, no new
    sign-in), nothing is stored if the current session cannot be taken, and
    under "evict" no other session is evicted (``logout_others``, which
    rotates, ends them itself). Returns whether a replaced login of the same
    user was revoked (or had ended) by the time this one was admitted."""
    store = state.store
    now = state.now()
    # What this request last saw stored: another request's writes since then
    # are carried over to the new session (see _carry_over).
    seen = session.stored
    own = session.document
    stored, entries, _ = serialization.dump_data(
        session, state.max_size(), session.loaded
    )
    document = new_document(state, stored, now)
    document["user_id"] = user_id
    document["login_at"] = login_at or now
    if rotating and session.document is not None:
        # The same session under a new id, not a new sign-in: it keeps its
        # age, or "log out other devices" pressed now and then would keep a
        # (stolen) session alive past its absolute lifetime.
        _keep_age(state, document, session.document)
    if remember is not None:
        document["remember"] = remember
        document["purge_at"] = max(document["purge_at"], remember["expires_at"])

    # What the new login replaces on this device: its current session, and the
    # login its remember-me cookie holds. Those of the same user are taken
    # (marked as moving) while the new one is admitted, so that they take no
    # place (or "deny" slot) from it, and are put back if it is refused or
    # fails; the others go once it is in.
    replaced = [d for d in (session.document, replaces) if d is not None]
    taken = []
    ended_meanwhile = False  # revoked or gone before it could be taken
    for d in replaced:
        if d.get("user_id") == user_id:
            moving = store.take(
                d["_id"],
                now,
                alive_after=lifetime_cutoffs(state, now) if rotating else None,
            )
            if moving is None:
                ended_meanwhile = True
                current = store.load(d["_id"], now)
                if current is not None and is_moving(current, now):
                    # Another request of this browser is replacing it (a form
                    # sent twice): that one stores the login and sets the
                    # cookie; this one stores nothing.
                    session.frozen = True
                    session.frozen_by = current
                    return False
            else:
                taken.append(moving)
    others = [d for d in replaced if d.get("user_id") != user_id]
    if rotating and ended_meanwhile:
        return True
    predecessor = taken[0] if taken else moving_from
    document["login_id"] = secrets.token_hex(8)
    if predecessor is not None:
        # Lets the policy count the pair as one session while both exist.
        document["moved_from"] = predecessor["_id"]
        # The same login of the same browser keeps its id across new session
        # ids (logout_others, a restore, the same user logging in again), so
        # that a logout in a tab that still has an old one ends the newest;
        # and its handle, so that "sign out that device" on a list shown
        # before the move still reaches it. (A session stored before login
        # ids lends its own _id.)
        document["login_id"] = login_of(predecessor)
        if isinstance(predecessor.get("handle"), str):
            document["handle"] = predecessor["handle"]

    try:
        sid = _admit(
            state,
            document,
            user_id,
            None if rotating and state.on_limit() == "evict" else state.limit_for(user),
            now,
            {d["_id"] for d in ([*taken, moving_from] if moving_from else taken)},
        )
    except BaseException as e:
        # Refused, or the database failed half-way: take back the new session
        # if it was stored, so that a failed login holds no place (or "deny"
        # slot), and put back what it was to replace.
        stored_id = document.get("_id")
        take_back(
            state,
            stored_id if isinstance(e, SessionStoreUnavailable) else None,
            taken,
        )
        raise
    last = None  # the device's current session as it was when it went
    try:
        for moving in taken:
            finished = store.finish_move(moving)
            # (Gone is ended too: nothing deletes a moving session but its
            # move, or its expiry.)
            ended_meanwhile = (
                ended_meanwhile or finished is None or "revoked" in finished
            )
            revoked = finished.get("revoked") if finished is not None else None
            reason = revoked.get("reason") if isinstance(revoked, dict) else None
            if revoked is not None and (rotating or reason == LOGGED_OUT):
                # The same login under a new id: it ends for the same reason,
                # and its device, sent the new id, is told why. A new sign-in
                # of the same user stands against anything else that came in
                # between (as if it came after), but not against a logout in
                # another tab of this browser: the browser may end up with
                # that tab's cookie, and nothing would hold the new session.
                store.revoke(
                    {"_id": document["_id"], "user_id": user_id},
                    reason if isinstance(reason, str) else REVOKED,
                    now,
                )
            if own is not None and moving["_id"] == own["_id"]:
                last = finished
    except SessionStoreUnavailable:
        # The moves cannot be finished: undo the login rather than leave the
        # replaced sessions to come back later beside it.
        take_back(state, document["_id"], taken)
        raise
    for other in others:
        try:
            if isinstance(other.get("user_id"), str):
                # Another user's login on this device ends as a logout would
                # end it: followed to its newest id if another tab of the
                # browser is moving it (a restore), not deleted under that
                # move, whose successor nothing would hold.
                store.end(
                    other["_id"],
                    other["user_id"],
                    now,
                    LOGGED_OUT,
                    login_id=login_of(other),
                )
            else:
                removed = store.remove(other["_id"])
                if other is own:
                    last = removed
        except SessionStoreUnavailable:
            # The login is done (and may have evicted a device for it): do not
            # fail it now. The old session is only left over: its cookie is
            # replaced, and it expires on its own.
            logger.warning("single_session could not delete a replaced session")
    if (
        last is not None
        and "revoked" not in last
        and last.get("user_id") in (None, user_id)
        and not session.cleared
    ):
        _carry_over(state, document["_id"], seen, stored, last, now)
    if remember is None and any(d.get("remember") for d in replaced):
        session.remember_cookie = "delete"  # it remembered a replaced login
    # Stored as it is now. The end of the request writes again what changed,
    # as Flask saves a session modified in a request whole at its end: a value
    # changed in place after the login too (looked for only if the session
    # holds a value that can change in place).
    session.adopt(sid, document, stored)
    session.loaded = entries
    session.mark_written()
    session.written_early = True
    return ended_meanwhile


def login_of(document: dict[str, t.Any]) -> str:
    """The login a session belongs to, the same under every id it gets."""
    login_id = document.get("login_id")
    return login_id if isinstance(login_id, str) else str(document["_id"])


def _carry_over(
    state: _State,
    key: str,
    seen: dict[str, str],
    stored: dict[str, str],
    last: dict[str, t.Any],
    now: datetime,
) -> None:
    """Another request of the browser (a second tab) may have written to the
    replaced session while this one logged in: its keys go to the new session,
    as its write would have reached the session had it come first. A key this
    request changed itself keeps this request's value (the later write), as two
    requests writing one session do; Flask-Login's keys are the login's. (Only
    from an anonymous session or one of the same user, and not after the app
    cleared the session: another user's data does not move to this login.)"""
    data = last.get("data")
    if not isinstance(data, dict):
        return
    set_: dict[str, t.Any] = {}
    unset: dict[str, t.Any] = {}
    for field in data.keys() | seen.keys():
        theirs = data.get(field)
        if (
            theirs == seen.get(field)
            or not serialization.same_value(seen.get(field), stored.get(field))
            or serialization.unescape_key(field) in LOGIN_KEYS
        ):
            continue
        if theirs is None:
            unset["data." + field] = ""
        elif isinstance(theirs, str):
            set_["data." + field] = theirs
    if (set_ or unset) and serialization.update_fits(set_, unset):
        try:
            state.store.update_live(key, now, set_, unset)
        except SessionStoreUnavailable:
            logger.warning("single_session could not carry over a write made meanwhile")


def _keep_age(state: _State, document: dict[str, t.Any], old: dict[str, t.Any]) -> None:
    document["created_at"] = aware(old["created_at"])
    end = absolute_end(state, old)
    if end is not None:
        document["absolute_expires_at"] = end
        document["expires_at"] = min(document["expires_at"], end)
        document["purge_at"] = document["expires_at"]


def take_back(
    state: _State, stored_id: str | None, taken: list[dict[str, t.Any]]
) -> None:
    """After a failure: delete the new session ``stored_id`` if it was stored
    (best effort: nobody has its cookie, and it expires on its own), and put
    back the sessions ``taken`` to be moved to it."""
    if stored_id is not None:
        try:
            state.store.delete(stored_id, cleanup=True)
        except SessionStoreUnavailable:
            # Held by no device, it keeps its place under the policy (under
            # "deny", the user's) until it expires or the user is logged out
            # everywhere: worth a line for the operator.
            logger.warning(
                "single_session could not take back a session stored by a"
                " login that failed half-way"
            )
    for moving in taken:
        state.store.undo_take(moving)


def _admit(
    state: _State,
    document: dict[str, t.Any],
    user_id: str,
    limit: int | None,
    now: datetime,
    replacing: set[str],
) -> str:
    store = state.store
    if limit is None or state.on_limit() == "evict":
        sid = insert_new(state, document)
        if limit is not None:
            # (Without the sessions this one replaces: they go once it is in.)
            live = store.user_sessions(
                user_id, now, ["_id", "moved_from", *_PLACE_FIELDS]
            )
            # A session moving to a new id counts once: its successor, once it
            # is stored, stands for it.
            gone = replacing | {
                d["moved_from"] for d in live if isinstance(d.get("moved_from"), str)
            }
            live = [d for d in live if d["_id"] not in gone]
            # Past a lifetime lowered since their last write: no place, and
            # ended for good (as this login is admitted without them).
            ended = [d["_id"] for d in live if not holds_place(state, d, now)]
            if ended:
                store.expire(user_id, ended, now, lifetime_cutoffs(state, now))
                live = [d for d in live if d["_id"] not in ended]
            victims = [d["_id"] for d in live[limit:]]
            if victims:
                store.revoke(
                    {"user_id": user_id, "_id": {"$in": victims}},
                    SIGNED_IN_ELSEWHERE,
                    now,
                )
        return sid

    store.ensure_slot_index()
    held = {
        d.get("slot_key")
        for d in store.user_sessions(user_id, now, ["slot_key", *_PLACE_FIELDS])
        if holds_place(state, d, now)
    }
    # The free slots first; then, once each, those the read found held: their
    # sessions may have ended since (a logout elsewhere while this login
    # waited), and only the insert itself tells.
    slots = [f"{slot}:{user_id}" for slot in range(limit)]
    for slot_key in sorted(slots, key=lambda slot_key: slot_key in held):
        document["slot_key"] = slot_key
        for attempt in range(2):
            try:
                return insert_new(state, document, attempts=1)
            except DuplicateKeyError:
                # Taken by a concurrent login, or by a session that expired and
                # is not purged yet: free the latter and try once more.
                if (
                    attempt == 0
                    and slot_key not in held
                    and store.release_dead_slot(
                        slot_key, now, lifetime_cutoffs(state, now)
                    )
                ):
                    continue
                break
    raise LoginDenied(user_id, limit)


#: The fields that tell whether a session holds its place (see holds_place).
_PLACE_FIELDS = ["seen_at", "created_at", "remember"]


def revoke_all(
    state: _State,
    user_id: str,
    reason: str,
    *,
    keep: str | None = None,
    keep_login: str | None = None,
    older_than: tuple[datetime, str] | None = None,
) -> int:
    """Revoke every live session of ``user_id`` (but ``keep``, and the
    sessions of the login ``keep_login``); only those older, in the policy's
    order of (login time, ``_id``), than ``older_than`` if given. One update."""
    now = state.now()
    query: dict[str, t.Any] = {"user_id": user_id, "purge_at": {"$gt": now}}
    if keep is not None:
        query["_id"] = {"$ne": keep}
    if keep_login is not None:
        query["login_id"] = {"$ne": keep_login}
    if older_than is not None:
        login_at, key = older_than
        query["$or"] = [
            {"login_at": {"$lt": login_at}},
            {"login_at": login_at, "_id": {"$lt": key}},
        ]
    return state.store.revoke(query, reason, now)
