"""Fixtures: an app with Flask-Login and single_session on a fresh collection.

The collection is mongomock's by default, or a real MongoDB server's when
``SINGLE_SESSION_TEST_MONGODB_URI`` is set (each test on its own collection,
dropped afterwards). Tests talk to it only through the pymongo API.
"""

from __future__ import annotations

import os
import threading
import time
import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask_login import current_user
from flask_login import login_fresh
from flask_login import login_required
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin

from faults import METHODS
from indexes import QueryRecorder
from indexes import unserved
from single_session import LoginDenied
from single_session import SingleSession
from single_session.store import SessionStore

MONGODB_URI = os.environ.get("SINGLE_SESSION_TEST_MONGODB_URI")


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


USERS = {name: User(name) for name in ("alice", "bob", "carol", "admin")}


class Recorder:
    """Collects what a blinker signal sends."""

    def __init__(self, signal: t.Any, sender: t.Any) -> None:
        self.calls: list[dict[str, t.Any]] = []
        signal.connect(self._receive, sender)
        self._signal = signal

    def _receive(self, sender: t.Any, **kwargs: t.Any) -> None:
        self.calls.append(kwargs)

    def disconnect(self) -> None:
        self._signal.disconnect(self._receive)


@pytest.fixture(scope="session", autouse=True)
def library_calls() -> t.Iterator[list[tuple[str, t.Any]]]:
    """Every call the library makes to its collection, in any test or fixture of
    this process (a store built by a module-scoped fixture too): each store talks
    to its collection through a recorder (see ``indexes.py``)."""
    calls: list[tuple[str, t.Any]] = []
    init = SessionStore.__init__

    def recording_init(
        self: SessionStore,
        connect: t.Callable[[], t.Any],
        *args: t.Any,
        **kwargs: t.Any,
    ) -> None:
        init(self, lambda: QueryRecorder(connect(), calls), *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SessionStore, "__init__", recording_init)
        yield calls
    # What fixtures torn down after the last test sent.
    _assert_indexed(calls)


@pytest.fixture(autouse=True)
def every_query_is_indexed(
    library_calls: list[tuple[str, t.Any]],
) -> t.Iterator[list[tuple[str, t.Any]]]:
    """Every filter the library sends is served by one of its indexes, on every
    code path the test suite exercises (issue 6): after each test, the calls
    made since the previous check (by the test and by the fixtures set up for
    it) are checked."""
    yield library_calls
    _assert_indexed(library_calls)


def _assert_indexed(calls: list[tuple[str, t.Any]]) -> None:
    bad = unserved(calls)
    calls.clear()
    assert not bad, f"the library sent queries no index of its own serves: {bad}"


class CountingCollection:
    """Wraps a collection and records every call made through its API."""

    #: What the library calls, but the index check made once per process.
    COUNTED = METHODS - {"index_information"}

    def __init__(
        self, inner: t.Any, log: list[tuple[str, t.Any]] | None = None
    ) -> None:
        self._inner = inner
        self.log: list[tuple[str, t.Any]] = [] if log is None else log

    def with_options(self, **kwargs: t.Any) -> CountingCollection:
        return CountingCollection(self._inner.with_options(**kwargs), self.log)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name not in self.COUNTED:
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.log.append((name, args[0] if args else kwargs.get("filter")))
            return attr(*args, **kwargs)

        return call

    def ops(self, exclude: tuple[str, ...] = ("create_index",)) -> list[str]:
        return [name for name, _ in self.log if name not in exclude]

    def reset(self) -> None:
        self.log.clear()


class UpdateRecorder:
    """Wraps a collection and keeps every ``update_one`` the library sends
    (filter and update), to check what MongoDB would be sent."""

    def __init__(self, inner: t.Any, updates: list[dict[str, t.Any]]) -> None:
        self._inner = inner
        self.updates = updates

    def with_options(self, **kwargs: t.Any) -> UpdateRecorder:
        return UpdateRecorder(self._inner.with_options(**kwargs), self.updates)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name != "update_one":
            return attr

        def update_one(
            query: t.Any, update: t.Any, *args: t.Any, **kwargs: t.Any
        ) -> t.Any:
            self.updates.append({"q": query, "u": update})
            return attr(query, update, *args, **kwargs)

        return update_one


@pytest.fixture
def raw_collection() -> t.Iterator[t.Any]:
    name = f"sessions_{uuid.uuid4().hex[:12]}"
    if MONGODB_URI:
        import pymongo

        client: t.Any = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
        db = client.get_default_database("single_session_test")
    else:
        import mongomock

        client = mongomock.MongoClient()
        db = client.single_session_test
    collection = db[name]
    yield collection
    collection.drop()
    client.close()


@pytest.fixture
def collection(raw_collection: t.Any) -> CountingCollection:
    return CountingCollection(raw_collection)


class Clock:
    """A clock the tests move forward. Each reading is at least a millisecond
    after the previous one (as it would be between two real requests), so
    logins made one after another never share a login time."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._last = datetime.min.replace(tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = datetime.now(timezone.utc) + self.offset
            now = max(now, self._last + timedelta(milliseconds=1))
            self._last = now
            return now

    def advance(self, **kwargs: float) -> None:
        self.offset += timedelta(**kwargs)


def make_app(
    collection: t.Any, *, cookie_session: bool = False, **config: t.Any
) -> Flask:
    """The test app. With ``cookie_session``, the same app on Flask's own cookie
    session, to compare behaviour with."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True, **config)
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return USERS.get(user_id)

    if not cookie_session:
        ext = SingleSession(app, collection=collection)
        app.extensions["single_session"].clock = Clock()
        app.extensions["test_ext"] = ext

    @app.post("/login/<name>")
    def login(name: str) -> t.Any:
        remember = request.args.get("remember") == "1"
        try:
            login_user(USERS[name], remember=remember)
        except LoginDenied as e:
            return jsonify(denied=str(e), user=current_user.get_id()), 409
        return jsonify(user=current_user.get_id())

    @app.post("/logout")
    def logout() -> t.Any:
        logout_user()
        return jsonify(user=None)

    @app.get("/me")
    def me() -> t.Any:
        return jsonify(
            user=current_user.get_id() if current_user.is_authenticated else None,
            fresh=login_fresh(),
        )

    @app.get("/private")
    @login_required
    def private() -> t.Any:
        return jsonify(user=current_user.get_id())

    @app.post("/set/<key>")
    def set_value(key: str) -> t.Any:
        session[key] = request.get_json()
        return jsonify(ok=True)

    @app.get("/get/<key>")
    def get_value(key: str) -> t.Any:
        return jsonify(value=session.get(key))

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    return app


@pytest.fixture
def app(collection: CountingCollection) -> Flask:
    return make_app(collection)


@pytest.fixture
def clock(app: Flask) -> Clock:
    return t.cast(Clock, app.extensions["single_session"].clock)


def stored(collection: t.Any, **query: t.Any) -> list[dict[str, t.Any]]:
    """The stored documents (read straight from the collection)."""
    inner = getattr(collection, "_inner", collection)
    return list(inner.find(query))


def run_together(*fns: t.Callable[[], t.Any], timeout: float = 20) -> list[t.Any]:
    """Run ``fns`` in threads released together by a barrier; return results
    (or exceptions) in order."""
    barrier = threading.Barrier(len(fns))
    results: list[t.Any] = [None] * len(fns)

    def run(i: int, fn: t.Callable[[], t.Any]) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as e:  # reported to the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), "a thread did not finish in time"
    return results
