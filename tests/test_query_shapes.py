"""Every query the library sends is served by an index it creates, and the
number of queries per request is what the README promises (promise 1 and 2, and
issue 6's targets).

Each code path below runs on a counting collection; every filter it records must
have an equality (or ``$in``) on ``_id`` or on the first field of one of the
indexes in :data:`single_session.store.INDEXES` (see ``indexes.py`` for the
check). A test also checks that the paths call every method of
:class:`~single_session.store.SessionStore` that sends a query: a new store
method needs a path here. Beyond these paths, ``conftest.py`` runs the same check
after every test of the suite, on every call the library made in it.

One exemption: ``flask single-session stats`` counts the whole collection
(``count_documents`` over all sessions, all bound ones, all tombstones). It is an
operator command, run by hand and never on a request path; a count of every
document reads at least one entry per document whatever the index, so no index
would make it cheaper than the collection is large.

Operation counts are checked on the collection API, not on time: no test here
measures time (see ``python -m benchmarks`` for that).
"""

from __future__ import annotations

import typing as t
from datetime import timedelta

import pytest
from flask import g
from flask import session
from flask_login import current_user
from pymongo.errors import AutoReconnect

from conftest import CountingCollection
from conftest import make_app
from conftest import stored
from conftest import USERS
from faults import Faults
from faults import FaultyCollection
from indexes import INDEXED_FIELDS
from indexes import SENDS
from indexes import served_by_index
from indexes import SETUP
from indexes import unserved
from single_session import logout_everywhere
from single_session import SessionStoreUnavailable
from single_session.store import SessionStore

#: The store methods that send a query (the rest is plumbing).
STORE_QUERIES = {
    name
    for name, value in vars(SessionStore).items()
    if callable(value) and not name.startswith("_") and name != "ensure_indexes"
}
#: The stats command's counts: exempt (see the module docstring).
STATS_COUNTS = ("counts",)


@pytest.fixture(autouse=True)
def count_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the counting collection record every method that reaches the server,
    not only the ones the library is known to use."""
    # (The index check is set-up, made once per process: not counted.)
    monkeypatch.setattr(CountingCollection, "COUNTED", SENDS - {"index_information"})


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the SessionStore methods called, in order."""
    calls: list[str] = []
    for name in STORE_QUERIES:
        method = getattr(SessionStore, name)

        def spy(
            self: SessionStore,
            *args: t.Any,
            __m: t.Any = method,
            __n: str = name,
            **kwargs: t.Any,
        ) -> t.Any:
            calls.append(__n)
            return __m(self, *args, **kwargs)

        monkeypatch.setattr(SessionStore, name, spy)
    return calls


def test_the_indexed_fields_are_the_documented_ones() -> None:
    assert INDEXED_FIELDS == {"_id", "user_id", "remember.series", "slot_key"}


def test_the_check_itself() -> None:
    assert served_by_index({"_id": "k", "$or": [{"revoked": {"$exists": True}}]})
    assert served_by_index({"user_id": "alice", "_id": {"$ne": "k"}})
    assert served_by_index({"user_id": "alice", "_id": {"$in": ["a", "b"]}})
    assert served_by_index({"$or": [{"_id": "a"}, {"slot_key": "0:alice"}]})
    assert served_by_index({"remember.series": "s", "revoked": {"$exists": False}})
    assert not served_by_index({})
    assert not served_by_index({"id": "session:abc"})  # Flask-Session's lookup
    assert not served_by_index({"user_id": {"$exists": True}})
    assert not served_by_index({"handle": "h", "purge_at": {"$gt": 0}})
    assert not served_by_index({"$or": [{"_id": "a"}, {"handle": "h"}]})


# -- the code paths -----------------------------------------------------------

Path = t.Callable[[CountingCollection], None]
PATHS: dict[str, Path] = {}


def path(fn: Path) -> Path:
    PATHS[fn.__name__] = fn
    return fn


def _app(collection: t.Any, **config: t.Any) -> t.Any:
    app = make_app(collection, **config)

    @app.post("/pop/<key>")
    def pop_value(key: str) -> t.Any:
        session.pop(key, None)
        return {"ok": True}

    @app.post("/clear")
    def clear() -> t.Any:
        session.clear()
        return {"ok": True}

    @app.post("/others")
    def others() -> t.Any:
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    @app.post("/everywhere-then-write")
    def everywhere_then_write() -> t.Any:
        ended = logout_everywhere(current_user)
        session["after"] = True
        return {"ended": ended}

    @app.post("/light")
    def light() -> t.Any:
        session["prefs"]["theme"] = "light"
        session.modified = True  # changed in place: Flask cannot see it
        return {"ok": True}

    @app.post("/swap")
    def swap() -> t.Any:
        g.original = session["name"]
        session["name"] = "Bob"
        return {"ok": True}

    def put_back(response: t.Any) -> t.Any:
        if "original" in g:
            session["name"] = g.original
        return response

    # Runs after the library's own after_request function, which has written
    # the session by then (Flask runs them last registered first).
    app.after_request_funcs.setdefault(None, []).insert(0, put_back)

    @app.get("/devices")
    def devices() -> t.Any:
        ext = app.extensions["test_ext"]
        return {"handles": [s.handle for s in ext.sessions_of(current_user)]}

    @app.post("/revoke/<handle>")
    def revoke(handle: str) -> t.Any:
        return {"ok": app.extensions["test_ext"].revoke(current_user, handle)}

    return app


def _clock(app: t.Any) -> t.Any:
    return app.extensions["single_session"].clock


def _who(client: t.Any) -> t.Any:
    return client.get("/me").json["user"]


@path
def anonymous_session(collection: CountingCollection) -> None:
    c = _app(collection).test_client()
    c.post("/set/cart", json=[1])  # insert
    c.post("/set/cart", json=[1, 2])  # $set one field
    c.post("/set/note", json="x")
    c.post("/pop/note")  # $unset one field
    assert c.get("/get/cart").json == {"value": [1, 2]}
    c.post("/clear")  # emptied: deleted
    assert stored(collection) == []


@path
def ordinary_read_and_touch(collection: CountingCollection) -> None:
    app = _app(collection)
    c = app.test_client()
    c.post("/login/alice")
    assert _who(c) == "alice"
    _clock(app).advance(seconds=61)
    assert _who(c) == "alice"  # touch: last seen and expiry move


@path
def login_evicts_other_devices(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_MAX_SESSIONS=2)
    phone, tablet, laptop = (app.test_client() for _ in range(3))
    phone.post("/login/alice")
    tablet.post("/login/alice")
    laptop.post("/set/cart", json=[1])  # an anonymous session first
    laptop.post("/login/alice")  # moves the cart, evicts the phone
    laptop.post("/login/alice")  # the same user again on the same device
    assert _who(phone) is None  # the tombstone: told why
    assert _who(tablet) == "alice"
    assert laptop.get("/get/cart").json == {"value": [1]}


@path
def deny_mode(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    first, second = app.test_client(), app.test_client()
    first.post("/login/alice")
    assert second.post("/login/alice").status_code == 409  # refused
    # The first session expires; its slot is freed on the next login.
    _clock(app).advance(days=32)
    assert second.post("/login/alice").status_code == 200


@path
def lowered_lifetime(collection: CountingCollection) -> None:
    # Sessions past a lifetime lowered since their last write: a login ends
    # them for good (evict), or frees their slot (deny).
    for on_limit in ("evict", "deny"):
        app = _app(collection, SINGLE_SESSION_ON_LIMIT=on_limit)
        laptop, phone = app.test_client(), app.test_client()
        laptop.post("/login/alice")
        _clock(app).advance(hours=2)
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
        assert phone.post("/login/alice").status_code == 200
        collection._inner.delete_many({})


def _fail_next_insert(app: t.Any) -> None:
    """The store's next insert fails as a database that is down would."""
    store = app.extensions["single_session"].store
    insert = store.insert

    def fail_once(document: t.Any) -> None:
        store.insert = insert
        raise SessionStoreUnavailable()

    store.insert = fail_once


@path
def remember_restore_failing_half_way(collection: CountingCollection) -> None:
    app = _app(collection)
    c = app.test_client()
    c.post("/login/alice?remember=1")
    c.delete_cookie("session")
    _fail_next_insert(app)
    assert c.get("/me").status_code == 503  # the taken session is put back
    assert _who(c) == "alice"


@path
def telling_a_revoked_device_that_fails(collection: CountingCollection) -> None:
    # The request that is told why fails (a 503 on its write): it releases the
    # telling, and the next request is told.
    app = _app(collection)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    _fail_next_insert(app)
    assert phone.post("/set/cart", json=["apple"]).status_code == 503
    assert phone.post("/set/cart", json=["apple"]).status_code == 200


@path
def remember_me(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    c = app.test_client()
    c.post("/login/alice?remember=1")
    copied = c.get_cookie("remember_token").value
    c.delete_cookie("session")  # the browser restarts
    assert _who(c) == "alice"  # restored from the remember cookie
    # The token it held was rotated; a copy used much later is theft.
    _clock(app).advance(seconds=120)
    thief = app.test_client()
    thief.set_cookie("remember_token", copied)
    assert _who(thief) is None
    c.delete_cookie("session")  # the browser restarts: its remember-me alone
    assert _who(c) is None  # the device was revoked with its token: told why
    c.post("/login/alice?remember=1")
    c.post("/logout")  # a remembered login ends


@path
def remember_me_of_a_user_who_no_longer_loads(collection: CountingCollection) -> None:
    app = _app(collection)
    c = app.test_client()
    c.post("/login/carol?remember=1")
    c.delete_cookie("session")  # the browser restarts
    carol = USERS.pop("carol")  # while the account is disabled
    try:
        assert _who(c) is None
    finally:
        USERS["carol"] = carol


@path
def logout(collection: CountingCollection) -> None:
    c = _app(collection).test_client()
    c.post("/login/alice")
    c.post("/set/cart", json=[1])
    c.post("/logout")  # the bound session goes, the cart stays, unbound
    assert _who(c) is None


@path
def logout_everywhere_and_others(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    phone, tablet, laptop = (app.test_client() for _ in range(3))
    for device in (phone, tablet, laptop):
        device.post("/login/alice")
    assert laptop.post("/others").json == {"ended": 2}  # and a fresh id here
    assert _who(laptop) == "alice"
    with app.app_context():
        assert logout_everywhere("alice") == 1
    phone.post("/login/alice")
    assert phone.post("/everywhere-then-write").json == {"ended": 1}
    assert _who(phone) is None  # the write did not bring it back


@path
def sessions_of_and_revoke(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    handles = laptop.get("/devices").json["handles"]
    assert len(handles) == 2
    assert laptop.post(f"/revoke/{handles[1]}").json == {"ok": True}
    assert _who(phone) is None


@path
def expired_unknown_and_malformed_cookies(collection: CountingCollection) -> None:
    app = _app(collection)
    raw = collection._inner
    c = app.test_client()
    c.post("/login/alice")
    _clock(app).advance(days=32)
    assert _who(c) is None  # expired: treated as absent, and discarded
    c.post("/set/cart", json=[1])
    raw.delete_many({})
    assert c.get("/get/cart").json == {"value": None}  # unknown id
    c.post("/set/cart", json=[1])
    raw.update_many({}, {"$set": {"data": "not a dict"}})
    assert c.get("/get/cart").json == {"value": None}  # malformed: removed
    c.set_cookie("session", "not.signed")
    before = len(collection.log)
    assert c.get("/get/cart").json == {"value": None}
    assert collection.log[before:] == []  # a bad signature costs no query


@path
def insert_whose_reply_was_lost(collection: CountingCollection) -> None:
    faults = Faults()
    counting = CountingCollection(
        FaultyCollection(collection._inner, faults), collection.log
    )
    app = _app(counting)
    c = app.test_client()
    c.post("/set/cart", json=[1])  # creates the indexes first
    faults.plan("insert_one", ("after", AutoReconnect("reply lost")))
    c2 = app.test_client()
    assert c2.post("/set/cart", json=[2]).status_code == 200  # found by _id
    assert c2.get("/get/cart").json == {"value": [2]}


@path
def cli_commands(collection: CountingCollection) -> None:
    app = _app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    app.test_client().post("/login/alice")
    app.test_client().post("/login/alice")
    runner = app.test_cli_runner()
    for args in (
        ["create-indexes"],
        ["list", "alice"],
        ["logout-everywhere", "alice"],
        ["list", "alice"],
    ):
        result = runner.invoke(args=["single-session", *args])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", sorted(PATHS))
def test_every_query_is_served_by_an_index(
    name: str, collection: CountingCollection
) -> None:
    PATHS[name](collection)
    assert collection.ops(), "the path sent nothing: it tests nothing"
    assert unserved(collection.log) == []


def test_the_paths_call_every_store_query(
    collection: CountingCollection, store_calls: list[str]
) -> None:
    for name in sorted(PATHS):
        PATHS[name](collection)
        collection._inner.delete_many({})
    missing = STORE_QUERIES - set(STATS_COUNTS) - set(store_calls)
    assert not missing, f"add a path that calls SessionStore.{sorted(missing)}"


def test_stats_is_the_only_exemption(
    collection: CountingCollection, store_calls: list[str]
) -> None:
    app = _app(collection)
    app.test_client().post("/login/alice")
    collection.reset()
    store_calls.clear()
    result = app.test_cli_runner().invoke(args=["single-session", "stats"])
    assert result.exit_code == 0, result.output
    assert set(store_calls) == set(STATS_COUNTS)
    # Counts over the whole collection, by design (see the module docstring).
    assert {method for method, _ in collection.log} <= {
        "count_documents",
        "estimated_document_count",
    }


def test_the_suite_wide_check_sees_every_library_call_but_the_stats_counts(
    collection: CountingCollection, every_query_is_indexed: list[tuple[str, t.Any]]
) -> None:
    app = _app(collection)
    app.test_client().post("/login/alice")
    client = app.test_client()
    client.post("/login/alice")  # evicts the first device
    client.post("/set/cart", json=[1])
    client.post("/logout")
    recorded = [m for m, _ in every_query_is_indexed if m not in SETUP]
    assert recorded == collection.ops(), "the recorder missed a call"
    assert {"insert_one", "find", "update_many", "find_one_and_delete"} <= set(recorded)
    assert unserved(every_query_is_indexed) == []

    every_query_is_indexed.clear()
    result = app.test_cli_runner().invoke(args=["single-session", "stats"])
    assert result.exit_code == 0, result.output
    # The counts are exempt (see the module docstring); the first call, which
    # finds the server, lists the indexes.
    assert every_query_is_indexed == [("index_information", None)]

    # What a test sends itself is not the library's: not recorded.
    every_query_is_indexed.clear()
    collection.find_one({"handle": "not indexed"})
    assert every_query_is_indexed == []


# -- how many operations ------------------------------------------------------


def test_nothing_for_cookieless_requests(
    app: t.Any, collection: CountingCollection
) -> None:
    client = app.test_client()
    for i in range(1000):
        response = client.get(("/me", "/plain", "/get/cart", "/private")[i % 4])
        assert "Set-Cookie" not in response.headers
        assert client.get_cookie("session") is None
    assert collection.log == []
    assert stored(collection) == []


def test_one_query_for_an_ordinary_authenticated_request(
    app: t.Any, collection: CountingCollection, clock: t.Any
) -> None:
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/cart", json=[1])
    for _ in range(20):
        collection.reset()
        clock.advance(seconds=2)  # well within the 60 s touch interval
        assert client.get("/get/cart").json == {"value": [1]}
        assert _who(client) == "alice"
        assert collection.ops() == ["find_one", "find_one"]
    # Once the touch interval has passed, one write more.
    collection.reset()
    clock.advance(seconds=61)
    assert _who(client) == "alice"
    assert collection.ops() == ["find_one", "update_one"]


def _with_sessions(collection: CountingCollection, k: int) -> t.Any:
    """An app whose user alice already has ``k`` live sessions, then limited to one."""
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    for _ in range(k):
        app.test_client().post("/login/alice")
    assert len(stored(collection, user_id="alice")) == k
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1
    return app


@pytest.mark.parametrize("k", [1, 10, 100])
def test_login_costs_the_same_whatever_the_number_of_sessions(
    collection: CountingCollection, k: int
) -> None:
    app = _with_sessions(collection, k)
    client = app.test_client()
    collection.reset()
    assert client.post("/login/alice").json == {"user": "alice"}
    assert collection.ops() == ["insert_one", "find", "update_many"]
    assert len(stored(collection, user_id="alice")) == 1


@pytest.mark.parametrize("k", [1, 10, 100])
def test_logout_everywhere_costs_the_same_whatever_the_number_of_sessions(
    collection: CountingCollection, k: int
) -> None:
    app = _with_sessions(collection, k)
    collection.reset()
    with app.app_context():
        assert logout_everywhere("alice") == k
    assert collection.ops() == ["update_many"]
    assert stored(collection, user_id="alice") == []


def test_an_expired_cookie_costs_a_read_and_a_cleanup(
    app: t.Any, collection: CountingCollection, clock: t.Any
) -> None:
    client = app.test_client()
    client.post("/login/alice")
    clock.advance(days=32)
    collection.reset()
    assert _who(client) is None
    assert collection.ops() == ["find_one", "delete_one"]
    assert unserved(collection.log) == []


def test_idle_lifetime_is_what_the_paths_assume(app: t.Any) -> None:
    # The paths above expire sessions by moving the clock 32 days.
    assert app.permanent_session_lifetime <= timedelta(days=31)


# -- what a write sends --------------------------------------------------------

Sent = list[tuple[dict[str, t.Any], dict[str, t.Any]]]
EXPIRY_FIELDS = {"seen_at", "expires_at", "purge_at"}


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """The ``$set`` and ``$unset`` of every update of a live session."""
    sent: Sent = []
    update_live = SessionStore.update_live

    def spy(
        self: SessionStore,
        key: str,
        now: t.Any,
        set_: t.Any,
        unset: t.Any,
        *args: t.Any,
    ) -> bool:
        sent.append((dict(set_), dict(unset)))
        return update_live(self, key, now, set_, unset, *args)

    monkeypatch.setattr(SessionStore, "update_live", spy)
    return sent


def _logged_in_with_data(collection: CountingCollection) -> tuple[t.Any, t.Any]:
    app = _app(collection)
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/name", json="Alice")
    client.post("/set/prefs", json={"theme": "dark"})
    return app, client


def test_a_write_sends_only_the_keys_that_changed(
    collection: CountingCollection, updates: Sent
) -> None:
    _, client = _logged_in_with_data(collection)
    updates.clear()
    client.post("/set/cart", json=[1])
    client.post("/pop/name")
    (set_, unset), (set2, unset2) = updates
    assert set(set_) == {"data.cart"} | EXPIRY_FIELDS and unset == {}
    assert set_["data.cart"] == "[1]"
    assert set(set2) == EXPIRY_FIELDS and unset2 == {"data.name": ""}


def test_a_value_changed_in_place_is_written(
    collection: CountingCollection, updates: Sent
) -> None:
    _, client = _logged_in_with_data(collection)
    updates.clear()
    client.post("/light")
    ((set_, _),) = updates
    assert set_["data.prefs"] == '{"theme":"light"}'
    assert client.get("/get/prefs").json == {"value": {"theme": "light"}}


def test_a_value_set_back_after_the_first_write_is_written_back(
    collection: CountingCollection,
) -> None:
    """The session is written before save_session; an after_request function
    that runs later and puts back the very object that was loaded must see it
    stored as it was, not as the first write left it."""
    _, client = _logged_in_with_data(collection)
    client.post("/swap")
    assert client.get("/get/name").json == {"value": "Alice"}
    (document,) = stored(collection, user_id="alice")
    assert document["data"]["name"] == '"Alice"'
