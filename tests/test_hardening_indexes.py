"""An index that is in the way (same name, other options or keys; or the same
keys and options under another name) is a clear IndexConflict that says what to drop, on
the first write, from the CLI, and from ensure_indexes; never silently ignored."""

from __future__ import annotations

import pytest

from conftest import make_app
from conftest import stored
from single_session import IndexConflict
from single_session.store import INDEXES

CONFLICTS = {
    "same name, other keys": (
        [("user_id", 1)],
        {"name": "single_session_user", "sparse": True},
        "single_session_user",
    ),
    "same name, other options": (
        [("purge_at", 1)],
        {"name": "single_session_purge", "expireAfterSeconds": 3600},
        "single_session_purge",
    ),
    "same name, other uniqueness": (
        [("remember.series", 1)],
        {"name": "single_session_remember", "sparse": True, "unique": True},
        "single_session_remember",
    ),
    "same name and keys, sparse rather than partial (0.1.0.dev)": (
        [("user_id", 1), ("login_at", 1), ("_id", 1)],
        {"name": "single_session_user", "sparse": True},
        "single_session_user",
    ),
    "same keys, other name": (
        [("purge_at", 1)],
        {"name": "purge_ttl", "expireAfterSeconds": 0},
        "purge_ttl",
    ),
}


@pytest.mark.parametrize(
    "keys,options,to_drop", CONFLICTS.values(), ids=CONFLICTS.keys()
)
def test_conflicting_index_is_a_clear_error(raw_collection, keys, options, to_drop):
    raw_collection.create_index(keys, **options)
    app = make_app(raw_collection)

    with pytest.raises(IndexConflict) as info:
        app.test_client().post("/set/cart", json=["apple"])

    message = str(info.value)
    assert f"dropIndex({to_drop!r})" in message
    assert "create-indexes" in message
    assert stored(raw_collection) == []
    # It shows the index the library needs and, apart, the one that is there.
    (name, wanted_keys, wanted_options) = next(
        index for index in INDEXES if index[1][0] == keys[0]
    )
    needed, there = message.split(" single_session needs ", 1)[1].split("; the one")
    assert needed.startswith(f"({{'key': {wanted_keys!r}")
    assert all(f"{k!r}: {v!r}" in needed for k, v in wanted_options.items())
    assert all(f"{k!r}: {v!r}" in there for k, v in options.items() if k != "name")


@pytest.mark.parametrize(
    "keys,options,to_drop", CONFLICTS.values(), ids=CONFLICTS.keys()
)
def test_cli_create_indexes_reports_the_conflict(
    raw_collection, keys, options, to_drop
):
    raw_collection.create_index(keys, **options)
    app = make_app(raw_collection)

    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])

    # One line for the operator, naming the index to drop; no traceback.
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert f"dropIndex({to_drop!r})" in result.output
    assert "Traceback" not in result.output


def test_matching_indexes_are_accepted_and_created_once(raw_collection, collection):
    for name, keys, options in INDEXES:
        raw_collection.create_index(keys, name=name, **options)
    app = make_app(collection)
    client = app.test_client()

    assert client.post("/set/cart", json=["apple"]).status_code == 200
    assert client.post("/set/cart", json=["pear"]).status_code == 200

    # Already there as they should be: checked, not sent again.
    assert collection.ops(exclude=()).count("create_index") == 0
    names = set(raw_collection.index_information())
    assert {name for name, _, _ in INDEXES} <= names


@pytest.mark.parametrize(
    "keys,options",
    [
        ([("user_id", 1), ("login_at", 1), ("_id", 1)], {"name": "by_user"}),
        ([("remember.series", 1)], {"name": "by_series"}),
    ],
    ids=["not partial", "not sparse"],
)
def test_an_index_of_the_same_keys_but_another_signature_may_stay(
    raw_collection, keys, options
):
    """MongoDB 5.0 and later build an index beside one of the same keys that
    differs in its partial filter, uniqueness or sparseness."""
    raw_collection.create_index(keys, **options)
    app = make_app(raw_collection)
    client = app.test_client()

    assert client.post("/login/alice?remember=1").status_code == 200
    assert client.get("/me").json["user"] == "alice"
    names = set(raw_collection.index_information())
    assert {options["name"], *(name for name, _, _ in INDEXES)} <= names


class DefaultCollation:
    """A collection created with a default collation, as MongoDB lists its
    indexes: each inherits the collection's collation, the library's too
    (mongomock leaves it out)."""

    COLLATION = {"locale": "en", "strength": 2, "version": "57.1"}

    def __init__(self, inner):
        self._inner = inner

    def with_options(self, **kwargs):
        return DefaultCollation(self._inner.with_options(**kwargs))

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def index_information(self):
        return {
            name: {**info, "collation": dict(self.COLLATION)}
            for name, info in self._inner.index_information().items()
        }


def test_indexes_of_a_collection_with_a_default_collation_are_its_own(raw_collection):
    # The second process finds the indexes the first one built, with the
    # collection's collation: they are the library's, not in its way.
    first = make_app(DefaultCollation(raw_collection))
    assert first.test_client().post("/login/alice").status_code == 200
    second = make_app(DefaultCollation(raw_collection))
    assert second.test_client().post("/login/bob").status_code == 200
    result = second.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 0, result.output


def test_after_dropping_the_conflict_it_works(raw_collection):
    raw_collection.create_index([("user_id", 1)], name="single_session_user")
    app = make_app(raw_collection)
    with pytest.raises(IndexConflict):
        app.test_client().post("/set/cart", json=["apple"])

    raw_collection.drop_index("single_session_user")

    assert app.test_client().post("/set/cart", json=["apple"]).status_code == 200
    info = raw_collection.index_information()["single_session_user"]
    (keys,) = [keys for name, keys, _ in INDEXES if name == "single_session_user"]
    assert [tuple(k) for k in info["key"]] == keys
    # Only bound sessions: a sparse compound index would hold every document
    # (each has an _id), anonymous sessions and tombstones included.
    assert info["partialFilterExpression"] == {"user_id": {"$exists": True}}
    assert "sparse" not in info


def test_cli_create_indexes_reports_duplicate_slot_keys(raw_collection):
    # The "deny" slot index was missing for a while (dropped, or a restore
    # without indexes) and two sessions took the same slot: one line saying
    # what to clear, not a traceback.
    raw_collection.insert_many(
        [{"_id": "a", "slot_key": "0:alice"}, {"_id": "b", "slot_key": "0:alice"}]
    )
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "'slot_key'" in line and "$unset" in line


# -- an index that takes long to build (a large collection) -------------------


def _slow_build():
    from pymongo.errors import ExecutionTimeout

    return ExecutionTimeout("operation exceeded time limit", 50)


def test_a_slow_index_build_does_not_fail_the_requests(raw_collection, caplog):
    # On a collection that already holds many documents, building an index
    # takes longer than SINGLE_SESSION_TIMEOUT. The sessions work without it:
    # the request goes on, the operator is told what to run, and the process
    # does not make every write wait on a build again.
    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    faulty.faults.plan("create_index", _slow_build())
    app = make_app(faulty)
    client = app.test_client()

    assert client.post("/set/cart", json=["apple"]).status_code == 200
    assert "create-indexes" in caplog.text
    assert client.get("/get/cart").json["value"] == ["apple"]
    other = app.test_client()
    assert other.post("/set/cart", json=["pear"]).status_code == 200
    assert faulty.faults.count("create_index") == 1
    assert len(stored(raw_collection)) == 2


def test_a_slow_slot_index_build_refuses_the_login(raw_collection, caplog):
    # Under "deny", admission is not safe without the unique slot index: the
    # login fails (a 503), and nothing is admitted.
    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")
    app.test_client().post("/set/cart", json=["apple"])  # the other indexes
    faulty.faults.plan("create_index", _slow_build())

    response = app.test_client().post("/login/alice")

    assert response.status_code == 503
    assert "single_session_slot" in caplog.text
    assert stored(raw_collection, user_id="alice") == []
    assert app.test_client().post("/login/alice").status_code == 200  # built now


def test_create_indexes_gives_a_build_an_hour(raw_collection):
    # The operator's command is where a long build belongs: each create_index
    # runs under pymongo.timeout of an hour, not SINGLE_SESSION_TIMEOUT.
    from pymongo import _csot

    seen = []

    class Timed:
        def __init__(self, inner):
            self._inner = inner

        def with_options(self, **kwargs):
            return Timed(self._inner.with_options(**kwargs))

        def __getattr__(self, name):
            attr = getattr(self._inner, name)
            if name != "create_index":
                return attr

            def create_index(*args, **kwargs):
                seen.append(_csot.get_timeout())
                return attr(*args, **kwargs)

            return create_index

    app = make_app(Timed(raw_collection))
    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 0, result.output
    assert seen and all(s == 3600 for s in seen)


def test_create_indexes_reports_a_build_that_took_too_long(raw_collection):
    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    faulty.faults.plan("create_index", _slow_build())
    app = make_app(faulty)
    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: The index 'single_session_user' was not built")
    assert "3600 s" in line


def test_a_connection_failure_during_a_build_is_no_slow_build(raw_collection, caplog):
    # A dropped connection is an outage like any other: the write that met it
    # fails, and the next write tries to build the indexes again (no ten
    # minutes without them).
    from pymongo.errors import AutoReconnect

    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    faulty.faults.plan(
        "create_index", AutoReconnect("connection reset"), AutoReconnect("reset")
    )
    app = make_app(faulty)
    assert app.test_client().post("/set/cart", json=["apple"]).status_code == 503
    assert "not built" not in caplog.text and "could not build" not in caplog.text
    assert app.test_client().post("/set/cart", json=["pear"]).status_code == 200
    names = set(raw_collection.index_information())
    assert {name for name, _, _ in INDEXES} <= names


def test_under_deny_a_login_waits_only_for_the_slot_index(raw_collection, caplog):
    # The slot index is what admission needs; a slow build of another index
    # is logged and left to create-indexes, as on any write.
    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    faulty.faults.plan("create_index", None, _slow_build())  # slot, then user
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")

    assert app.test_client().post("/login/alice").status_code == 200
    assert "'single_session_user'" in caplog.text
    assert "single_session_slot" in raw_collection.index_information()
