"""Fork safety: an app configured with SINGLE_SESSION_MONGODB_URI makes its
pymongo client lazily, in each process. A worker forked from a parent that has
already used the database (a pre-fork server) builds its own client, so pymongo
never warns "MongoClient opened before fork" (warnings are errors here)."""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime
from datetime import timezone

import pymongo
import pytest

from conftest import make_app
from faults import closed_port
from single_session import SessionStoreUnavailable
from single_session.store import SessionStore

KEY = "0" * 64


def in_child(fn):
    """Run ``fn`` in a forked child with warnings as errors; return what it
    returned (JSON), or raise if it failed."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (pymongo's
        # monitors are some); what is tested is pymongo's own warning, in the child.
        warnings.filterwarnings("ignore", "This process .* fork", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            warnings.simplefilter("error")
            try:
                result = {"ok": fn()}
            except BaseException as e:  # reported to the parent
                result = {"error": f"{type(e).__name__}: {e}"}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


@pytest.fixture
def uri_app():
    uri = f"mongodb://127.0.0.1:{closed_port()}/forktest"
    app = make_app(None, SINGLE_SESSION_MONGODB_URI=uri, SINGLE_SESSION_TIMEOUT=0.2)
    yield app
    store = app.extensions["single_session"].store
    if store._collection is not None:
        store._collection.database.client.close()


def use(collection_or_store):
    try:
        if isinstance(collection_or_store, SessionStore):
            collection_or_store.load(KEY, datetime.now(timezone.utc))
        else:
            with pymongo.timeout(0.2):
                collection_or_store.find_one({})
    except (SessionStoreUnavailable, pymongo.errors.PyMongoError):
        pass  # nothing listens there; what matters is the client was used


def test_a_forked_worker_builds_its_own_client(uri_app):
    store = uri_app.extensions["single_session"].store
    use(store)  # the parent opens its client (monitor threads, a pool)
    parent_collection = store.collection
    parent_client = parent_collection.database.client

    def child():
        use(store)  # would warn (an error here) if it reused the parent's client
        mine = store.collection
        return {
            "own collection": mine is not parent_collection,
            "own client": mine.database.client is not parent_client,
            "same database": mine.full_name == parent_collection.full_name,
        }

    result = in_child(child)

    assert result == {
        "ok": {"own collection": True, "own client": True, "same database": True}
    }
    # The parent keeps its own.
    assert store.collection is parent_collection


def test_the_child_would_notice_a_shared_client(uri_app):
    """The check above can fail: a client opened in the parent and used in the
    child does raise pymongo's warning there."""
    store = uri_app.extensions["single_session"].store
    use(store)
    parent_collection = store.collection

    result = in_child(lambda: use(parent_collection))

    assert "error" in result
    assert "opened before fork" in result["error"]


def test_the_parent_builds_no_client_before_it_is_needed(uri_app):
    """init_app makes no client, so a pre-fork server that never touches the
    database before forking hands its workers nothing to share."""
    store = uri_app.extensions["single_session"].store
    assert store._collection is None
    assert uri_app.test_client().get("/plain").status_code == 200
    assert store._collection is None
