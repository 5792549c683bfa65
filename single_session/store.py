"""The only module that speaks pymongo.

Every call runs under ``pymongo.timeout`` so that a database that is down or slow
costs a request at most ``SINGLE_SESSION_TIMEOUT`` seconds, and a failure to reach
it becomes :exc:`SessionStoreUnavailable` (a 503). Idempotent calls are tried a
second time, within the same time budget, after a transient network error.

Every query is served by an index this module creates (see :data:`INDEXES`):
sessions are found by ``_id`` (the hash of the session id), a user's sessions by
``user_id``, a remembered device by ``remember.series``, a "deny" slot by
``slot_key``.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
import time
import typing as t
from datetime import datetime
from datetime import timedelta

import pymongo
from bson.codec_options import CodecOptions
from flask import has_request_context
from pymongo import ReadPreference
from pymongo import WriteConcern
from pymongo.errors import AutoReconnect
from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import ConnectionFailure
from pymongo.errors import DuplicateKeyError
from pymongo.errors import ExecutionTimeout
from pymongo.errors import NetworkTimeout
from pymongo.errors import OperationFailure
from pymongo.errors import PyMongoError
from pymongo.errors import ServerSelectionTimeoutError

from .exceptions import IndexConflict
from .exceptions import SessionStoreUnavailable

if t.TYPE_CHECKING:
    from pymongo.collection import Collection

logger = logging.getLogger("single_session")

Document = dict[str, t.Any]
T = t.TypeVar("T")


class RequestBudget:
    """One request's share of the timeout: how long its database calls have
    taken so far. Only time spent waiting on the database counts; a view that
    takes its time does not use up the budget."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = 0.0


#: The indexes the library needs: name, keys, options.
INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, t.Any]]] = [
    # A user's sessions, in login order (eviction, listing, logout everywhere).
    # (_id last, so the tie-break of the login order is in the index too.)
    # Partial, not sparse: a sparse compound index holds every document that
    # has any of its keys, and every document has an _id. Anonymous sessions
    # and tombstones (which lose user_id) stay out of it; every query on it
    # has an equality on user_id, which implies the filter.
    (
        "single_session_user",
        [("user_id", 1), ("login_at", 1), ("_id", 1)],
        {"partialFilterExpression": {"user_id": {"$exists": True}}},
    ),
    # Leftovers (expired sessions, tombstones) are removed by MongoDB itself.
    ("single_session_purge", [("purge_at", 1)], {"expireAfterSeconds": 0}),
    # A remembered device, found by the series of its remember-me cookie. Not
    # unique: a series is 256 random bits, and a restore takes the session by
    # _id and token. (A unique index would stop sharding on a hashed _id.)
    ("single_session_remember", [("remember.series", 1)], {"sparse": True}),
]

#: Only under ``SINGLE_SESSION_ON_LIMIT = "deny"``: N slots per user, claimed by
#: insert under a unique index (which is why a collection sharded on a hashed
#: ``_id`` cannot use "deny").
SLOT_INDEX: tuple[str, list[tuple[str, int]], dict[str, t.Any]] = (
    "single_session_slot",
    [("slot_key", 1)],
    {"unique": True, "sparse": True},
)

#: The fields a tombstone loses: it keeps only why and when it was revoked (and
#: a remembered device's hashes of series, token and previous token, with the
#: time of the rotation: to tell that device why when it comes back with its
#: remember-me cookie alone, and not a stale copy of the cookie).
_TOMBSTONE_UNSET = {
    "data": "",
    "user_id": "",
    "login_at": "",
    "remember.expires_at": "",
    "remember.seconds": "",
    "slot_key": "",
    "device": "",
}

#: After this long, a session left "moving" by a move that failed half-way may
#: be taken again (a move is a few calls within one request's timeout).
MOVE_LEASE = timedelta(minutes=5)


def _not_moving(now: datetime) -> list[Document]:
    """A filter (for ``$or``): not moving to a new id, or left moving by a move
    that failed half-way longer than MOVE_LEASE ago (then live again). A mark
    further in the future than the lease (a clock far off, a corrupted
    document) is no move either: it would freeze its device for that long."""
    return [
        {"moving": {"$exists": False}},
        {"moving": {"$lte": now - MOVE_LEASE}},
        {"moving": {"$gt": now + MOVE_LEASE}},
    ]


#: Building an index over a collection that already holds many sessions takes
#: longer than a request may wait: ``flask single-session create-indexes``
#: gives each build this long.
INDEX_BUILD_TIMEOUT = 3600.0
#: A request that could not build an index in time leaves it to that command:
#: the process does not try again (making a request wait) for this long.
INDEX_RETRY_AFTER = 600.0


class IndexBuildTimeout(SessionStoreUnavailable):
    """An index was not built within the time given to it (the server had
    answered: most likely a large collection)."""

    def __init__(self, index: str, seconds: float) -> None:
        super().__init__()
        self.index = index
        self.seconds = seconds


# Codes of an index that exists with other options or other keys.
_INDEX_CONFLICT_CODES = {85, 86}


def _is_transient(error: PyMongoError) -> bool:
    return isinstance(error, ConnectionFailure) or bool(
        getattr(error, "timeout", False)
    )


def unusable(error: BaseException) -> bool:
    """Whether pymongo's ``error`` says that the library cannot use its
    database at all, rather than that a call was wrong: the client cannot be
    built (a TLS file missing, an option pymongo refuses) or cannot find its
    servers (an SRV record not found, or no answer from the DNS), or the
    server refuses its credentials. Requests then get a 503, as in an outage,
    and the cause is logged. (pymongo also raises its ConfigurationError for a
    call it refuses before sending; the library's calls are not such calls.)"""
    return isinstance(error, (PyMongoConfigurationError, OSError, ValueError)) or (
        isinstance(error, OperationFailure) and error.code == _AUTHENTICATION_FAILED
    )


_AUTHENTICATION_FAILED = 18

#: How often, at most, a process logs that it cannot use its database.
_CANNOT_USE_LOG_INTERVAL = 60.0


def _past_lifetime_filter(
    now: datetime, ended_before: t.Mapping[str, datetime]
) -> Document:
    """A live session past a lifetime as set now (``seen_at`` or ``created_at``
    not after the time ``ended_before`` gives them), whose device is not
    remembered."""
    return {
        "revoked": {"$exists": False},
        "remember.expires_at": {"$not": {"$gt": now}},
        "$or": [{field: {"$lte": when}} for field, when in ended_before.items()],
    }


def _index_in_the_way(
    existing: t.Mapping[str, t.Any],
    name: str,
    keys: list[tuple[str, int]],
    options: Document,
) -> str | None:
    """The name of an existing index that stops index ``name`` being created:
    one of that name with other keys or options, or one of another name with
    the same signature (MongoDB refuses both). Since MongoDB 5.0 the signature
    is the keys with the partial filter, uniqueness, sparseness and collation:
    an index that differs in one of those may stand beside the library's.
    (Collation is left to the server: a collection's default collation is
    every index's, the library's too.)"""
    for other, info in existing.items():
        same_signature = (
            [tuple(k) for k in info.get("key", [])] == keys
            and bool(info.get("unique")) == bool(options.get("unique"))
            and bool(info.get("sparse")) == bool(options.get("sparse"))
            and info.get("partialFilterExpression")
            == options.get("partialFilterExpression")
        )
        if other == name:
            if not same_signature or info.get("expireAfterSeconds") != options.get(
                "expireAfterSeconds"
            ):
                return other
        elif same_signature:
            return other
    return None


def _index_conflict(
    collection: Collection[Document],
    other: str,
    name: str,
    keys: list[tuple[str, int]],
    options: dict[str, t.Any],
    detail: str,
) -> IndexConflict:
    wanted = {"key": keys, **options}
    return IndexConflict(
        f"The collection {collection.full_name!r} has an index {other!r} that is"
        f" in the way of the index {name!r} single_session needs ({wanted});"
        f" {detail}. Drop it with db.{collection.name}.dropIndex({other!r}) and"
        " run 'flask single-session create-indexes'."
    )


def _log_slow_build(error: IndexBuildTimeout) -> None:
    logger.warning(
        "single_session could not build its index %r within %s s (%s): build"
        " it with 'flask single-session create-indexes'.",
        error.index,
        error.seconds,
        error.__cause__,
    )


class SessionStore:
    """Session documents in one MongoDB collection.

    :param connect: returns the pymongo ``Collection`` (or one with its API);
        called lazily, once per process, so that a client built from a URI is
        never shared across a fork.
    :param timeout: seconds every database call may take, and all the calls
        of one request together.
    :param current_budget: the current request's :class:`RequestBudget`, or
        ``None`` outside a request (then each call gets the whole timeout).
    """

    def __init__(
        self,
        connect: t.Callable[[], Collection[Document]],
        timeout: float,
        current_budget: t.Callable[[], RequestBudget | None] = lambda: None,
    ) -> None:
        self._connect = connect
        self.timeout = timeout
        self._current_budget = current_budget
        self._collection: Collection[Document] | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._indexes_ready = False
        self._indexes_retry_at = 0.0
        self._slot_index_ready = False
        self._cannot_use_logged_until = 0.0

    # -- plumbing ---------------------------------------------------------

    @property
    def collection(self) -> Collection[Document]:
        """The library's handle: primary reads, majority writes, aware datetimes,
        whatever the client's own defaults are."""
        if self._collection is None or self._pid != os.getpid():
            with self._lock:
                if self._collection is None or self._pid != os.getpid():
                    try:
                        collection = self._connect()
                    except (PyMongoError, OSError, ValueError) as e:
                        if not unusable(e):
                            raise
                        raise self._cannot_use(e) from e
                    self._collection = collection.with_options(
                        codec_options=CodecOptions(tz_aware=True),
                        read_preference=ReadPreference.PRIMARY,
                        write_concern=WriteConcern("majority"),
                    )
                    self._pid = os.getpid()
                    self._indexes_ready = False
        return self._collection

    def _call(
        self,
        fn: t.Callable[[], T],
        *,
        retry: bool,
        timeout: float | None = None,
        budget: RequestBudget | None = None,
    ) -> T:
        # A slow database ends the whole request within the timeout, not each
        # of its calls: the calls of a request share one budget (given, while
        # the request's session is being loaded, else the current request's).
        if budget is None and timeout is None:
            budget = self._current_budget()
        seconds = timeout or self.timeout
        if budget is not None:
            seconds -= budget.spent
            if seconds <= 0:
                raise SessionStoreUnavailable()
        started = time.monotonic()
        try:
            with pymongo.timeout(seconds):
                try:
                    return fn()
                except AutoReconnect:  # includes NetworkTimeout
                    if not retry:
                        raise
                    # Idempotent: safe to send again, within what is left of the budget.
                    return fn()
        except PyMongoError as e:
            if _is_transient(e):
                raise SessionStoreUnavailable() from e
            if unusable(e):
                raise self._cannot_use(e) from e
            raise
        finally:
            if budget is not None:
                budget.spent += time.monotonic() - started

    def _cannot_use(self, error: BaseException) -> SessionStoreUnavailable:
        """The 503 for a database the library cannot use at all (see
        :func:`unusable`). A request's 503 hides the cause, so it is logged, at
        most once a minute per process; a command says it itself."""
        now = time.monotonic()
        if has_request_context() and now >= self._cannot_use_logged_until:
            self._cannot_use_logged_until = now + _CANNOT_USE_LOG_INTERVAL
            logger.error("single_session cannot use its MongoDB collection: %s", error)
        return SessionStoreUnavailable()

    def ensure_indexes(
        self,
        *,
        slots: bool = False,
        slots_only: bool = False,
        build_timeout: float | None = None,
    ) -> None:
        """Create the indexes the library needs (idempotent), with the "deny"
        slot index if ``slots`` (that one alone if ``slots_only``). Raises
        :exc:`IndexConflict` if one is in the way, :exc:`IndexBuildTimeout` if
        one takes longer than ``build_timeout`` (by default
        ``SINGLE_SESSION_TIMEOUT``, of its own: a request's budget is for its
        own calls)."""
        build_timeout = build_timeout or self.timeout
        collection = self.collection
        # Compared here rather than left to the server's error (codes 85/86)
        # alone: the message can name the index to drop, and mongomock, which
        # does not raise those errors, gets the same check.
        existing = self._call(collection.index_information, retry=True)
        wanted = [SLOT_INDEX] if slots_only else [*INDEXES, *([SLOT_INDEX] * slots)]
        for name, keys, options in wanted:
            other = _index_in_the_way(existing, name, keys, options)
            if other is not None:
                raise _index_conflict(
                    collection,
                    other,
                    name,
                    keys,
                    options,
                    f"the one there is {existing[other]}",
                )
            if name in existing:
                continue  # there, as it should be
            try:
                self._call(
                    functools.partial(
                        collection.create_index, keys, name=name, **options
                    ),
                    retry=True,
                    timeout=build_timeout,
                )
            except SessionStoreUnavailable as e:
                # The server answered index_information: a timeout now is the
                # build taking its time (a connection failure is tried again
                # on the next write, as any).
                cause = e.__cause__
                if isinstance(cause, (ExecutionTimeout, NetworkTimeout)):
                    raise IndexBuildTimeout(name, build_timeout) from cause
                raise
            except OperationFailure as e:
                if e.code in _INDEX_CONFLICT_CODES:
                    detail = (e.details or {}).get("errmsg", e)
                    raise _index_conflict(
                        collection,
                        name,
                        name,
                        keys,
                        options,
                        f"the server says: {detail}",
                    ) from e
                if e.code == 11000:  # a unique index over duplicate values
                    field = keys[0][0]
                    raise IndexConflict(
                        f"The unique index {name!r} cannot be built on"
                        f" {collection.full_name!r}: two documents hold the same"
                        f" {field!r} ({e}). Remove the field from the duplicates"
                        f" (db.{collection.name}.updateMany({{{field}: <value>}},"
                        f" {{$unset: {{{field}: ''}}}})) and run 'flask"
                        " single-session create-indexes'."
                    ) from e
                raise
        self._indexes_ready = self._indexes_ready or not slots_only
        self._slot_index_ready = self._slot_index_ready or slots or slots_only

    def ensure_slot_index(self) -> None:
        """The "deny" slot index, once per process, before the first admission
        (that one alone: the others are the first write's). Admission is not
        safe without it: a build that takes too long fails the login (a 503),
        every time, until the index exists."""
        if not self._slot_index_ready:
            try:
                self.ensure_indexes(slots_only=True)
            except IndexBuildTimeout as e:
                _log_slow_build(e)
                raise

    def _ensure_indexes_once(self) -> None:
        # Lazily, on the first write, so that init_app never waits for the
        # database. A failure is logged and tried again on the next write.
        if self._indexes_ready or time.monotonic() < self._indexes_retry_at:
            return
        # SessionStoreUnavailable and IndexConflict are not PyMongoErrors: an
        # outage or an index in the way still fails the request, loudly.
        try:
            self.ensure_indexes()
        except PyMongoError as e:
            logger.warning("single_session could not create its indexes: %s", e)
        except IndexBuildTimeout as e:
            # The sessions work without the indexes, only slower: the request
            # goes on, and the build is left to the operator's command.
            self._indexes_retry_at = time.monotonic() + INDEX_RETRY_AFTER
            _log_slow_build(e)

    # -- one session ------------------------------------------------------

    def load(
        self, key: str, now: datetime, budget: RequestBudget | None = None
    ) -> Document | None:
        """The session ``key`` if it is live (or moving to a new id) or a
        tombstone; one query by ``_id``.

        Expiry is part of the query: a document past its ``expires_at`` is absent
        whether or not MongoDB's TTL monitor has removed it yet.
        """
        query = {
            "_id": key,
            "$or": [{"revoked": {"$exists": True}}, {"expires_at": {"$gt": now}}],
        }
        return self._call(
            lambda: self.collection.find_one(query), retry=True, budget=budget
        )

    def discard(self, key: str, budget: RequestBudget | None = None) -> None:
        """Remove a document that is expired or malformed; keeps tombstones and
        remembered devices (their remember-me outlives the session)."""
        query = {
            "_id": key,
            "revoked": {"$exists": False},
            "remember": {"$exists": False},
            "moving": {"$exists": False},  # it is not lost: it gets a new id
        }
        self._call(lambda: self.collection.delete_one(query), retry=True, budget=budget)

    def insert(self, document: Document) -> None:
        """Insert a new session; raises ``DuplicateKeyError`` on a taken
        ``_id``, ``remember.series`` or ``slot_key``."""
        self._ensure_indexes_once()
        collection = self.collection
        try:
            self._call(lambda: collection.insert_one(document), retry=False)
        except SessionStoreUnavailable as e:
            cause = e.__cause__
            if isinstance(cause, ServerSelectionTimeoutError) or (
                cause is not None and unusable(cause)
            ):
                # Never sent (and asking would wait a second time). (A server
                # that refuses the credentials does so before anything is sent.)
                raise
            if not isinstance(cause, AutoReconnect):
                e.maybe_stored = True  # e.g. a write concern timeout
                raise
            # The reply was lost: the insert may have happened; find out
            # rather than guess.
            try:
                found = self._call(
                    lambda: collection.find_one({"_id": document["_id"]}, {"_id": 1}),
                    retry=True,
                )
            except SessionStoreUnavailable as check:
                check.maybe_stored = True
                raise
            if found is not None:
                return
            raise

    def update_live(
        self,
        key: str,
        now: datetime,
        set_: Document,
        unset: Document,
        alive_after: t.Mapping[str, datetime] | None = None,
    ) -> bool:
        """Update a session that is still live; never upserts, so a session that
        was revoked, logged out or expired meanwhile stays gone. Returns whether
        it was found. ``alive_after`` gives, for ``seen_at`` and ``created_at``,
        the times the lifetimes as set now require them to be after (see
        :func:`~single_session.sessions.lifetime_cutoffs`)."""
        update: Document = {"$set": set_}
        if unset:
            update["$unset"] = unset
        query = {"_id": key, "revoked": {"$exists": False}, "expires_at": {"$gt": now}}
        for field, when in (alive_after or {}).items():
            query[field] = {"$gt": when}
        result = self._call(
            lambda: self.collection.update_one(query, update, upsert=False), retry=True
        )
        return result.matched_count == 1

    def delete(
        self,
        key: str,
        *,
        cleanup: bool = False,
        budget: RequestBudget | None = None,
        keep_tombstone: bool = False,
    ) -> bool:
        """Delete a session. A ``cleanup`` after a failure gets a timeout of its
        own even when the request's budget is spent: leaving the session would
        cost more (under "deny", a slot held until it expires). With
        ``keep_tombstone``, a session revoked meanwhile stays: a remembered
        device may come back to be told why."""
        query: Document = {"_id": key}
        if keep_tombstone:
            query["revoked"] = {"$exists": False}
        result = self._call(
            lambda: self.collection.delete_one(query),
            retry=True,
            timeout=self.timeout if cleanup else None,
            budget=budget,
        )
        return result.deleted_count == 1

    def remove(self, key: str) -> Document | None:
        """Delete a session; returns what it was by then (``None`` if gone)."""
        return self._call(
            lambda: self.collection.find_one_and_delete({"_id": key}), retry=True
        )

    # -- moving a session to a new id ---------------------------------------
    #
    # A session gets a new id (a remember-me restore, logout_others) in three
    # steps: take it (mark it "moving", with the time), store its successor,
    # finish the move (delete it). While it moves it stays bound to its user
    # and counted by the policy of other logins, so a revocation of the user
    # meanwhile still reaches it and finish_move reports it; and no other move
    # can take it. Requests that load it go on anonymous, and under "deny" its
    # place goes to its successor. A move abandoned half-way (a failure, a
    # crash) can be taken again after MOVE_LEASE.

    def claim_tombstone(self, key: str, claim: str, now: datetime) -> bool:
        """Mark the tombstone ``key`` as told, by ``claim`` (a random value);
        returns whether this call did, so that a device is told why once, not
        on every replay of its old cookie (a bot, a stolen cookie sent again
        and again). A retry after a lost reply finds its own claim."""
        query = {
            "_id": key,
            "revoked": {"$type": "object"},
            "revoked.told": {"$in": [None, claim]},
        }
        update = {"$set": {"revoked.told": claim, "revoked.told_at": now}}
        result = self._call(
            lambda: self.collection.update_one(query, update), retry=True
        )
        return result.matched_count == 1

    def release_claim(self, key: str, claim: str) -> None:
        """Best effort, when the request that was to tell the device failed (a
        503, which leaves its old cookie): the next request tells it (with a
        timeout of its own, the request's budget being spent)."""
        query = {"_id": key, "revoked.told": claim}
        update = {"$unset": {"revoked.told": "", "revoked.told_at": ""}}
        try:
            self._call(
                lambda: self.collection.update_one(query, update),
                retry=True,
                timeout=self.timeout,
            )
        except SessionStoreUnavailable:
            logger.warning(
                "single_session could not release the telling of a revocation"
            )

    def find_revoked_remembered(self, series: str) -> Document | None:
        """The tombstone of a remembered device, found by its series hash."""
        query = {"remember.series": series, "revoked": {"$exists": True}}
        return self._call(lambda: self.collection.find_one(query), retry=True)

    def take(
        self,
        key: str,
        now: datetime,
        *,
        alive_after: t.Mapping[str, datetime] | None = None,
    ) -> Document | None:
        """Start moving a session; returns it as it was, with the move's own id
        under ``"move_id"``, or ``None`` if it is revoked or already moving (or,
        given ``alive_after`` (see :meth:`update_live`), past its expiry or
        lifetimes: a new id of the same login would not bring it back). ``now``
        is when the move started."""
        query: Document = {"_id": key}
        if alive_after is not None:
            query["expires_at"] = {"$gt": now}
            for field, when in alive_after.items():
                query[field] = {"$gt": when}
        return self._take(query, now)

    def take_remembered(self, key: str, token: str, now: datetime) -> Document | None:
        """:meth:`take` the remembered session ``key`` if ``token`` is still its
        current token: of two requests that use one token, only one gets it."""
        return self._take({"_id": key, "remember.token": token}, now, restoring=True)

    def _take(
        self, query: Document, now: datetime, *, restoring: bool = False
    ) -> Document | None:
        move_id = secrets.token_hex(8)
        # (Its own move id matches too, so that a retry after a lost reply
        # finds the session this call already took.)
        query = {
            **query,
            "revoked": {"$exists": False},
            "$or": [*_not_moving(now), {"move_id": move_id}],
        }
        # (A restore says so: a request of the device that still holds the
        # session then knows the restore runs elsewhere.)
        update: Document = {
            "$set": {"moving": now, "move_id": move_id},
            "$unset": {"slot_key": ""},
        }
        if restoring:
            update["$set"]["restoring"] = True
        else:
            update["$unset"]["restoring"] = ""
        document = self._call(
            lambda: self.collection.find_one_and_update(query, update), retry=True
        )
        if document is not None:
            document.pop("moving", None)  # an abandoned move's mark
            document.pop("restoring", None)
            document["move_id"] = move_id
        return document

    def finish_move(self, taken: Document) -> Document | None:
        """Delete a session :meth:`take` returned; returns what it was by then
        (a tombstone if it was revoked or logged out during the move), ``None``
        if it is gone."""
        query = {"_id": taken["_id"], "move_id": taken["move_id"]}
        return self._call(
            lambda: self.collection.find_one_and_delete(query), retry=True
        )

    def undo_take(self, taken: Document) -> None:
        """Best effort, after a failure: make a session :meth:`take` returned
        live again, unless it was revoked meanwhile (with a timeout of its own,
        the request's budget being spent)."""
        update: Document = {"$unset": {"moving": "", "move_id": "", "restoring": ""}}
        if taken.get("slot_key") is not None:
            update["$set"] = {"slot_key": taken["slot_key"]}
        query = {
            "_id": taken["_id"],
            "move_id": taken["move_id"],
            "revoked": {"$exists": False},
        }
        try:
            try:
                self._call(
                    lambda: self.collection.update_one(query, update),
                    retry=True,
                    timeout=self.timeout,
                )
            except DuplicateKeyError:
                # Its "deny" slot went to another login meanwhile: it cannot
                # come back without one, so it ends.
                self._call(
                    lambda: self.collection.delete_one(query),
                    retry=True,
                    timeout=self.timeout,
                )
        except SessionStoreUnavailable:
            logger.warning("single_session could not put back a moving session")

    def end(
        self,
        key: str,
        user_id: str,
        now: datetime,
        reason: str,
        *,
        login_id: str | None = None,
        tombstone_too: bool = False,
    ) -> Document | None:
        """End the login of ``user_id``: delete its session; one that another
        request is moving to a new id becomes a tombstone instead, so that the
        move ends its successor too. A tombstone stays, for its device to be
        told why, unless ``tombstone_too`` (the request revoked it itself).
        A session moved to new ids meanwhile (``logout_others``, a restore, the
        same user logging in again in another tab) is the same login of the
        same browser (``login_id``): its newest session goes. Returns the
        session as it was deleted (its ``data`` only: another tab may have
        written to it), an empty document if the login was found live under
        another id, or ``None`` if it was not found live: revoked, or replaced
        by another user's login (or gone), meanwhile."""
        query: Document = {"_id": key, "moving": {"$exists": False}}
        if not tombstone_too:
            query["revoked"] = {"$exists": False}
        ended: Document | None = self._call(
            lambda: self.collection.find_one_and_delete(query, {"data": True}),
            retry=True,
        )
        if ended is not None:
            return ended
        moving: Document = {"_id": key, "user_id": user_id, "moving": {"$exists": True}}
        if self.revoke(moving, reason, now) == 1:
            return {}
        # Its successors: by login (or, one stored before login ids, the one
        # that moved from it).
        same_login: Document = {
            "user_id": user_id,
            "$or": [{"login_id": login_id or key}, {"moved_from": key}],
        }
        settled = {
            **same_login,
            "moving": {"$exists": False},
            "revoked": {"$exists": False},
        }
        result = self._call(lambda: self.collection.delete_many(settled), retry=True)
        # (One that is moving again becomes a tombstone: its move ends its own
        # successor.)
        moving = {**same_login, "moving": {"$exists": True}}
        live = self.revoke(moving, reason, now) > 0 or result.deleted_count > 0
        return {} if live else None

    # -- remember me -------------------------------------------------------

    def forget(self, key: str, token: str, now: datetime) -> None:
        """Delete the remembered session ``key`` while ``token`` (a hash) is
        still its current token and nothing moves (see :func:`_not_moving`) or
        revoked it: a request ends the remember-me it found, not one another
        tab has restored since."""
        query = {
            "_id": key,
            "remember.token": token,
            "revoked": {"$exists": False},
            "$or": _not_moving(now),
        }
        self._call(lambda: self.collection.delete_one(query), retry=True)

    def find_remembered(self, series: str, now: datetime) -> Document | None:
        query = {
            "remember.series": series,
            "remember.expires_at": {"$gt": now},
            "revoked": {"$exists": False},
        }
        return self._call(lambda: self.collection.find_one(query), retry=True)

    # -- a user's sessions -------------------------------------------------

    def user_sessions(
        self, user_id: str, now: datetime, fields: list[str] | None = None
    ) -> list[Document]:
        """The user's live sessions (a remembered device counts while its
        remember-me is valid), newest login first; only ``fields`` of them if
        given (the policy needs ids, not every session's data)."""
        query = {"user_id": user_id, "purge_at": {"$gt": now}}
        order = [("login_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
        projection = None if fields is None else dict.fromkeys(fields, 1)
        return self._call(
            lambda: list(self.collection.find(query, projection, sort=order)),
            retry=True,
        )

    def revoke(
        self,
        query: Document,
        reason: str,
        now: datetime,
    ) -> int:
        """Turn the live sessions that match ``query`` (which names a user) into
        tombstones; returns how many. Idempotent."""
        query = {**query, "revoked": {"$exists": False}}
        # Field by field, not one "revoked" object: mongomock (which the docs
        # suggest for app tests) gives every document an update_many changes
        # the same object, so marking one tombstone as told would mark them all.
        update = {
            "$set": {
                "revoked.reason": reason,
                "revoked.at": now,
                "revoked.user_id": query.get("user_id"),
            },
            "$unset": _TOMBSTONE_UNSET,
        }
        result = self._call(
            lambda: self.collection.update_many(query, update), retry=True
        )
        return result.modified_count

    def release_dead_slot(
        self, slot_key: str, now: datetime, ended_before: dict[str, datetime]
    ) -> bool:
        """Free a "deny" slot whose session has ended but is not purged yet:
        expired, or past a lifetime lowered since its last write (``seen_at``
        or ``created_at`` before the time ``ended_before`` gives them), unless
        its device is remembered."""
        query = {
            "slot_key": slot_key,
            "$or": [
                {"purge_at": {"$lte": now}},
                _past_lifetime_filter(now, ended_before),
            ],
        }
        # (Ended for good: raising the lifetime again must not bring it back
        # beside the login that takes its place.)
        update = {
            "$unset": {"slot_key": ""},
            "$min": {"expires_at": now, "purge_at": now},
        }
        result = self._call(
            lambda: self.collection.update_one(query, update), retry=True
        )
        return result.modified_count == 1

    def expire(
        self,
        user_id: str,
        keys: list[str],
        now: datetime,
        ended_before: t.Mapping[str, datetime],
    ) -> None:
        """End for good the sessions ``keys`` of ``user_id`` that are past a
        lifetime lowered since their last write (and not remembered), which the
        policy no longer counts: their stored expiry becomes now, so that
        raising the lifetime again does not bring them back beside the logins
        admitted in their place. Nobody is told: they expired."""
        query = {
            "user_id": user_id,
            "_id": {"$in": keys},
            **_past_lifetime_filter(now, ended_before),
        }
        update = {"$min": {"expires_at": now, "purge_at": now}}
        self._call(lambda: self.collection.update_many(query, update), retry=True)

    # -- operators ---------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """For operators (``flask single-session stats``), not for requests: the
        counts scan the collection, so they get a minute, not the request timeout
        (once a cheap first call, with the usual timeout, has found the server)."""
        c = self.collection
        self._call(c.index_information, retry=True, timeout=self.timeout)
        slow = max(self.timeout, 60.0)
        total = self._call(lambda: c.count_documents({}), retry=True, timeout=slow)
        # (A tombstone has no user_id; a malformed one that kept it counts as
        # a tombstone only, so that the counts add up.)
        bound_query = {"user_id": {"$exists": True}, "revoked": {"$exists": False}}
        bound = self._call(
            lambda: c.count_documents(bound_query),
            retry=True,
            timeout=slow,
        )
        tombstones = self._call(
            lambda: c.count_documents({"revoked": {"$exists": True}}),
            retry=True,
            timeout=slow,
        )
        return {
            "sessions": total - tombstones,
            "bound": bound,
            "anonymous": total - tombstones - bound,
            "tombstones": tombstones,
        }


__all__ = [
    "SessionStore",
    "RequestBudget",
    "DuplicateKeyError",
    "INDEXES",
    "SLOT_INDEX",
]
