"""The policy holds under concurrent logins (promise 5).

Threads are released together by a barrier. The collection is wrapped so that
calls are serialised (mongomock is not thread-safe) and each waits a little
before it runs, which widens the windows between one login's insert and its
read of the user's sessions.
"""

from __future__ import annotations

import random
import threading
import time
import typing as t

import pytest
from flask_login import current_user

from conftest import make_app
from conftest import run_together
from conftest import stored

LOGINS = 12


class SlowSerialCollection:
    def __init__(
        self, inner: t.Any, lock: threading.Lock | None = None, log: list | None = None
    ) -> None:
        self._inner = inner
        self._lock = lock or threading.Lock()
        self.inserted: list[dict[str, t.Any]] = [] if log is None else log

    def with_options(self, **kwargs: t.Any) -> SlowSerialCollection:
        return SlowSerialCollection(
            self._inner.with_options(**kwargs), self._lock, self.inserted
        )

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            time.sleep(random.uniform(0.001, 0.004))
            with self._lock:
                result = attr(*args, **kwargs)
                if name == "find":
                    result = list(result)
                if name == "insert_one":
                    self.inserted.append(dict(args[0]))
                return result

        return call


@pytest.fixture
def slow(raw_collection):
    return SlowSerialCollection(raw_collection)


def who(client):
    return client.get("/me").json["user"]


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_concurrent_logins_leave_exactly_the_newest(slow, raw_collection, limit):
    app = make_app(slow, SINGLE_SESSION_MAX_SESSIONS=limit)
    clients = [app.test_client() for _ in range(LOGINS)]
    results = run_together(*[lambda c=c: c.post("/login/alice") for c in clients])
    assert all(r.status_code == 200 for r in results), results
    logins = [d for d in slow.inserted if d.get("user_id") == "alice"]
    assert len(logins) == LOGINS
    newest = sorted(logins, key=lambda d: (d["login_at"], d["_id"]))[-limit:]
    survivors = stored(raw_collection, user_id="alice")
    assert sorted(d["_id"] for d in survivors) == sorted(d["_id"] for d in newest)
    alive = [c for c in clients if who(c) == "alice"]
    assert len(alive) == limit


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrent_logins_under_deny_admit_exactly_n(slow, raw_collection, limit):
    app = make_app(
        slow, SINGLE_SESSION_MAX_SESSIONS=limit, SINGLE_SESSION_ON_LIMIT="deny"
    )
    clients = [app.test_client() for _ in range(LOGINS)]
    results = run_together(*[lambda c=c: c.post("/login/alice") for c in clients])
    codes = [r.status_code for r in results]
    assert codes.count(200) == limit and codes.count(409) == LOGINS - limit
    admitted = [c for c, code in zip(clients, codes) if code == 200]
    refused = [c for c, code in zip(clients, codes) if code == 409]
    # No admitted login was revoked by a concurrent one; no refused one got in.
    assert all(who(c) == "alice" for c in admitted)
    assert all(who(c) is None for c in refused)
    assert len(stored(raw_collection, user_id="alice")) == limit


def test_concurrent_logins_of_different_users_do_not_interfere(slow, raw_collection):
    app = make_app(slow)
    names = ["alice", "bob", "carol"] * 4
    clients = [app.test_client() for _ in names]
    run_together(
        *[lambda c=c, n=n: c.post(f"/login/{n}") for c, n in zip(clients, names)]
    )
    for name in ("alice", "bob", "carol"):
        assert len(stored(raw_collection, user_id=name)) == 1


def test_concurrent_requests_on_one_session_keep_every_key(slow, raw_collection):
    app = make_app(slow)
    first = app.test_client()
    first.post("/set/start", json=0)
    value = first.get_cookie("session").value
    clients = [app.test_client() for _ in range(8)]
    for client in clients:
        client.set_cookie("session", value)
    run_together(
        *[lambda c=c, i=i: c.post(f"/set/k{i}", json=i) for i, c in enumerate(clients)]
    )
    for i in range(8):
        assert first.get(f"/get/k{i}").json == {"value": i}


# -- a session moving to a new id while its user is signed out ------------------
#
# A remember-me restore and logout_others give a session a new id: the old
# document is taken, its successor stored, the move finished. A revocation of
# the user in between must reach the device all the same.


def _pause_after(store: t.Any, method: str) -> tuple[threading.Event, threading.Event]:
    """Make ``store.<method>`` stop after it ran, until released."""
    entered, release = threading.Event(), threading.Event()
    original = getattr(store, method)

    def paused(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = original(*args, **kwargs)
        setattr(store, method, original)  # once
        entered.set()
        assert release.wait(10)
        return result

    setattr(store, method, paused)
    return entered, release


def _in_thread(fn: t.Callable[[], t.Any]) -> tuple[threading.Thread, dict[str, t.Any]]:
    out: dict[str, t.Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", fn()))
    thread.start()
    return thread, out


def _logout_others_app(collection: t.Any, **config: t.Any) -> t.Any:
    app = make_app(collection, **config)

    @app.post("/logout-others")
    def logout_others() -> t.Any:
        ext = app.extensions["test_ext"]
        ended = ext.logout_others(current_user)
        return {"ended": ended, "user": current_user.get_id()}

    return app


def test_logout_everywhere_reaches_a_device_being_restored(raw_collection):
    app = make_app(raw_collection)
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    phone.delete_cookie("session")  # the browser restarts
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "take_remembered")
    thread, out = _in_thread(lambda: phone.get("/me"))
    assert entered.wait(10)
    with app.app_context():
        assert app.extensions["test_ext"].logout_everywhere("alice") == 1
    release.set()
    thread.join(10)
    assert out["result"].status_code == 200
    assert out["result"].json["user"] is None
    # Signed out for good, remember-me included, and no live session is left.
    assert phone.get("/me").json["user"] is None
    assert phone.get_cookie("remember_token") is None
    assert stored(raw_collection, user_id="alice") == []


def test_logout_everywhere_reaches_a_session_getting_a_new_id(raw_collection):
    app = _logout_others_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "take")
    thread, out = _in_thread(lambda: laptop.post("/logout-others"))
    assert entered.wait(10)
    with app.app_context():
        app.extensions["test_ext"].logout_everywhere("alice")
    release.set()
    thread.join(10)
    assert out["result"].status_code == 200
    assert laptop.get("/me").json["user"] is None
    assert phone.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice") == []


def test_deny_a_login_taking_the_place_of_a_session_getting_a_new_id(raw_collection):
    # Under "deny" the place moves with the session; a login that comes in
    # between may take it (a documented limit). The moving device is then
    # signed out, without an error.
    app = _logout_others_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "take")
    thread, out = _in_thread(lambda: laptop.post("/logout-others"))
    assert entered.wait(10)
    assert phone.post("/login/alice").status_code == 200
    release.set()
    thread.join(10)
    assert out["result"].status_code == 200
    assert out["result"].json["user"] is None
    assert laptop.get("/me").json["user"] is None
    assert phone.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_deny_admits_a_login_whose_read_of_the_slots_went_stale(raw_collection):
    # A login read its user's sessions while one held slot 1 (of 2); that
    # session logged out and another login took slot 0 before this one's
    # insert. A place was free all along: it gets in.
    app = make_app(
        raw_collection, SINGLE_SESSION_ON_LIMIT="deny", SINGLE_SESSION_MAX_SESSIONS=2
    )
    first, second, third, late = (app.test_client() for _ in range(4))
    first.post("/login/alice")
    second.post("/login/alice")
    first.post("/logout")  # second holds slot 1, slot 0 is free
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "user_sessions")
    thread, out = _in_thread(lambda: late.post("/login/alice"))
    assert entered.wait(10)
    second.post("/logout")
    assert third.post("/login/alice").status_code == 200  # takes slot 0
    release.set()
    thread.join(10)
    assert out["result"].status_code == 200
    assert late.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 2


def test_another_users_login_ends_a_restore_running_in_another_tab(raw_collection):
    # A browser restarts: one tab restores alice's remembered login while
    # another signs bob in, which replaces that login. Bob's login reaches it
    # while it moves to a new id: the restore ends, and no login of alice is
    # left for no device to hold (under "deny", her only place).
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    browser = app.test_client()
    browser.post("/login/alice?remember=1")
    browser.delete_cookie("session")
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "take_remembered")
    thread, out = _in_thread(lambda: browser.get("/me"))
    assert entered.wait(10)
    assert browser.post("/login/bob").json["user"] == "bob"
    release.set()
    thread.join(10)
    assert out["result"].json["user"] is None
    assert browser.get("/me").json["user"] == "bob"
    assert browser.get_cookie("remember_token") is None
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []
    assert app.test_client().post("/login/alice").status_code == 200


def test_another_users_login_ends_a_login_restored_since_it_began(raw_collection):
    # The same, the other way round: bob's login found alice's remembered
    # login, then the other tab restored it under a new id before bob's login
    # replaced it. The restored login ends all the same.
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    browser = app.test_client()
    browser.post("/login/alice?remember=1")
    browser.delete_cookie("session")
    tab = app.test_client()
    tab.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "find_remembered")
    thread, out = _in_thread(lambda: browser.post("/login/bob"))
    assert entered.wait(10)
    assert tab.get("/me").json["user"] == "alice"
    release.set()
    thread.join(10)
    assert out["result"].json["user"] == "bob"
    assert browser.get("/me").json["user"] == "bob"
    assert tab.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []
    assert app.test_client().post("/login/alice").status_code == 200


def test_revoke_by_handle_reaches_a_device_while_it_restores(raw_collection):
    # "Sign out" on a devices page lands while the phone's restarted browser
    # restores its login: the old session and the new one (stored, not yet
    # handed over) have the same handle, and both end.
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    app.test_client().post("/login/alice")
    with app.app_context():
        (listed,) = [s for s in ext.sessions_of("alice") if s.remembered]
    phone.delete_cookie("session")
    store = app.extensions["single_session"].store
    entered, release = _pause_after(store, "insert")
    thread, out = _in_thread(lambda: phone.get("/me"))
    assert entered.wait(10)
    with app.app_context():
        assert ext.revoke("alice", listed.handle) is True
    release.set()
    thread.join(10)
    assert out["result"].json["user"] is None
    assert phone.get("/me").json["user"] is None
    assert len(stored(raw_collection, user_id="alice")) == 1  # the other device
