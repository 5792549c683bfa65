"""SINGLE_SESSION_TIMEOUT bounds a whole request's database work, not each call:
a database that is slow but alive ends a request that needs many calls within
the timeout, with a 503."""

from __future__ import annotations

import time
import typing as t

import pymongo
from pymongo.errors import NetworkTimeout

from conftest import make_app
from conftest import stored

TIMEOUT = 0.5
DELAY = 0.2  # each call: well under the timeout on its own


class SlowCollection:
    """Every call takes DELAY seconds, and gives up as the driver does when the
    time left under ``pymongo.timeout`` runs out first (mongomock ignores it)."""

    def __init__(self, inner: t.Any) -> None:
        self._inner = inner
        self.slow = False

    def with_options(self, **kwargs: t.Any) -> SlowCollection:
        wrapped = SlowCollection(self._inner.with_options(**kwargs))
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
                if left is not None and left < DELAY:
                    time.sleep(max(left, 0))
                    raise NetworkTimeout("timed out")
                time.sleep(DELAY)
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


def test_the_budget_does_not_outlive_the_request(raw_collection):
    slow = SlowCollection(raw_collection)
    app = make_app(slow, SINGLE_SESSION_TIMEOUT=TIMEOUT)
    client = app.test_client()
    client.post("/login/alice")
    time.sleep(TIMEOUT + 0.1)
    # Outside a request (a CLI command, a job), each call has the full timeout.
    with app.app_context():
        assert app.extensions["test_ext"].logout_everywhere("alice") == 1
