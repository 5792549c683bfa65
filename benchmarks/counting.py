"""A collection wrapper that counts and times what the code under test asks of it.

Only calls that go through the wrapper are counted, so the benchmark's own set-up
(creating users' sessions, clearing a collection) uses the raw collection and is
not counted. Time spent inside the collection, iteration of returned cursors
included, is added up so that a request's time can be split into "in the store"
and "everything else" (the session library, Flask, Flask-Login, the test client).
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

#: The collection methods that send something to the database.
COUNTED = frozenset(
    {
        "aggregate",
        "bulk_write",
        "count_documents",
        "create_index",
        "delete_many",
        "delete_one",
        "distinct",
        "estimated_document_count",
        "find",
        "find_one",
        "find_one_and_delete",
        "find_one_and_replace",
        "find_one_and_update",
        "insert_many",
        "insert_one",
        "remove",
        "replace_one",
        "update",
        "update_many",
        "update_one",
    }
)

#: Calls the benchmark reports apart: they happen once per process, not per request.
SETUP_OPS = frozenset({"create_index"})


@dataclass
class Op:
    name: str
    filter: t.Any
    #: Documents a ``find`` returned to the caller (``None`` for other calls).
    returned: int | None = None


@dataclass
class Ledger:
    """What went through the wrapper since the last :meth:`reset`."""

    ops: list[Op] = field(default_factory=list)
    store_seconds: float = 0.0
    #: The clock store time is read from (``time.thread_time`` for CPU time).
    clock: t.Callable[[], float] = time.perf_counter
    #: Set while a call to the collection is running.
    busy: bool = False

    def reset(self) -> None:
        self.ops.clear()
        self.store_seconds = 0.0

    def names(self, include_setup: bool = False) -> list[str]:
        return [op.name for op in self.ops if include_setup or op.name not in SETUP_OPS]

    def returned(self) -> int:
        return sum(op.returned or 0 for op in self.ops)


class CountingCollection:
    """Wraps a pymongo (or mongomock) collection; every counted call is logged in
    :attr:`ledger` with its filter, and its time is added to the ledger."""

    def __init__(self, inner: t.Any, ledger: Ledger | None = None) -> None:
        self._inner = inner
        self.ledger = Ledger() if ledger is None else ledger

    def with_options(self, **kwargs: t.Any) -> CountingCollection:
        return CountingCollection(self._inner.with_options(**kwargs), self.ledger)

    @property
    def raw(self) -> t.Any:
        return self._inner

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name not in COUNTED:
            return attr
        ledger = self.ledger

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            # The wrapper's own bookkeeping is inside the bracket: it is the
            # benchmark's cost, not the code under test's, and a backend that
            # makes more calls must not be charged for it.
            start = ledger.clock()
            ledger.busy = True
            try:
                op = Op(name, args[0] if args else kwargs.get("filter"))
                ledger.ops.append(op)
                result = attr(*args, **kwargs)
                if name in ("find", "aggregate"):
                    result = TimedCursor(result, ledger, op)
                return result
            finally:
                ledger.busy = False
                ledger.store_seconds += ledger.clock() - start

        # Looked up once: later calls find it on the instance.
        setattr(self, name, call)
        return call


class TimedCursor:
    """A cursor whose iteration (where a real driver talks to the server) is
    timed and whose documents are counted."""

    def __init__(self, inner: t.Any, ledger: Ledger, op: Op) -> None:
        self._inner = inner
        self._ledger = ledger
        self._op = op
        op.returned = op.returned or 0

    def clone(self) -> TimedCursor:
        return TimedCursor(self._inner.clone(), self._ledger, self._op)

    def __iter__(self) -> TimedCursor:
        return self

    def __next__(self) -> t.Any:
        ledger = self._ledger
        start = ledger.clock()
        ledger.busy = True
        try:
            document = next(self._inner)
            self._op.returned = (self._op.returned or 0) + 1
            return document
        finally:
            ledger.busy = False
            ledger.store_seconds += ledger.clock() - start

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if callable(attr) and name in ("sort", "limit", "skip", "batch_size", "hint"):
            # Chained cursor modifiers return the cursor: keep it wrapped.
            def chained(*args: t.Any, **kwargs: t.Any) -> t.Any:
                attr(*args, **kwargs)
                return self

            return chained
        return attr
