"""What "served by an index" means, for the query-shape checks.

Every filter the library sends must have an equality (or ``$in``) on ``_id`` or
on the first field of one of the indexes it creates (``user_id``,
``remember.series``, ``slot_key``), so that MongoDB finds the documents through
an index whatever the collection's size. ``tests/test_query_shapes.py`` checks
this on chosen code paths and counts operations; :class:`QueryRecorder`, put
around the collection of every store the test suite builds (see
``conftest.py``), checks it on every path any test exercises.

One exemption: ``count_documents``, which only ``flask single-session stats``
sends. It counts the whole collection (all sessions, all bound ones, all
tombstones): an operator command, run by hand and never on a request path, that
reads at least one entry per document whatever the index.
"""

from __future__ import annotations

import inspect
import sys
import typing as t

from single_session import store
from single_session.store import INDEXES
from single_session.store import SLOT_INDEX

#: Methods whose first argument is a filter.
FILTERED = {
    "count_documents",
    "delete_many",
    "delete_one",
    "find",
    "find_one",
    "find_one_and_delete",
    "find_one_and_update",
    "update_many",
    "update_one",
}
#: Methods that only set the collection up (once per process).
SETUP = {"create_index", "index_information"}
#: Every collection method that sends something to the server.
SENDS = (
    FILTERED
    | SETUP
    | {
        "aggregate",
        "bulk_write",
        "distinct",
        "estimated_document_count",
        "find_one_and_replace",
        "insert_many",
        "insert_one",
        "replace_one",
        "watch",
    }
)
#: Fields with an index whose first key they are (the TTL index on
#: ``purge_at`` only deletes; no query is meant to be served by it).
INDEXED_FIELDS = {"_id"} | {
    keys[0][0]
    for _, keys, options in [*INDEXES, SLOT_INDEX]
    if "expireAfterSeconds" not in options
}

Call = tuple[str, t.Any]


def _is_equality(value: t.Any) -> bool:
    if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
        return set(value) <= {"$eq", "$in"}
    return True


def served_by_index(query: t.Any) -> bool:
    """Whether MongoDB can find the documents ``query`` matches through an index
    the library creates: an equality or ``$in`` on an indexed field, at the top
    level, in one clause of an ``$and``, or in every branch of an ``$or``."""
    if not isinstance(query, dict):
        return False
    for field, value in query.items():
        if field in INDEXED_FIELDS and _is_equality(value):
            return True
    if any(served_by_index(clause) for clause in query.get("$and", [])):
        return True
    branches = query.get("$or")
    return bool(branches) and all(served_by_index(b) for b in branches)


def unserved(log: t.Iterable[Call]) -> list[Call]:
    """The calls in ``log`` (method, first argument) that are not served by an
    index."""
    bad = []
    for method, first in log:
        if method in SETUP:
            continue
        if method == "insert_one":
            # An insert is checked against the unique indexes by _id and by key.
            if not (isinstance(first, dict) and "_id" in first):
                bad.append((method, first))
        elif method not in FILTERED or not served_by_index(first):
            bad.append((method, first))
    return bad


_STORE_FILE = store.__file__


def _by_stats_command() -> bool:
    """Whether the current call comes from ``SessionStore.counts`` (the stats
    command's counts, exempt)."""
    frame = sys._getframe(2)
    for _ in range(4):  # the store's lambda, _call, counts
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "counts" and code.co_filename == _STORE_FILE:
            return True
        frame = frame.f_back
    return False


class QueryRecorder:
    """Wraps the collection a store talks to and records, in ``calls``, every
    call that sends something to the server: the library's calls, and only
    those (tests read and tamper with the collection they passed in), but for
    the stats command's counts."""

    def __init__(self, inner: t.Any, calls: list[Call]) -> None:
        self._inner = inner
        self.calls = calls

    def with_options(self, **kwargs: t.Any) -> QueryRecorder:
        return QueryRecorder(self._inner.with_options(**kwargs), self.calls)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name not in SENDS:
            if inspect.ismethod(attr):
                # A method this module does not know may send a query it cannot
                # check: record it, and the check fails until it is classified.
                self.calls.append((name, None))
            return attr
        calls = self.calls

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if not (name == "count_documents" and _by_stats_command()):
                first = args[0] if args else kwargs.get("filter")
                # A copy: the library takes the _id off a document whose
                # insert failed, so as to give it another.
                calls.append((name, dict(first) if isinstance(first, dict) else first))
            return attr(*args, **kwargs)

        return call
