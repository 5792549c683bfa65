"""SINGLE_SESSION_TIMEOUT bounds a whole request's database work, not each call:
a database that is slow but alive ends a request that needs many calls within
the timeout, with a 503. Only the time spent waiting on the database counts: a
view that takes its time does not use up the budget."""

from __future__ import annotations

import time
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pymongo
from flask import copy_current_request_context
from flask import jsonify
from flask import session
from flask_login import current_user
from flask_login import login_user
from pymongo.errors import NetworkTimeout

from conftest import make_app
from conftest import stored
from conftest import USERS

TIMEOUT = 0.5
DELAY = 0.2  # each call: well under the timeout on its own


class SlowCollection:
    """Every call takes DELAY seconds, and gives up as the driver does when the
    time left under ``pymongo.timeout`` runs out first (mongomock ignores it)."""

    def __init__(self, inner: t.Any, delay: float = DELAY) -> None:
        self._inner = inner
        self.slow = False
        self.delay = delay

    def with_options(self, **kwargs: t.Any) -> SlowCollection:
        wrapped = SlowCollection(self._inner.with_options(**kwargs), self.delay)
        wrapped.__dict__["slow_source"] = self
        return wrapped

    def _is_slow(self) -> bool:
        source = self.__dict__.get("slow_source", self)
        return bool(source.slow)

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if self._is_slow():
                # Driver-side time left (the test emulates the driver here).
                left = pymongo._csot.remaining()
                if left is not None and left < self.delay:
                    time.sleep(max(left, 0))
                    raise NetworkTimeout("timed out")
                time.sleep(self.delay)
            result = attr(*args, **kwargs)
            return list(result) if name == "find" else result

        return call


def test_a_slow_database_ends_a_many_call_request_within_the_timeout(raw_collection):
    slow = SlowCollection(raw_collection)
    app = make_app(slow, SINGLE_SESSION_TIMEOUT=TIMEOUT)
    phone = app.test_client()
    phone.post("/login/alice")
    device = app.test_client()
    device.post("/set/cart", json=["pen"])
    before = stored(raw_collection)

    slow.slow = True
    # One call fits: an ordinary request still works.
    started = time.monotonic()
    assert phone.get("/me").json["user"] == "alice"
    assert time.monotonic() - started < TIMEOUT + 0.2

    # A login needs several calls: together they would take longer than the
    # timeout, so the request ends at the timeout with a 503 and no cookie.
    started = time.monotonic()
    response = device.post("/login/alice")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    # (+ one short cleanup of what the failed login had stored.)
    assert elapsed < TIMEOUT + DELAY + 0.3, elapsed
    assert not response.headers.getlist("Set-Cookie")

    slow.slow = False
    # Nothing was half done: the phone is still signed in, the cart is intact.
    assert phone.get("/me").json["user"] == "alice"
    assert device.get("/get/cart").json == {"value": ["pen"]}
    assert {d["_id"] for d in stored(raw_collection)} >= {d["_id"] for d in before}
    # And the failed login left no bound session behind (it would hold a place).
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_the_calls_made_while_the_session_loads_count_too(raw_collection):
    # A cookie naming an expired session costs a read and a cleanup before the
    # session exists: the two share the request's budget with the rest.
    slow = SlowCollection(raw_collection, delay=0.4)
    app = make_app(slow, SINGLE_SESSION_TIMEOUT=TIMEOUT)
    client = app.test_client()
    client.post("/set/cart", json=["pen"])
    app.extensions["single_session"].clock.advance(days=40)  # past its lifetime
    slow.slow = True
    started = time.monotonic()
    response = client.post("/set/cart", json=["book"])
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < TIMEOUT + 0.2, elapsed


def test_the_budget_does_not_outlive_the_request(raw_collection):
    slow = SlowCollection(raw_collection)
    app = make_app(slow, SINGLE_SESSION_TIMEOUT=TIMEOUT)
    client = app.test_client()
    client.post("/login/alice")
    time.sleep(TIMEOUT + 0.1)
    # Outside a request (a CLI command, a job), each call has the full timeout.
    with app.app_context():
        assert app.extensions["test_ext"].logout_everywhere("alice") == 1


def test_the_view_s_own_time_does_not_use_up_the_budget(raw_collection):
    # A view that takes longer than the timeout (an OAuth code exchange, an
    # upload) and then logs in or writes: the database answers at once, so the
    # request succeeds.
    app = make_app(raw_collection, SINGLE_SESSION_TIMEOUT=TIMEOUT)

    @app.post("/slow/login/<name>")
    def slow_login(name: str) -> t.Any:
        time.sleep(TIMEOUT + 0.1)
        login_user(USERS[name])
        return jsonify(user=current_user.get_id())

    @app.post("/slow/set/<key>")
    def slow_set(key: str) -> t.Any:
        time.sleep(TIMEOUT + 0.1)
        session[key] = "late"
        return jsonify(ok=True)

    @app.get("/slow/read")
    def slow_read() -> t.Any:
        time.sleep(TIMEOUT + 0.1)
        return jsonify(user=current_user.get_id())

    client = app.test_client()
    client.post("/set/cart", json=["pen"])  # the slow requests load a session
    response = client.post("/slow/login/alice")
    assert response.status_code == 200
    assert response.json == {"user": "alice"}
    assert client.post("/slow/set/note").status_code == 200
    assert client.get("/get/note").json == {"value": "late"}
    assert client.get("/get/cart").json == {"value": ["pen"]}

    # A read whose touch is due writes too.
    (bound,) = stored(raw_collection, user_id="alice")
    app.extensions["single_session"].clock.advance(seconds=120)
    response = client.get("/slow/read")
    assert response.status_code == 200
    assert response.json == {"user": "alice"}
    (touched,) = stored(raw_collection, user_id="alice")
    assert touched["seen_at"] > bound["seen_at"]


def test_a_thread_given_a_copy_of_the_request_context(raw_collection):
    # Flask's pattern for work in a thread: the copied context is popped in
    # that thread, and the request goes on and saves its session.
    app = make_app(raw_collection, SINGLE_SESSION_TIMEOUT=TIMEOUT)

    @app.post("/fanout")
    def fanout() -> t.Any:
        @copy_current_request_context
        def work(n: int) -> int:
            return n * 2 + len(session.get("cart", []))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(work, range(3)))
        session["results"] = results
        return jsonify(results)

    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/cart", json=["pen"])
    response = client.post("/fanout")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == [1, 3, 5]
    assert client.get("/get/results").json == {"value": [1, 3, 5]}
    # Nothing of the request's budget is left behind in this thread.
    time.sleep(TIMEOUT + 0.1)
    with app.app_context():
        assert app.extensions["test_ext"].logout_everywhere("alice") == 1
