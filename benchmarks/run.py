"""``python -m benchmarks``: database operations and time per request.

Every request type is a generator: the code before each ``yield`` is set-up (not
timed, not counted), the yielded callable is the one request that is measured.
Rounds are interleaved (round 1 of every backend, then round 2, ...) so that
drift in the machine's speed spreads over all backends alike, and each block
starts from an emptied collection so that every backend's store holds about
the same number of documents.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import typing as t
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from . import machine
from . import report
from .app import BACKENDS
from .app import create_app
from .app import Store
from .counting import Ledger

Request = t.Callable[[], t.Any]

RESULTS_DIR = Path(__file__).parent / "results"


class ServerClock:
    """Times the app's own handling of each request: its WSGI callable, that
    is Flask, Flask-Login and the session layer. The test client's work
    around it (building the request, reading the response and its cookies)
    is a browser's in production, and would charge a backend that sets a
    cookie on every response for the client's parsing of it."""

    def __init__(self, app: Flask) -> None:
        self.seconds = 0.0
        inner = app.wsgi_app

        def timed(environ: t.Any, start_response: t.Any) -> t.Any:
            start = time.perf_counter()
            try:
                return inner(environ, start_response)
            finally:
                self.seconds += time.perf_counter() - start

        app.wsgi_app = timed  # type: ignore[method-assign]


@dataclass
class Bench:
    backend: str
    app: Flask
    ledger: Ledger | None
    raw: t.Any

    def __post_init__(self) -> None:
        self.server = ServerClock(self.app)

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def clear(self) -> None:
        if self.raw is not None:
            self.raw.delete_many({})


def _ok(response: t.Any, **expected: t.Any) -> t.Any:
    assert response.status_code == 200, (
        response.status_code,
        response.get_data(as_text=True),
    )
    for key, value in expected.items():
        assert response.json[key] == value, (key, response.json)
    return response


# -- request types ---------------------------------------------------------------


def cookieless_get(b: Bench, n: int) -> t.Iterator[Request]:
    """A visitor (or a bot) with no cookie reads a page that looks at the login."""
    for _ in range(n):
        c = b.client()

        def request(c: FlaskClient = c) -> None:
            r = _ok(c.get("/me"), user=None)
            assert "Set-Cookie" not in r.headers, r.headers

        yield request


def anonymous_first_write(b: Bench, n: int) -> t.Iterator[Request]:
    """A visitor with no cookie puts something in the session (a new session)."""
    for i in range(n):
        c = b.client()
        yield lambda c=c, i=i: _ok(c.post("/set/cart", json=[i]))


def anonymous_write(b: Bench, n: int) -> t.Iterator[Request]:
    """An anonymous visitor who has a session changes it (a cart)."""
    for i in range(n):
        c = b.client()
        _ok(c.post("/set/cart", json=[i]))
        yield lambda c=c, i=i: _ok(c.post("/set/cart", json=[i, i]))


def authenticated_read(b: Bench, n: int) -> t.Iterator[Request]:
    """A logged-in user reads a page; the session is not changed (within
    single_session's touch interval)."""
    c = b.client()
    _ok(c.post("/login/alice"), user="alice")
    for _ in range(n):
        yield lambda: _ok(c.get("/me"), user="alice")


def authenticated_write(b: Bench, n: int) -> t.Iterator[Request]:
    """A logged-in user changes one key of the session."""
    c = b.client()
    _ok(c.post("/login/alice"), user="alice")
    for i in range(n):
        yield lambda i=i: _ok(c.post("/set/cart", json=[i]))


def login(b: Bench, n: int, path: str = "/login/alice") -> t.Iterator[Request]:
    """A user logs in on a new device; the previous login of the same user (from
    the request before) is still live, so the one-device policy ends it."""
    _ok(b.client().post("/login/alice"), user="alice")
    for _ in range(n):
        c = b.client()
        yield lambda c=c: _ok(c.post(path), user="alice")


def login_new_id(b: Bench, n: int) -> t.Iterator[Request]:
    """The login above, with the same protection against session fixation on
    both server-side backends and no session limit: single_session with
    ``SINGLE_SESSION_MAX_SESSIONS = None`` (a new session id bound to the user,
    without the one-device policy's read and revocation); Flask-Session calling
    its ``regenerate()`` after ``login_user()``. Flask's cookie session has no
    id to change: for it this is the login above."""
    config = b.app.config
    limit = config.get("SINGLE_SESSION_MAX_SESSIONS")
    if b.backend == "single_session":
        config["SINGLE_SESSION_MAX_SESSIONS"] = None
    try:
        yield from login(b, n, "/login/alice?new_id=1")
    finally:
        if b.backend == "single_session":
            config["SINGLE_SESSION_MAX_SESSIONS"] = limit


def logout(b: Bench, n: int) -> t.Iterator[Request]:
    """A logged-in user logs out."""
    for _ in range(n):
        c = b.client()
        _ok(c.post("/login/alice"), user="alice")
        yield lambda c=c: _ok(c.post("/logout"), user=None)


REQUEST_TYPES: list[tuple[str, str, t.Callable[[Bench, int], t.Iterator[Request]]]] = [
    ("cookieless_get", "Cookie-less GET", cookieless_get),
    ("anonymous_first_write", "Anonymous write, new session", anonymous_first_write),
    ("anonymous_write", "Anonymous write, existing session", anonymous_write),
    ("authenticated_read", "Authenticated read-only GET", authenticated_read),
    ("authenticated_write", "Authenticated write", authenticated_write),
    ("login", "Login", login),
    ("login_new_id", "Login, new session id, no session limit", login_new_id),
    ("logout", "Logout", logout),
]


# -- measuring -------------------------------------------------------------------


@dataclass
class Samples:
    seconds: list[float]
    store_seconds: list[float]
    ops: Counter[tuple[str, ...]]

    @classmethod
    def empty(cls) -> Samples:
        return cls([], [], Counter())


def measure(
    bench: Bench,
    make: t.Callable[[Bench, int], t.Iterator[Request]],
    n: int,
    into: Samples,
) -> None:
    bench.clear()
    ledger, server = bench.ledger, bench.server
    for request in make(bench, n):
        if ledger is not None:
            ledger.reset()
        server.seconds = 0.0
        request()
        into.seconds.append(server.seconds)
        into.store_seconds.append(ledger.store_seconds if ledger is not None else 0.0)
        into.ops[tuple(ledger.names()) if ledger is not None else ()] += 1


def summary(samples: Samples) -> dict[str, t.Any]:
    seconds = sorted(samples.seconds)
    own = sorted(s - d for s, d in zip(samples.seconds, samples.store_seconds))
    store = sorted(samples.store_seconds)
    (ops, _), *others = samples.ops.most_common()
    return {
        "ops": len(ops),
        "op_names": list(ops),
        # Every sample of a request type sends the same calls; if not, say so.
        "ops_vary": [list(o) for o, _ in others],
        "samples": len(seconds),
        "time_us": _quantiles(seconds),
        "store_time_us": _quantiles(store),
        "own_time_us": _quantiles(own),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    if len(values) == 1:  # statistics.quantiles needs two
        q1 = median = q3 = values[0]
    else:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": round(median * 1e6, 1),
        "p25": round(q1 * 1e6, 1),
        "p75": round(q3 * 1e6, 1),
        "min": round(values[0] * 1e6, 1),
        "max": round(values[-1] * 1e6, 1),
    }


def per_request(
    benches: dict[str, Bench], rounds: int, n: int
) -> dict[str, dict[str, t.Any]]:
    samples = {
        (b, key): Samples.empty() for b in benches for key, _, _ in REQUEST_TYPES
    }
    # Warm-up: imports, first-request set-up, single_session's index creation.
    for bench in benches.values():
        for _, _, make in REQUEST_TYPES:
            measure(bench, make, 2, Samples.empty())
    for _ in range(rounds):
        for key, _, make in REQUEST_TYPES:
            for name, bench in benches.items():
                measure(bench, make, n, samples[name, key])
    results: dict[str, dict[str, t.Any]] = {}
    for key, label, make in REQUEST_TYPES:
        row: dict[str, t.Any] = {
            "label": label,
            "description": (make.__doc__ or "").strip(),
        }
        for name in benches:
            row[name] = summary(samples[name, key])
        results[key] = row
    return results


# -- scaling with the number of a user's sessions ----------------------------


def scaling(bench: Bench, ks: t.Sequence[int], repeats: int) -> dict[str, t.Any]:
    """single_session's login (one-device policy) and logout_everywhere when the
    user already has K live sessions."""
    from single_session import logout_everywhere

    app, ledger, raw = bench.app, bench.ledger, bench.raw
    assert ledger is not None
    out: dict[str, t.Any] = {"login": {}, "logout_everywhere": {}}

    def set_up(k: int) -> None:
        bench.clear()
        app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
        for _ in range(k):
            _ok(bench.client().post("/login/alice"), user="alice")
        assert raw.count_documents({"user_id": "alice"}) == k
        app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1

    for k in ks:
        login_samples = Samples.empty()
        returned: set[int] = set()
        for _ in range(repeats):
            set_up(k)
            c = bench.client()
            ledger.reset()
            bench.server.seconds = 0.0
            _ok(c.post("/login/alice"), user="alice")
            login_samples.seconds.append(bench.server.seconds)
            login_samples.store_seconds.append(ledger.store_seconds)
            login_samples.ops[tuple(ledger.names())] += 1
            returned.add(ledger.returned())
            assert raw.count_documents({"user_id": "alice"}) == 1
        out["login"][str(k)] = {
            **summary(login_samples),
            "documents_returned": sorted(returned),
        }

        everywhere = Samples.empty()
        for _ in range(repeats):
            set_up(k)
            with app.app_context():
                ledger.reset()
                start = time.perf_counter()
                ended = logout_everywhere("alice")
                everywhere.seconds.append(time.perf_counter() - start)
            everywhere.store_seconds.append(ledger.store_seconds)
            everywhere.ops[tuple(ledger.names())] += 1
            assert ended == k, (ended, k)
            assert raw.count_documents({"user_id": "alice"}) == 0
        out["logout_everywhere"][str(k)] = summary(everywhere)
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1
    bench.clear()
    return out


# -- main ------------------------------------------------------------------------


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Database operations and time per request: Flask's cookie"
        " session, Flask-Session 0.8's MongoDB backend and single_session.",
    )
    parser.add_argument(
        "--rounds", type=int, default=9, help="rounds per request type (default 9)"
    )
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per round (default 100)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="repeats per K in the scaling test (default 7)",
    )
    parser.add_argument(
        "--ks", default="1,10,100", help="the K of the scaling test (default 1,10,100)"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR, help="where latest.md/json go"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    described = machine.describe()
    store = Store.from_environment()
    try:
        benches = {}
        for backend in BACKENDS:
            app, ledger, raw = create_app(
                backend, None if backend == "cookie" else store
            )
            benches[backend] = Bench(backend, app, ledger, raw)
        results = per_request(benches, args.rounds, args.requests)
        ks = [int(k) for k in args.ks.split(",")]
        scale = scaling(benches["single_session"], ks, args.repeats)
    finally:
        store.close()

    data = {
        "machine": described,
        "store": store.version,
        "settings": {
            "rounds": args.rounds,
            "requests_per_round": args.requests,
            "scaling_repeats": args.repeats,
            "single_session_touch_interval_s": 60,
            "flask_session_refresh_each_request": True,
        },
        "per_request": results,
        "scaling": scale,
        "duration_s": round(time.perf_counter() - started, 1),
    }
    data["ratios"] = report.ratios(results)
    markdown = report.markdown(data)
    print(markdown)
    if not args.no_write:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "latest.md").write_text(markdown)
        (args.output / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
        written = " and ".join(
            _shown(args.output / f) for f in ("latest.md", "latest.json")
        )
        print(f"Written to {written}.", file=sys.stderr)
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
