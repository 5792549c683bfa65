"""Remember me, per device and revocable (promise 6)."""

from __future__ import annotations

import threading
from datetime import timedelta

import mongomock
import pytest
from flask import g
from flask import get_flashed_messages
from flask import request
from flask_login import confirm_login
from flask_login import current_user
from flask_login import fresh_login_required
from flask_login import login_remembered
from flask_login import login_user
from flask_login.signals import user_loaded_from_cookie
from flask_login.utils import encode_cookie

from conftest import make_app
from conftest import Recorder
from conftest import stored
from conftest import USERS
from single_session import logout_everywhere
from single_session import revocation as current_revocation
from single_session import session_revoked


def who(client):
    return client.get("/me").json


def restart_browser(client):
    """Drop the browser-session cookie, keep the persistent remember cookie."""
    client.delete_cookie("session")


def remember_cookie(client, name="remember_token"):
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def test_remembered_login_survives_a_browser_restart_not_fresh(app, collection):
    loaded = Recorder(user_loaded_from_cookie, app)

    @app.get("/sensitive")
    @fresh_login_required
    def sensitive():
        return "sensitive"

    @app.post("/confirm")
    def confirm():
        confirm_login()
        return "confirmed"

    @app.get("/remembered")
    def remembered():
        return {"remembered": login_remembered()}

    client = app.test_client()
    client.post("/login/alice?remember=1")
    assert client.get("/sensitive").status_code == 200
    assert client.get("/remembered").json == {"remembered": True}
    restart_browser(client)
    assert who(client) == {"user": "alice", "fresh": False}
    assert len(loaded.calls) == 1 and loaded.calls[0]["user"].id == "alice"
    # Flask-Login asks for the password again for a restored login.
    assert client.get("/sensitive").status_code == 401
    # The restored session continues normally, without more restores.
    assert who(client)["user"] == "alice"
    assert len(loaded.calls) == 1
    assert client.get("/remembered").json == {"remembered": True}
    # confirm_login() makes it fresh again, as with Flask-Login's own cookie.
    assert client.post("/confirm").status_code == 200
    assert client.get("/sensitive").status_code == 200
    other = app.test_client()
    other.post("/login/bob")
    assert other.get("/remembered").json == {"remembered": False}
    assert len(stored(collection, user_id="alice")) == 1


def test_the_cookie_holds_no_user_id_and_the_database_only_hashes(app, collection):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    value = remember_cookie(client)
    assert "alice" not in value
    series, token = value.rsplit("|", 1)[0].rsplit(".", 1)[0].split(".")
    (doc,) = stored(collection)
    assert series not in repr(doc) and token not in repr(doc)


def test_token_rotates_on_each_use(app):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    first = remember_cookie(client)
    restart_browser(client)
    who(client)
    second = remember_cookie(client)
    assert second != first
    restart_browser(client)
    assert who(client)["user"] == "alice"
    assert remember_cookie(client) != second


def test_replayed_old_token_is_theft_and_revokes_the_device(app, clock, collection):
    device = app.test_client()
    device.post("/login/alice?remember=1")
    stolen = remember_cookie(device)
    restart_browser(device)
    who(device)  # the real device uses (and rotates) its token
    clock.advance(minutes=5)
    thief = app.test_client()
    thief.set_cookie("remember_token", stolen)
    assert who(thief)["user"] is None
    # The device that was copied is signed out too, remember-me included.
    assert who(device)["user"] is None
    restart_browser(device)
    assert who(device)["user"] is None
    (tombstone,) = [d for d in stored(collection) if "revoked" in d]
    assert tombstone["revoked"]["reason"] == "remember_token_reused"
    assert "data" not in tombstone
    # Hashes alone, nothing to log in with: the series, the token the device
    # held and the one before (so that only the device, not a stale copy of
    # its cookie, is told why), with the time of the rotation.
    assert set(tombstone["remember"]) == {"series", "token", "previous", "rotated_at"}


def test_parallel_restores_of_one_browser_are_not_theft(app, collection):
    tab1 = app.test_client()
    tab1.post("/login/alice?remember=1")
    old = remember_cookie(tab1)
    restart_browser(tab1)
    tab2 = app.test_client()
    tab2.set_cookie("remember_token", old)
    assert who(tab1)["user"] == "alice"  # rotates
    # A second tab sent the old token at the same time: not a thief, and its
    # response leaves the browser's cookie alone (the first tab's new one wins).
    response = tab2.get("/me")
    assert response.json["user"] is None
    assert not [
        h
        for h in response.headers.getlist("Set-Cookie")
        if h.startswith("remember_token=")
    ]
    assert who(tab1)["user"] == "alice"
    assert "revoked" not in stored(collection)[0]


def _a_restarted_browser_with_a_slow_tab(app):
    """A browser that logged in with remember-me and was restarted, and a
    second tab of it whose request, sent with the same token, is in a view
    that asks for the user only when finished: returns the first tab and the
    function that finishes the slow one (and waits for its request to end)."""
    arrived, go_on = threading.Event(), threading.Event()

    @app.get("/slow-report")
    def slow_report():
        arrived.set()
        assert go_on.wait(10)
        return {"user": current_user.get_id()}

    tab1 = app.test_client()
    tab1.post("/login/alice?remember=1")
    tab2 = app.test_client()
    tab2.set_cookie("remember_token", remember_cookie(tab1))
    restart_browser(tab1)
    thread = threading.Thread(target=lambda: tab2.get("/slow-report"))
    thread.start()
    assert arrived.wait(10)

    def finish() -> None:
        go_on.set()
        thread.join(10)

    return tab1, finish


def test_a_slow_request_of_the_browser_is_not_theft(app, clock, collection):
    # Two tabs load at once after a restart, both with the old token. One
    # restores; the other's view asks for the user only 40 s later (after
    # slow work). Its cookie was sent before the rotation: not a thief.
    tab1, finish_slow_tab = _a_restarted_browser_with_a_slow_tab(app)
    assert who(tab1)["user"] == "alice"  # rotates
    clock.advance(seconds=40)
    finish_slow_tab()
    assert not [d for d in stored(collection) if "revoked" in d]
    assert who(tab1)["user"] == "alice"


def test_logout_others_gives_the_device_a_new_token(app, clock, collection):
    # After a password change: a copy of the device's remember-me cookie made
    # before logout_others restores nothing, while the device's own cookie,
    # sent again with a new token, keeps working.
    ext = app.extensions["test_ext"]

    @app.post("/password-changed")
    def password_changed():
        return {"ended": ext.logout_others(current_user)}

    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    copy = remember_cookie(phone)
    assert phone.post("/password-changed").status_code == 200
    assert remember_cookie(phone) != copy
    thief = app.test_client()
    thief.set_cookie("remember_token", copy)
    assert who(thief)["user"] is None  # (within 30 s: taken for another tab)
    restart_browser(phone)
    assert who(phone)["user"] == "alice"
    # Later, the copy is taken for a stolen cookie: the device is signed out
    # too, and told why (the user signs in again).
    clock.advance(seconds=31)
    assert who(thief)["user"] is None
    assert who(phone)["user"] is None
    assert not [d for d in stored(collection) if "revoked" not in d]


def test_logout_others_right_after_a_restore_keeps_the_grace(app, clock, collection):
    # After a browser restart one tab restores (a new token) and the user
    # logs out the other devices at once, while a second tab's slow request,
    # sent with the token before the restore, has yet to ask for the user.
    # That tab is no thief: logout_others does not rotate the token again.
    ext = app.extensions["test_ext"]

    @app.post("/logout-others")
    def logout_others():
        return {"ended": ext.logout_others(current_user)}

    tab1, finish_slow_tab = _a_restarted_browser_with_a_slow_tab(app)
    assert who(tab1)["user"] == "alice"  # restores: a new token
    assert tab1.post("/logout-others").status_code == 200
    clock.advance(seconds=5)
    finish_slow_tab()
    assert not [d for d in stored(collection) if "revoked" in d]
    assert who(tab1)["user"] == "alice"


@pytest.mark.parametrize("cookie_session", [False, True])
@pytest.mark.parametrize("kind", ["another key", "garbage"])
@pytest.mark.parametrize("with_cart", [False, True])
def test_a_logout_deletes_a_remember_cookie_that_does_not_verify(
    collection, cookie_session, kind, with_cart
):
    # A restarted browser's remember-me cookie, signed with a key this worker
    # does not know yet (a rolling SECRET_KEY rotation), or garbage: a logout
    # deletes it, as Flask-Login deletes its own, or it would sign the browser
    # in again on a worker that knows the key. Nothing to look up for it.
    # (single_session's own cookie comes from an app on another collection.)
    elsewhere = make_app(
        None if cookie_session else mongomock.MongoClient().db.other,
        cookie_session=cookie_session,
    )
    elsewhere.config["SECRET_KEY"] = "new key"
    other = elsewhere.test_client()
    other.post("/login/alice?remember=1")
    value = remember_cookie(other) if kind == "another key" else "garbage"
    app = make_app(collection, cookie_session=cookie_session)
    client = app.test_client()
    if with_cart:
        client.post("/set/cart", json=[1])
    client.set_cookie("remember_token", value)
    if not cookie_session:
        collection.reset()
    response = client.post("/logout")
    deleted = [
        h.split("=", 1)[0]
        for h in response.headers.getlist("Set-Cookie")
        if "Max-Age=0" in h
    ]
    assert "remember_token" in deleted
    if not cookie_session:
        assert collection.ops() == (["find_one"] if with_cart else [])


def test_a_device_signed_out_by_a_later_login_cannot_come_back(app):
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    laptop = app.test_client()
    laptop.post("/login/alice")
    restart_browser(phone)
    assert who(phone)["user"] is None
    assert remember_cookie(phone) is None
    assert who(laptop)["user"] == "alice"


def test_logout_everywhere_ends_remember_me(app):
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    with app.app_context():
        assert logout_everywhere("alice") == 1
    restart_browser(phone)
    assert who(phone)["user"] is None


def test_revoke_ends_remember_me(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice?remember=1")
    laptop.post("/login/alice")
    with app.app_context():
        handle = next(s.handle for s in ext.sessions_of("alice") if s.remembered)
        assert ext.revoke("alice", handle)
    restart_browser(phone)
    assert who(phone)["user"] is None
    assert who(laptop)["user"] == "alice"


def test_the_remember_cookie_is_deleted_with_its_attributes(collection):
    # A browser ignores the deletion of a __Host- (or __Secure-) cookie that is
    # not Secure: the device would keep presenting it.
    app = make_app(
        collection,
        REMEMBER_COOKIE_NAME="__Host-remember",
        REMEMBER_COOKIE_SECURE=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="__Host-session",
        SESSION_COOKIE_SECURE=True,
    )
    client = app.test_client()
    https = {"base_url": "https://localhost"}
    client.post("/login/alice?remember=1", **https)
    response = client.post("/logout", **https)
    (header,) = [
        h
        for h in response.headers.getlist("Set-Cookie")
        if h.startswith("__Host-remember=")
    ]
    assert "Max-Age=0" in header
    assert "Secure" in header and "SameSite=Lax" in header and "HttpOnly" in header
    assert client.get_cookie("__Host-remember", domain="localhost") is None


def test_logout_deletes_the_remember_cookie(app, collection):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    client.post("/logout")
    assert remember_cookie(client) is None
    assert stored(collection) == []


def test_flask_logins_own_cookie_is_not_honoured(app):
    # The same value on every device of a user: it cannot be revoked, so it
    # must not log anyone in.
    with app.test_request_context():
        legacy = encode_cookie("alice")
    client = app.test_client()
    client.set_cookie("remember_token", legacy)
    assert who(client)["user"] is None
    assert remember_cookie(client) is None


def test_flask_logins_own_cookie_is_not_honoured_behind_a_dead_login(app):
    # The session names a user the user_loader no longer knows (a deleted
    # account): Flask-Login then falls back on the remember cookie, and a cookie
    # of its own for another user must not log the request in as that user.
    client = app.test_client()
    client.post("/login/carol")
    with app.test_request_context():
        legacy = encode_cookie("alice")
    client.set_cookie("remember_token", legacy)
    carol = USERS.pop("carol")
    try:
        assert who(client)["user"] is None
        assert client.get("/private").status_code == 401
    finally:
        USERS["carol"] = carol


@pytest.mark.parametrize("left_moving", [False, True])
def test_a_remember_me_of_a_user_who_no_longer_loads_ends_on_the_server(
    collection, left_moving
):
    # The account was disabled for a moment when the device came back: its
    # remember-me cookie is deleted, and the server-side remember-me ends with
    # it (under "deny" it would keep the user's only place for a year). Also
    # when a restore that died half-way long ago left it marked as moving.
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    clock = app.extensions["single_session"].clock
    device = app.test_client()
    device.post("/login/carol?remember=1")
    clock.advance(days=40)  # the session idled out
    if left_moving:
        collection._inner.update_one(
            {"user_id": "carol"},
            {"$set": {"moving": clock() - timedelta(hours=1), "move_id": "dead"}},
        )
    carol = USERS.pop("carol")
    try:
        assert who(device)["user"] is None
        assert device.get_cookie("remember_token") is None
    finally:
        USERS["carol"] = carol
    assert stored(collection, user_id="carol") == []
    assert device.post("/login/carol").status_code == 200


def test_a_user_who_fails_to_load_in_one_tab_keeps_another_tabs_restore(collection):
    # After a browser restart two tabs restore at once; the user_loader fails
    # for a moment in the second, which found the remember-me before the
    # first restored it. What the first restored stands.
    app = make_app(collection)
    login_manager = app.login_manager
    load_user, failing = login_manager._user_callback, threading.Event()
    login_manager._user_callback = lambda user_id: (
        None if failing.is_set() else load_user(user_id)
    )
    tab1 = app.test_client()
    tab1.post("/login/alice?remember=1")
    tab2 = app.test_client()
    tab2.set_cookie("remember_token", remember_cookie(tab1))
    restart_browser(tab1)
    store = app.extensions["single_session"].store
    found, go_on = threading.Event(), threading.Event()
    find_remembered = store.find_remembered

    def paused(*args, **kwargs):
        result = find_remembered(*args, **kwargs)
        store.find_remembered = find_remembered
        found.set()
        assert go_on.wait(10)
        return result

    store.find_remembered = paused
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=tab2.get("/me")))
    thread.start()
    assert found.wait(10)
    assert who(tab1)["user"] == "alice"  # restores meanwhile
    failing.set()
    go_on.set()
    thread.join(10)
    failing.clear()
    assert out["r"].json["user"] is None
    assert who(tab1)["user"] == "alice"


def test_a_restore_refused_by_the_policy_is_not_read_by_flask_login(collection):
    # Under "deny", a remembered device whose place went to others is refused;
    # Flask-Login must not then read this library's cookie as its own (it would
    # hand the token to the user_loader as a user id).
    app = make_app(
        collection, SINGLE_SESSION_ON_LIMIT="deny", SINGLE_SESSION_MAX_SESSIONS=2
    )
    asked = []
    user_loader = app.login_manager._user_callback
    app.login_manager.user_loader(
        lambda user_id: asked.append(user_id) or user_loader(user_id)
    )
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice?remember=1")
    restart_browser(laptop)
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1  # the plan was downgraded
    asked.clear()
    response = laptop.get("/me")
    assert response.status_code == 200
    assert response.json["user"] is None
    assert set(asked) <= {"alice"}
    assert remember_cookie(laptop) is None
    assert who(phone)["user"] == "alice"


def test_flask_login_never_sets_its_own_cookie(collection):
    app = make_app(collection, REMEMBER_COOKIE_REFRESH_EACH_REQUEST=True)
    client = app.test_client()
    client.post("/login/alice")  # not remembered
    response = client.get("/me")
    assert not any(
        h.startswith("remember_token=") for h in response.headers.getlist("Set-Cookie")
    )
    assert remember_cookie(client) is None


def test_refresh_each_request_keeps_our_value(collection):
    app = make_app(collection, REMEMBER_COOKIE_REFRESH_EACH_REQUEST=True)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    value = remember_cookie(client)
    response = client.get("/me")
    (header,) = [
        h
        for h in response.headers.getlist("Set-Cookie")
        if h.startswith("remember_token=")
    ]
    assert header.startswith(f"remember_token={value};")


def test_refresh_each_request_pushes_the_expiry_on_a_restore(collection):
    # One page a day, the browser closed in between, a one-day remember-me
    # refreshed on each request: each restore pushes the expiry forward on
    # the server too (as Flask-Login's restore does for its cookie).
    app = make_app(
        collection,
        REMEMBER_COOKIE_REFRESH_EACH_REQUEST=True,
        REMEMBER_COOKIE_DURATION=timedelta(days=1),
    )
    clock = app.extensions["single_session"].clock
    client = app.test_client()
    client.post("/login/alice?remember=1")
    for _ in range(3):
        clock.advance(hours=20)
        restart_browser(client)
        assert who(client)["user"] == "alice"


def test_remember_cookie_settings_and_duration(collection):
    app = make_app(
        collection,
        REMEMBER_COOKIE_NAME="keep_me",
        REMEMBER_COOKIE_SECURE=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_DURATION=timedelta(days=7),
    )

    @app.post("/login-short")
    def login_short():
        login_user(USERS["bob"], remember=True, duration=timedelta(hours=1))
        return "ok"

    client = app.test_client()
    response = client.post("/login/alice?remember=1")
    (header,) = [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("keep_me=")
    ]
    assert "Secure" in header and "SameSite=Lax" in header and "HttpOnly" in header
    (doc,) = stored(collection, user_id="alice")
    remaining = doc["remember"]["expires_at"] - doc["created_at"]
    assert timedelta(days=6, hours=23) < remaining <= timedelta(days=7)

    other = app.test_client()
    other.post("/login-short")
    (doc,) = stored(collection, user_id="bob")
    assert doc["remember"]["expires_at"] - doc["created_at"] <= timedelta(hours=1)
    restart_browser(other)
    assert who(other)["user"] == "bob"


def _remembering_for(collection, duration):
    """An app whose remember-me lasts ``duration``: from the config, and from
    login_user(duration=...). Returns it and the login path for each."""
    app = make_app(collection, REMEMBER_COOKIE_DURATION=duration)

    @app.post("/login-for-duration")
    def login_for_duration():
        login_user(USERS["alice"], remember=True, duration=duration)
        return "ok"

    return app, {True: "/login/alice?remember=1", False: "/login-for-duration"}


NO_DURATIONS = {
    "zero": timedelta(0),
    "negative": timedelta(days=-1),
    "seconds, negative": -(10**15),
    "seconds, minus infinity": float("-inf"),
}


@pytest.mark.parametrize(
    "duration, from_config",
    [(d, True) for d in NO_DURATIONS.values()]
    # (login_user() takes a timedelta only)
    + [(d, False) for d in NO_DURATIONS.values() if isinstance(d, timedelta)],
    ids=[f"{name}, config" for name in NO_DURATIONS]
    + [f"{n}, login_user" for n, d in NO_DURATIONS.items() if isinstance(d, timedelta)],
)
def test_a_remember_me_of_no_duration_keeps_the_login_and_drops_the_cookie(
    collection, duration, from_config
):
    """As with Flask-Login alone, whose cookie would expire at once: the login
    stands, and the device is not remembered (its old remember-me goes)."""
    app, login_path = _remembering_for(collection, duration)
    client = app.test_client()
    app.config["REMEMBER_COOKIE_DURATION"] = timedelta(days=365)
    client.post("/login/alice?remember=1")  # a remember-me of the default length
    assert remember_cookie(client) is not None
    app.config["REMEMBER_COOKIE_DURATION"] = duration
    client.post(login_path[from_config])
    assert who(client)["user"] == "alice"
    assert who(client)["user"] == "alice"
    assert remember_cookie(client) is None
    (doc,) = stored(collection, user_id="alice")
    assert "remember" not in doc
    restart_browser(client)
    assert who(client)["user"] is None


@pytest.mark.parametrize("from_config", [True, False])
def test_a_remember_me_longer_than_a_century_is_cut_to_one(
    collection, clock, from_config
):
    app, login_path = _remembering_for(collection, timedelta(days=365 * 101))
    client = app.test_client()
    client.post(login_path[from_config])
    assert who(client)["user"] == "alice"
    (doc,) = stored(collection, user_id="alice")
    assert doc["remember"]["seconds"] == timedelta(days=36500).total_seconds()
    clock.advance(days=365 * 50)
    restart_browser(client)
    assert who(client)["user"] == "alice"


def test_expired_remember_me_does_not_restore(app, clock):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    clock.advance(days=366)
    restart_browser(client)
    assert who(client)["user"] is None


def test_remembered_device_outlives_its_idle_session(app, clock, collection):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    clock.advance(days=40)  # past the 31-day idle lifetime
    # The session cookie alone no longer works, but the device is remembered.
    assert who(client) == {"user": "alice", "fresh": False}


def test_restore_goes_through_the_policy(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    restart_browser(phone)
    # The device's own slot is handed over to its restored session.
    assert who(phone)["user"] == "alice"
    laptop = app.test_client()
    assert laptop.post("/login/alice").status_code == 409


def test_restored_session_keeps_its_place_in_login_order(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=2)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice?remember=1")
    laptop.post("/login/alice")
    restart_browser(phone)
    assert who(phone)["user"] == "alice"
    tablet = app.test_client()
    tablet.post("/login/alice")
    # The phone logged in first: it is the one evicted, restore or not.
    assert who(phone)["user"] is None
    assert who(laptop)["user"] == "alice"


def test_user_deleted_meanwhile(app):
    from conftest import USERS as users

    client = app.test_client()
    client.post("/login/carol?remember=1")
    carol = users.pop("carol")
    try:
        restart_browser(client)
        assert who(client)["user"] is None
        assert remember_cookie(client) is None
    finally:
        users["carol"] = carol


def test_restore_uses_request_ip(app, collection):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    restart_browser(client)
    client.get("/me", environ_base={"REMOTE_ADDR": "10.0.0.7"})
    (doc,) = stored(collection, user_id="alice")
    assert doc["device"]["ip"] == "10.0.0.7"
    assert request is not None


def test_restore_survives_strong_session_protection(collection):
    from flask_login.signals import session_protected

    app = make_app(collection)
    app.login_manager.session_protection = "strong"
    protected = Recorder(session_protected, app)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    restart_browser(client)
    assert who(client) == {"user": "alice", "fresh": False}
    assert who(client)["user"] == "alice"
    assert protected.calls == []


def test_restore_waits_for_the_apps_before_request_functions(collection):
    # As with Flask-Login's own cookie, the login is restored when the request
    # first asks for the user: after the app's before_request functions (here
    # one that the user_loader relies on), and not for requests that never ask.
    app = make_app(collection)
    user_loader = app.login_manager._user_callback

    @app.before_request
    def pick_tenant():
        g.tenant = "acme"

    def tenant_user_loader(user_id):
        assert g.tenant == "acme"
        return user_loader(user_id)

    app.login_manager.user_loader(tenant_user_loader)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    restart_browser(client)
    before = stored(collection, user_id="alice")
    # A request that never asks for the user leaves the login where it is.
    assert client.get("/plain").status_code == 200
    assert stored(collection, user_id="alice") == before
    assert who(client) == {"user": "alice", "fresh": False}
    assert stored(collection, user_id="alice") != before  # restored: a new id


def test_a_login_replaces_a_remembered_login_not_restored_yet(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    restart_browser(client)
    client.post("/set/cart", json=["pen"])  # does not ask for the user
    assert client.post("/login/bob").json == {"user": "bob"}
    assert stored(collection, user_id="alice") == []
    assert remember_cookie(client) is None
    assert client.get("/get/cart").json == {"value": ["pen"]}
    client.post("/logout")
    restart_browser(client)
    assert who(client)["user"] is None


def test_logging_in_again_without_remember_me_deletes_the_old_cookie(app, collection):
    client = app.test_client()
    client.post("/login/alice?remember=1")
    assert remember_cookie(client) is not None
    client.post("/login/alice")  # the same user, this time not remembered
    assert remember_cookie(client) is None
    assert len(stored(collection, user_id="alice")) == 1
    restart_browser(client)
    assert who(client)["user"] is None


def test_a_remembered_device_revoked_while_away_is_told_why(collection):
    # The device comes back with its remember-me cookie alone (its browser was
    # closed): it is told why, as a device with its session cookie would be.
    app = make_app(collection)
    revoked = Recorder(session_revoked, app)

    @app.get("/why")
    def why():
        reason = current_revocation()
        return {
            "user": current_user.get_id(),
            "reason": reason and reason.reason,
            "flashed": get_flashed_messages(),
        }

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice?remember=1")
    restart_browser(phone)
    laptop.post("/login/alice")  # signs the phone out
    told = phone.get("/why").json
    assert told["user"] is None
    assert told["reason"] == "signed_in_elsewhere"
    assert len(told["flashed"]) == 1
    assert [call["reason"] for call in revoked.calls] == ["signed_in_elsewhere"]
    assert remember_cookie(phone) is None
    # Told once.
    assert phone.get("/why").json == {"user": None, "reason": None, "flashed": []}


def test_a_user_who_no_longer_loads_is_anonymous_not_a_500(collection):
    # The account of a remembered, signed-in device is deleted. Flask-Login
    # then falls back to the remember cookie on its own and would hand this
    # library's token to the user_loader as a user id: with the usual int()
    # loader, a 500 on every request, and a secret in the app's hands.
    app = make_app(collection)
    accounts = {5: USERS["alice"]}
    asked = []

    @app.login_manager.user_loader
    def load_user(user_id):
        asked.append(user_id)
        return accounts.get(int(user_id))

    @app.post("/login-5")
    def login_5():
        login_user(accounts[5], remember=True)
        return {"ok": True}

    USERS["alice"].id, alice_id = 5, USERS["alice"].id
    try:
        device = app.test_client()
        assert device.post("/login-5").status_code == 200
        assert device.get("/me").json["user"] == "5"
        del accounts[5]
        answers = [device.get("/me") for _ in range(3)]
    finally:
        USERS["alice"].id = alice_id
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.json["user"] for r in answers] == [None, None, None]
    assert set(asked) == {"5"}  # only ever a user id
