"""``python -m benchmarks.profile``: where the hot path's time goes.

Runs ordinary authenticated requests (a read-only GET by default, ``--write`` for
a write of one key) and reports, for the session layer alone (the session
interface's ``open_session``/``save_session`` and, for single_session, its
``before_request``/``after_request`` hooks), leaving out the time spent inside
the collection:

- CPU time per request (``time.thread_time``, so that other processes on a busy
  machine disturb it less than wall-clock time), median over rounds;
- Python function calls per request, counted with ``sys.setprofile``: a number
  that does not depend on the machine's load, to compare before and after a
  change;
- a cProfile listing of the same requests.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import statistics
import sys
import time
import typing as t

from .app import create_app
from .app import Store
from .counting import Ledger


class Layer:
    """Wraps the session layer's entry points of an app to measure them."""

    def __init__(self, app: t.Any, ledger: Ledger) -> None:
        self.ledger = ledger
        self.cpu = 0.0
        self.depth = 0
        self.calls = 0
        self.counting = False
        iface = app.session_interface
        for name in ("open_session", "save_session"):
            setattr(iface, name, self._wrap(getattr(iface, name)))
        for funcs in (app.before_request_funcs, app.after_request_funcs):
            for hooks in funcs.values():
                for i, hook in enumerate(hooks):
                    if getattr(hook, "__module__", "").startswith("single_session"):
                        hooks[i] = self._wrap(hook)

    def _wrap(self, fn: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        @functools.wraps(fn)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.depth += 1
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - start
                self.depth -= 1

        return wrapper

    def _count(self, frame: t.Any, event: str, arg: t.Any) -> None:
        # Calls made by the session layer, not those inside the collection.
        if event in ("call", "c_call") and self.depth and not self.ledger.busy:
            self.calls += 1

    def reset(self) -> None:
        self.cpu = 0.0
        self.calls = 0
        self.ledger.reset()

    def count_calls(self, requests: t.Callable[[], None]) -> None:
        sys.setprofile(self._count)
        try:
            requests()
        finally:
            sys.setprofile(None)


def measure(
    backend: str, requests: int, rounds: int, write: bool, top: int
) -> dict[str, t.Any]:
    store = Store.from_environment()
    try:
        app, ledger, _ = create_app(backend, store)
        assert ledger is not None
        ledger.clock = time.thread_time
        layer = Layer(app, ledger)
        client = app.test_client()
        client.post("/login/alice")
        client.post("/set/name", json="Alice Liddell")
        client.post("/set/prefs", json={"theme": "dark", "lang": "en"})

        def run(n: int) -> None:
            for i in range(n):
                if write:
                    client.post("/set/cart", json=[i])
                else:
                    client.get("/me")

        run(100)  # warm-up
        cpu = []
        for _ in range(rounds):
            layer.reset()
            run(requests)
            cpu.append((layer.cpu - ledger.store_seconds) / requests * 1e6)
        layer.reset()
        layer.count_calls(lambda: run(requests))
        calls = layer.calls / requests

        profiler = cProfile.Profile()
        profiler.enable()
        run(requests)
        profiler.disable()
    finally:
        store.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(r"single_session|flask_session", top)
    return {
        "cpu_us": statistics.median(cpu),
        "cpu_us_min": min(cpu),
        "calls": calls,
        "listing": out.getvalue(),
    }


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="a write, not a read")
    parser.add_argument(
        "--backend",
        action="append",
        choices=("single_session", "flask_session"),
        help="repeat for several (default: both)",
    )
    parser.add_argument("--top", type=int, default=25, help="cProfile lines")
    args = parser.parse_args(argv)
    kind = "write of one key" if args.write else "read-only GET"
    for backend in args.backend or ("single_session", "flask_session"):
        r = measure(backend, args.requests, args.rounds, args.write, args.top)
        print(
            f"{backend}, authenticated {kind}: session layer outside the store"
            f" {r['cpu_us']:.1f} µs CPU per request (min {r['cpu_us_min']:.1f}),"
            f" {r['calls']:.0f} Python function calls per request"
        )
        if args.top:
            print(r["listing"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
