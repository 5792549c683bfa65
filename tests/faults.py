"""Helpers for the hardening tests: collections that fail on purpose or
serialise access, and sockets that play a dead or silent MongoDB server.

Only loopback addresses are used.
"""

from __future__ import annotations

import socket
import threading
import typing as t

from pymongo.errors import AutoReconnect

#: The collection methods the library calls.
METHODS = {
    "find_one",
    "find",
    "insert_one",
    "update_one",
    "update_many",
    "delete_one",
    "delete_many",
    "find_one_and_delete",
    "find_one_and_update",
    "count_documents",
    "create_index",
    "index_information",
}


class Faults:
    """What a :class:`FaultyCollection` does on each call.

    ``rules`` maps a method name to a list of actions, used one per call of
    that method (then calls go through):

    - ``None``: perform the call;
    - an exception: raise it instead of performing the call;
    - ``("after", exception)``: perform the call, then raise (the reply was lost).

    ``down`` makes every call raise ``down`` (a database that is unreachable).
    """

    def __init__(self) -> None:
        self.rules: dict[str, list[t.Any]] = {}
        self.down: BaseException | None = None
        #: Every call: (method, first argument).
        self.calls: list[tuple[str, t.Any]] = []

    def plan(self, method: str, *actions: t.Any) -> None:
        self.rules.setdefault(method, []).extend(actions)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)


class FaultyCollection:
    """Wraps a collection; calls fail as :class:`Faults` says."""

    def __init__(self, inner: t.Any, faults: Faults | None = None) -> None:
        self._inner = inner
        self.faults = faults if faults is not None else Faults()

    def with_options(self, **kwargs: t.Any) -> FaultyCollection:
        return FaultyCollection(self._inner.with_options(**kwargs), self.faults)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name not in METHODS:
            return attr
        faults = self.faults

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if name == "find":
                # pymongo's find() sends nothing until the cursor is read.
                return _LazyCursor(lambda: perform(*args, **kwargs))
            return perform(*args, **kwargs)

        def perform(*args: t.Any, **kwargs: t.Any) -> t.Any:
            first = args[0] if args else kwargs.get("filter")
            # A copy: the library may change a document after the call.
            faults.calls.append(
                (name, dict(first) if isinstance(first, dict) else first)
            )
            if faults.down is not None:
                raise faults.down
            queue = faults.rules.get(name)
            action = queue.pop(0) if queue else None
            if isinstance(action, BaseException):
                raise action
            result = attr(*args, **kwargs)
            if name == "find":
                result = list(result)
            if isinstance(action, tuple) and action[0] == "after":
                raise action[1]
            return result

        return call


class _LazyCursor:
    """A cursor that performs its query (and meets its faults) when read."""

    def __init__(self, run: t.Callable[[], list[t.Any]]) -> None:
        self._run = run

    def clone(self) -> _LazyCursor:
        return _LazyCursor(self._run)

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self._run())


class LockedCollection:
    """Serialises every call to a collection that is not thread-safe (mongomock)."""

    def __init__(self, inner: t.Any, lock: threading.Lock | None = None) -> None:
        self._inner = inner
        self._lock = lock or threading.Lock()

    def with_options(self, **kwargs: t.Any) -> LockedCollection:
        with self._lock:
            return LockedCollection(self._inner.with_options(**kwargs), self._lock)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if name not in METHODS:
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            with self._lock:
                result = attr(*args, **kwargs)
                if name == "find":
                    # A cursor is read later; read it now, under the lock.
                    return _ListCursor(list(result))
                return result

        return call


class _ListCursor:
    """A cursor already read (what ``find`` returns through LockedCollection)."""

    def __init__(self, documents: list[t.Any]) -> None:
        self._documents = documents

    def clone(self) -> _ListCursor:
        return _ListCursor(list(self._documents))

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self._documents)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return t.cast(int, s.getsockname()[1])


class SilentServer:
    """A loopback socket that accepts connections and never replies."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self._listener.close()


def transient(message: str = "connection reset (test)") -> AutoReconnect:
    return AutoReconnect(message)
