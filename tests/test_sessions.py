"""The session interface behaves like Flask's cookie session, with the data on
the server (promises 1, 2, 3, 8, 9, 11 and 12)."""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import make_response
from flask import request
from flask import session
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from itsdangerous import Signer
from pymongo import ReadPreference
from werkzeug.http import parse_cookie

from conftest import make_app
from conftest import stored
from conftest import USERS
from single_session import SessionDataError
from single_session import SessionTooLarge
from single_session import SingleSession


def cookie_value(client, name="session"):
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def set_cookie_headers(response, name="session"):
    return [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")
    ]


def test_cookieless_requests_write_nothing(app, collection):
    client = app.test_client()
    for _ in range(200):
        response = client.get("/plain")
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    for _ in range(200):
        # Reading an empty session does not create one either.
        client.get("/get/cart")
    assert collection.ops() == []
    assert stored(collection) == []


def test_a_permanent_flag_alone_is_not_worth_a_session(app, collection):
    # A common snippet: every visitor's session made permanent in a
    # before_request function. Bots still cost nothing and get no cookie.
    @app.before_request
    def make_permanent():
        session.permanent = True

    for _ in range(100):
        response = app.test_client().get("/me")
        assert response.status_code == 200
        assert response.headers.getlist("Set-Cookie") == []
    assert stored(collection) == []
    client = app.test_client()
    client.post("/set/cart", json=["pen"])
    assert client.get_cookie("session").expires is not None  # permanent
    (document,) = stored(collection)
    assert document["data"]["_permanent"] == "true"


def test_nothing_stored_until_the_session_holds_something(app, collection):
    client = app.test_client()
    response = client.post("/set/cart", json=[1, 2])
    assert response.status_code == 200
    docs = stored(collection)
    assert len(docs) == 1
    sid_cookie = cookie_value(client)
    assert sid_cookie
    assert client.get("/get/cart").json == {"value": [1, 2]}


def test_the_database_holds_only_a_hash_of_the_id(app, collection):
    client = app.test_client()
    client.post("/set/k", json="v")
    signed = cookie_value(client)
    sid = signed.rsplit(".", 1)[0]
    (doc,) = stored(collection)
    assert doc["_id"] == hashlib.sha256(sid.encode()).hexdigest()
    assert sid not in repr(doc)
    # 256 random bits, URL-safe base64.
    assert len(sid) == 43


def test_one_indexed_read_per_ordinary_request(app, collection):
    client = app.test_client()
    client.post("/login/alice")
    client.get("/me")
    collection.reset()
    for _ in range(5):
        assert client.get("/me").json["user"] == "alice"
    assert collection.ops() == ["find_one"] * 5
    for _, query in collection.log:
        assert set(query) == {"_id", "$or"}


def test_unmodified_session_is_touched_only_after_the_interval(app, collection, clock):
    client = app.test_client()
    client.post("/set/k", json=1)
    (before,) = stored(collection)
    clock.advance(seconds=30)
    collection.reset()
    client.get("/get/k")
    assert collection.ops() == ["find_one"]
    clock.advance(seconds=31)
    collection.reset()
    client.get("/get/k")
    assert collection.ops() == ["find_one", "update_one"]
    (after,) = stored(collection)
    assert after["seen_at"] > before["seen_at"]
    assert after["expires_at"] > before["expires_at"]


def test_a_session_in_use_outlives_an_idle_lifetime_shorter_than_the_touch_interval(
    collection,
):
    """With PERMANENT_SESSION_LIFETIME below SINGLE_SESSION_TOUCH_INTERVAL, an
    unmodified session would never be written back, and would expire while
    in use: the touch interval is held to half the idle lifetime."""
    app = make_app(collection, PERMANENT_SESSION_LIFETIME=timedelta(seconds=30))
    clock = app.extensions["single_session"].clock
    client = app.test_client()
    client.post("/login/alice")
    for _ in range(6):
        clock.advance(seconds=20)
        assert client.get("/me").json["user"] == "alice"
    clock.advance(seconds=31)  # idle past the lifetime
    assert client.get("/me").json["user"] is None


@pytest.mark.parametrize(
    "lifetime", [timedelta(days=365 * 9000), 10**12, timedelta.max]
)
def test_an_idle_lifetime_past_a_hundred_years_is_cut_to_that(collection, lifetime):
    # Flask takes any PERMANENT_SESSION_LIFETIME; a stored expiry must still
    # be a date (a datetime stops at the year 9999).
    app = make_app(collection, PERMANENT_SESSION_LIFETIME=lifetime)

    @app.post("/permanent")
    def permanent():
        session.permanent = True
        return "ok"

    client = app.test_client()
    assert client.post("/set/cart", json=["pen"]).status_code == 200
    assert client.post("/login/alice").status_code == 200
    assert client.post("/permanent").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.expires is not None
    assert cookie.expires.year < datetime.now().year + 101
    clock = app.extensions["single_session"].clock
    clock.advance(days=365 * 99)
    assert client.get("/me").json["user"] == "alice"
    assert client.get("/get/cart").json == {"value": ["pen"]}
    (doc,) = stored(collection)
    assert doc["expires_at"] - doc["seen_at"] == timedelta(days=36500)


def test_a_write_sends_only_the_keys_that_changed(app, collection):
    client = app.test_client()
    client.post("/set/a", json=1)
    client.post("/set/b", json=2)
    collection.reset()
    client.post("/set/b", json=3)
    ((name, _),) = [entry for entry in collection.log if entry[0] == "update_one"]
    (doc,) = stored(collection)
    assert client.get("/get/a").json == {"value": 1}
    assert client.get("/get/b").json == {"value": 3}
    assert set(doc["data"]) == {"a", "b"}


def test_two_requests_changing_different_keys_keep_both(app, collection):
    # Flask's cookie session would keep only the last response's cookie.
    client = app.test_client()
    client.post("/set/base", json=0)
    with app.test_request_context():
        pass
    first = app.test_client()
    second = app.test_client()
    value = cookie_value(client)
    first.set_cookie("session", value)
    second.set_cookie("session", value)
    first.post("/set/a", json="from first")
    second.post("/set/b", json="from second")
    assert client.get("/get/a").json == {"value": "from first"}
    assert client.get("/get/b").json == {"value": "from second"}


def test_emptied_session_is_deleted_with_its_cookie(app, collection):
    @app.post("/clear")
    def clear():
        session.clear()
        return "cleared"

    client = app.test_client()
    client.post("/set/k", json=1)
    response = client.post("/clear")
    (header,) = set_cookie_headers(response)
    assert "Expires=Thu, 01 Jan 1970" in header
    assert stored(collection) == []
    assert "Cookie" in response.headers["Vary"]


def test_vary_cookie_follows_flasks_rules(collection):
    # Flask-Login's after_request reads the session on every request, so with
    # it even Flask's cookie session varies on Cookie; compare rather than guess.
    ours = make_app(collection)
    flasks = make_app(collection, cookie_session=True)
    for app in (ours, flasks):

        @app.get("/untouched")
        def untouched():
            return "x"

    def vary(app, path):
        client = app.test_client()
        client.post("/set/x", json=1)
        return "Cookie" in client.get(path).headers.get("Vary", "")

    for path in ("/untouched", "/get/x", "/me"):
        assert vary(ours, path) == vary(flasks, path), path
    assert vary(ours, "/get/x")


def test_vary_keeps_the_apps_own_as_flask_does(collection):
    def vary(app):
        @app.get("/negotiated")
        def negotiated():
            response = make_response(str(session.get("x")))
            response.vary.add("Accept-Encoding")
            return response

        client = app.test_client()
        client.post("/set/x", json=1)
        return client.get("/negotiated").headers.getlist("Vary")

    ours = vary(make_app(collection))
    assert ours == vary(make_app(collection, cookie_session=True))
    assert ours == ["Accept-Encoding, Cookie"]


@pytest.mark.parametrize("permanent", [False, True])
def test_vary_cookie_without_flask_login_is_flasks(collection, permanent):
    # Without Flask-Login nothing reads the session behind the app's back: a
    # response that never touched it must not vary on Cookie, as with Flask's
    # cookie session, and one that read it must.
    def bare(ours):
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "test"
        if ours:
            SingleSession(app, collection=collection)

        @app.post("/set")
        def set_value():
            session.permanent = permanent
            session["x"] = 1
            return "ok"

        @app.get("/untouched")
        def untouched():
            return "x"

        @app.get("/read")
        def read():
            return str(session.get("x"))

        return app

    def vary(app, path):
        client = app.test_client()
        client.post("/set")
        return "Cookie" in client.get(path).headers.get("Vary", "")

    # (A permanent session's cookie is set again on every request, to move its
    # expiry: that response varies on Cookie too.)
    for path, expected in (("/untouched", permanent), ("/read", True)):
        assert vary(bare(True), path) == vary(bare(False), path) == expected, path


def test_permanent_session_cookie_expiry_and_refresh(collection):
    app = make_app(collection, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))

    @app.post("/permanent")
    def permanent():
        session.permanent = True
        session["x"] = 1
        return "ok"

    client = app.test_client()
    response = client.post("/permanent")
    (header,) = set_cookie_headers(response)
    assert "Expires=" in header
    collection.reset()
    # SESSION_REFRESH_EACH_REQUEST: the cookie is set again, with no write.
    response = client.get("/get/x")
    assert set_cookie_headers(response)
    assert collection.ops() == ["find_one"]
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    assert not set_cookie_headers(client.get("/get/x"))


def test_non_permanent_session_is_a_browser_session_cookie(app):
    client = app.test_client()
    (header,) = set_cookie_headers(client.post("/set/x", json=1))
    assert "Expires=" not in header
    # Not refreshed on reads: the cookie only changes when the session does.
    assert not set_cookie_headers(client.get("/get/x"))


def test_cookie_attributes_follow_flask_config(collection):
    app = make_app(
        collection,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/app",
    )
    response = app.test_client().post("/set/x", json=1)
    (header,) = set_cookie_headers(response, "sid")
    assert "Secure" in header and "SameSite=Strict" in header and "Path=/app" in header
    assert "HttpOnly" in header


def test_invalid_samesite_is_rejected_as_flask_does(collection):
    app = make_app(collection, SESSION_COOKIE_SAMESITE="Sometimes")
    app.testing = False
    response = app.test_client().post("/set/x", json=1)
    assert response.status_code == 500


def test_missing_secret_key_gives_flasks_error(collection):
    app = make_app(collection)
    app.config["SECRET_KEY"] = None
    with pytest.raises(
        RuntimeError, match="session is unavailable because no secret key"
    ):
        app.test_client().post("/set/x", json=1)
    assert stored(collection) == []


def test_secret_key_rotation(collection):
    app = make_app(collection)
    client = app.test_client()
    client.post("/set/x", json="kept")
    app.config["SECRET_KEY_FALLBACKS"] = ["test secret"]
    app.config["SECRET_KEY"] = "new secret"
    assert client.get("/get/x").json == {"value": "kept"}
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/get/x").json == {"value": None}


def test_rotation_re_signs_the_cookie_with_the_new_key(collection):
    app = make_app(collection)
    client = app.test_client()
    client.post("/set/x", json="kept")
    old = client.get_cookie("session").value
    app.config["SECRET_KEY_FALLBACKS"] = ["test secret"]
    app.config["SECRET_KEY"] = "new secret"
    client.post("/set/y", json=1)
    assert client.get_cookie("session").value != old
    # The browser now holds a cookie that no longer needs the old key.
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/get/x").json == {"value": "kept"}


def test_a_write_leaves_a_standing_cookie_alone(collection):
    """The cookie holds only the id: a change to the session's contents needs no
    new cookie, unless its expiry moves (a permanent session)."""
    app = make_app(collection, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))

    @app.post("/permanent/<flag>")
    def permanent(flag):
        session.permanent = flag == "on"
        return "ok"

    client = app.test_client()
    first = client.post("/set/x", json=1)
    (header,) = set_cookie_headers(first)
    value = client.get_cookie("session").value
    assert not set_cookie_headers(client.post("/set/y", json=2))
    # Made permanent: the same value, now with an expiry.
    (header,) = set_cookie_headers(client.post("/permanent/on"))
    assert header.startswith(f"session={value};") and "Expires=" in header
    (header,) = set_cookie_headers(client.post("/set/z", json=3))
    assert header.startswith(f"session={value};") and "Expires=" in header
    # Back to a browser-session cookie: set again, without an expiry.
    (header,) = set_cookie_headers(client.post("/permanent/off"))
    assert header.startswith(f"session={value};") and "Expires=" not in header
    assert client.get("/get/x").json == {"value": 1}


def test_modified_and_accessed_flags_match_flask(collection):
    def flags_of(app):
        seen = {}

        @app.get("/flags")
        def flags():
            seen["start"] = session.modified
            session.get("x")
            seen["after_read"] = (session.modified, session.accessed)
            session["y"] = 1
            seen["after_write"] = (session.modified, session.accessed)
            return "ok"

        app.test_client().get("/flags")
        return seen

    ours = flags_of(make_app(collection))
    assert ours == flags_of(make_app(collection, cookie_session=True))
    assert ours["after_write"] == (True, True)


def test_nested_change_needs_modified_like_flask(app):
    @app.post("/append")
    def append():
        session["items"].append(len(session["items"]))
        return "ok"

    @app.post("/append-modified")
    def append_modified():
        session["items"].append(len(session["items"]))
        session.modified = True
        return "ok"

    client = app.test_client()
    client.post("/set/items", json=[])
    client.post("/append")
    assert client.get("/get/items").json == {"value": []}
    client.post("/append-modified")
    assert client.get("/get/items").json == {"value": [0]}


def test_saving_never_upserts_a_session_that_vanished_during_the_request(
    app, collection
):
    @app.post("/vanish-then-write")
    def vanish_then_write():
        session.get("x")  # loaded...
        collection._inner.delete_many({})  # ...then removed by someone else
        session["y"] = 2
        return "ok"

    client = app.test_client()
    client.post("/set/x", json=1)
    collection.reset()
    response = client.post("/vanish-then-write")
    assert response.status_code == 200
    assert stored(collection) == []
    assert "update_one" in collection.ops()
    assert "insert_one" not in collection.ops()
    # The cookie is left for the next request to find out what became of the
    # session (a revoked one is told why): here, nothing, and the cookie goes.
    assert set_cookie_headers(response) == []
    response = client.get("/get/y")
    assert response.json == {"value": None}
    (header,) = set_cookie_headers(response)
    assert "Expires=Thu, 01 Jan 1970" in header
    assert stored(collection) == []


def test_a_signed_but_unknown_id_is_never_adopted(app, collection):
    victim = app.test_client()
    victim.post("/set/x", json=1)
    forged = cookie_value(victim)
    collection._inner.delete_many({})
    attacker = app.test_client()
    attacker.set_cookie("session", forged)
    attacker.post("/set/y", json=2)
    assert cookie_value(attacker) != forged
    (doc,) = stored(collection)
    sid = forged.rsplit(".", 1)[0]
    assert doc["_id"] != hashlib.sha256(sid.encode()).hexdigest()


@pytest.mark.parametrize(
    "cookie",
    [
        "",
        "garbage",
        "a" * 8192,
        "abc\x00def",
        "not.signed.at.all",
        '{"$ne": null}',
    ],
)
def test_bad_cookies_give_a_fresh_session_without_a_query(app, collection, cookie):
    client = app.test_client()
    collection.reset()
    response = client.get("/get/x", headers={"Cookie": "session=" + cookie})
    assert response.status_code == 200
    assert response.json == {"value": None}
    assert collection.ops() == []


def test_tampered_and_other_salt_cookies(app, collection):
    from itsdangerous import Signer

    client = app.test_client()
    client.post("/set/x", json=1)
    good = cookie_value(client)
    sid, sig = good.rsplit(".", 1)
    other_salt = Signer("test secret", salt="cookie-session").sign(sid).decode()
    for bad in (sid + "." + sig[:-2] + "AA", sid, other_salt):
        other = app.test_client()
        other.set_cookie("session", bad)
        collection.reset()
        assert other.get("/get/x").json == {"value": None}
        assert collection.ops() == []


@pytest.mark.parametrize("cookie_session", [False, True])
def test_a_cookie_signed_with_an_unknown_key_is_left_alone(collection, cookie_session):
    # A rolling deploy that rotates SECRET_KEY: a worker that does not know the
    # new key yet sees the cookie as unsigned. Visiting it must not sign the
    # browser out; a write there starts a new session, as with Flask's own.
    new = make_app(collection, cookie_session=cookie_session)
    new.config.update(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["test secret"])
    old = make_app(collection, cookie_session=cookie_session)

    @old.post("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    browser = new.test_client()
    browser.post("/login/alice")
    on_old = old.test_client()
    on_old.set_cookie("session", browser.get_cookie("session").value)
    response = on_old.get("/me")
    assert response.json["user"] is None
    assert response.headers.getlist("Set-Cookie") == []
    # Beside a remember-me cookie it cannot verify either (which stays too;
    # Flask-Login's own after_request changes the session then, removing what
    # the library left there for it).
    browser.post("/login/alice?remember=1")
    on_old.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    response = on_old.get("/me")
    on_old.delete_cookie("remember_token")
    assert response.json["user"] is None
    assert response.headers.getlist("Set-Cookie") == []
    assert browser.get("/me").json["user"] == "alice"
    # A view that empties the session deletes it (a logout by clearing).
    (deleted,) = on_old.post("/clear").headers.getlist("Set-Cookie")
    assert deleted.startswith("session=;")
    # So does a logout, the remember-me cookie with it (the browser asked to
    # be signed out, whichever worker got the request).
    on_old.set_cookie("session", browser.get_cookie("session").value)
    on_old.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    deleted = on_old.post("/logout").headers.getlist("Set-Cookie")
    assert sorted(h.split("=", 1)[0] for h in deleted) == ["remember_token", "session"]
    assert all("Max-Age=0" in h for h in deleted)
    on_old.set_cookie("session", browser.get_cookie("session").value)
    assert on_old.post("/set/x", json=1).headers.getlist("Set-Cookie") != []
    assert on_old.get("/get/x").json == {"value": 1}


def test_unstorable_value_names_the_key_and_keeps_the_session(app, collection):
    @app.post("/bad")
    def bad():
        session["ok"] = "changed"
        session["bad"] = {1, 2}
        return "ok"

    client = app.test_client()
    client.post("/set/ok", json="original")
    with pytest.raises(SessionDataError, match="'bad'"):
        client.post("/bad")
    assert client.get("/get/ok").json == {"value": "original"}


def test_session_over_the_size_limit(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=1000)
    client = app.test_client()
    client.post("/set/small", json="x")
    with pytest.raises(SessionTooLarge, match="1000 bytes"):
        client.post("/set/big", json="y" * 2000)
    assert client.get("/get/big").json == {"value": None}
    assert client.get("/get/small").json == {"value": "x"}


def test_idle_expiry_is_checked_at_read_time(app, collection, clock, monkeypatch):
    # mongomock deletes TTL-expired documents on every access; MongoDB's TTL
    # monitor runs about once a minute. Turn the emulation off so the expired
    # document is still there when the request comes.
    import mongomock.store

    monkeypatch.setattr(
        mongomock.store.CollectionStore, "_remove_expired_documents", lambda self: None
    )
    client = app.test_client()
    client.post("/set/x", json=1)
    clock.advance(days=32)  # PERMANENT_SESSION_LIFETIME is 31 days
    # Make the stored expiry really past for the store's own clock as well.
    collection._inner.update_many(
        {}, {"$set": {"expires_at": clock() - timedelta(days=1)}}
    )
    assert len(stored(collection)) == 1  # still stored...
    assert client.get("/get/x").json == {"value": None}  # ...but treated as absent


def test_absolute_lifetime(collection, monkeypatch):
    app = make_app(
        collection,
        SINGLE_SESSION_ABSOLUTE_LIFETIME=3600,
        SINGLE_SESSION_TOUCH_INTERVAL=0,
    )
    clock = app.extensions["single_session"].clock
    client = app.test_client()
    client.post("/set/x", json=1)
    for _ in range(3):
        clock.advance(minutes=19)
        assert client.get("/get/x").json == {"value": 1}
    (doc,) = stored(collection)
    # Sliding idle expiry never goes past the absolute one.
    assert doc["expires_at"] == doc["absolute_expires_at"]
    clock.advance(minutes=25)  # 82 minutes after creation, active all along
    assert client.get("/get/x").json == {"value": None}


def test_a_lowered_idle_lifetime_ends_idle_sessions_at_once(collection):
    # Lowering PERMANENT_SESSION_LIFETIME is a security response ("sessions
    # end after an hour idle"): as with Flask's cookie session, whose cookie is
    # checked against the setting of the moment, a session idle longer than
    # the new lifetime is gone on its next request, whatever expiry it was
    # stored with.
    app = make_app(collection)
    clock = app.extensions["single_session"].clock
    idle, active = app.test_client(), app.test_client()
    idle.post("/set/x", json=1)
    active.post("/set/x", json=1)
    clock.advance(minutes=50)
    active.post("/set/x", json=2)
    clock.advance(minutes=20)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    assert idle.get("/get/x").json == {"value": None}  # 70 minutes idle
    assert active.get("/get/x").json == {"value": 2}  # 20 minutes idle
    assert len(stored(collection)) == 1


def test_a_session_past_a_lowered_lifetime_holds_no_place(collection):
    # Ended by the lowered setting, it no longer counts under the policy nor
    # is listed, though its stored expiry is later; a remembered device keeps
    # its place (it may come back at any time).
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=2)
    clock = app.extensions["single_session"].clock
    ext = app.extensions["test_ext"]
    desk, laptop, tablet = app.test_client(), app.test_client(), app.test_client()
    desk.post("/login/alice")
    laptop.post("/login/alice")  # then idle
    clock.advance(minutes=90)
    desk.post("/set/x", json=1)  # in use
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    with app.app_context():
        assert len(ext.sessions_of("alice")) == 1
    tablet.post("/login/alice")
    assert desk.get("/me").json["user"] == "alice"  # not evicted for the laptop
    assert tablet.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


@pytest.mark.parametrize("remembered", [False, True])
def test_under_deny_a_lowered_lifetime_frees_an_idle_devices_place(
    collection, remembered
):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    clock = app.extensions["single_session"].clock
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice" + ("?remember=1" if remembered else ""))
    clock.advance(hours=2)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    # An idle laptop is signed out by the new setting: its place is free. A
    # remembered one still holds it.
    assert phone.post("/login/alice").status_code == (409 if remembered else 200)


def _with_a_paused_laptop(app):
    """A request in a thread named "laptop" loads its session, then waits for
    ``go``; returns (loaded, go)."""
    loaded, go = threading.Event(), threading.Event()

    @app.before_request
    def pause_the_laptop():
        if threading.current_thread().name == "laptop":
            session.get("x")  # (loaded)
            loaded.set()
            assert go.wait(10)

    return loaded, go


def _crossing(app, laptop, loaded, path="/set/x"):
    """The laptop's request loads its session just within a lowered lifetime,
    then waits while the clock passes the end of it."""
    clock = app.extensions["single_session"].clock
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    clock.advance(minutes=59)
    seen = {}
    thread = threading.Thread(
        target=lambda: seen.update(r=laptop.post(path, json=1)), name="laptop"
    )
    thread.start()
    assert loaded.wait(10)
    clock.advance(minutes=2)
    return thread, seen


@pytest.mark.parametrize("on_limit", ["evict", "deny"])
def test_a_request_in_flight_does_not_bring_back_a_session_past_its_lifetime(
    collection, on_limit
):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT=on_limit)
    loaded, go = _with_a_paused_laptop(app)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    thread, _ = _crossing(app, laptop, loaded)
    assert phone.post("/login/alice").status_code == 200  # in the laptop's place
    go.set()
    thread.join(10)
    assert laptop.get("/me").json["user"] is None
    assert phone.get("/me").json["user"] == "alice"
    # Raising the lifetime again brings back nothing beside the phone.
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=31)
    assert laptop.get("/me").json["user"] is None
    assert len(stored(collection, user_id="alice")) == 1


def test_logout_others_in_flight_past_the_lifetime_ends_nobody(collection):
    app = make_app(collection)

    @app.post("/others")
    def others():
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    loaded, go = _with_a_paused_laptop(app)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    thread, seen = _crossing(app, laptop, loaded, "/others")
    assert phone.post("/login/alice").status_code == 200
    go.set()
    thread.join(10)
    assert seen["r"].json == {"ended": 0}
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


def test_a_far_off_stored_date_is_no_500(collection):
    app = make_app(collection, SINGLE_SESSION_ABSOLUTE_LIFETIME=3600)
    client = app.test_client()
    client.post("/login/alice")
    far = datetime(9999, 12, 31, 23, 0, tzinfo=timezone.utc)
    collection._inner.update_one(
        {"user_id": "alice"}, {"$set": {"seen_at": far, "created_at": far}}
    )
    assert client.get("/me").status_code == 200


def test_an_absolute_lifetime_turned_on_ends_older_sessions_at_once(collection):
    app = make_app(collection, SINGLE_SESSION_TOUCH_INTERVAL=0)
    clock = app.extensions["single_session"].clock
    old, new = app.test_client(), app.test_client()
    old.post("/set/x", json=1)
    clock.advance(minutes=90)
    new.post("/set/x", json=1)
    clock.advance(minutes=10)
    app.config["SINGLE_SESSION_ABSOLUTE_LIFETIME"] = 3600
    assert old.get("/get/x").json == {"value": None}  # 100 minutes old
    assert new.get("/get/x").json == {"value": 1}  # 10 minutes old
    (doc,) = stored(collection)
    # Its next write keeps its expiry within the new limit.
    assert doc["expires_at"] <= doc["created_at"] + timedelta(hours=1)


def test_handle_reads_primary_and_writes_majority(app):
    with app.app_context():
        handle = app.extensions["single_session"].store.collection
    assert handle.read_preference == ReadPreference.PRIMARY
    assert handle.write_concern.document == {"w": "majority"}
    assert handle.codec_options.tz_aware


def test_init_app_needs_a_collection_or_uri():
    from flask import Flask

    from single_session import ConfigurationError

    with pytest.raises(ConfigurationError, match="SINGLE_SESSION_MONGODB_URI"):
        SingleSession(Flask(__name__))


def test_second_registration_is_refused(app, collection):
    with pytest.raises(RuntimeError, match="already been registered"):
        SingleSession(app, collection=collection)


def test_init_app_pattern(collection):
    from flask import Flask

    ext = SingleSession(collection=collection)
    app = Flask(__name__)
    app.secret_key = "k"
    ext.init_app(app)
    assert app.extensions["single_session"].extension is ext


def test_cookie_payload_is_only_the_signed_id(app):
    client = app.test_client()
    client.post("/set/secret", json="do not send me")
    value = cookie_value(client)
    assert "do not send me" not in value
    assert parse_cookie(f"session={value}")["session"] == value


def test_cookie_is_an_itsdangerous_signature_of_the_id(app, collection):
    """The cookie is what itsdangerous' own HMAC-SHA256 signer makes of the id,
    and the database holds the SHA-256 of that id."""
    client = app.test_client()
    client.post("/set/x", json=1)
    value = cookie_value(client)
    signer = Signer(
        "test secret", salt="single_session.session", digest_method=hashlib.sha256
    )
    sid = signer.unsign(value).decode()
    assert signer.sign(sid).decode() == value
    (doc,) = stored(collection)
    assert doc["_id"] == hashlib.sha256(sid.encode()).hexdigest()


def test_a_change_after_the_write_is_saved_too(app):
    """An after_request function that runs after the extension's (registered in
    front of it) still has its changes saved, an in-place change marked with
    ``modified`` included, as with Flask's cookie session."""

    @app.post("/late")
    def late():
        session["cart"] = ["apple"]
        return "ok"

    def change_late(response):
        if request.path == "/late":
            session["cart"].append("pear")
            session.modified = True
        return response

    app.after_request_funcs[None].insert(0, change_late)
    client = app.test_client()
    client.post("/set/x", json=1)
    client.post("/late")
    assert client.get("/get/cart").json == {"value": ["apple", "pear"]}


def test_a_value_changed_in_place_after_login_is_saved(collection):
    # Flask saves a session that was modified in a request whole, at the end:
    # login_user() modifies it, so an in-place change made after it is kept.
    for cookie_session in (True, False):
        app = make_app(collection, cookie_session=cookie_session)

        @app.post("/login-and-note")
        def login_and_note():
            session["notes"] = []
            login_user(USERS["alice"])
            session["notes"].append("added after login")
            return "ok"

        client = app.test_client()
        assert client.post("/login-and-note").status_code == 200
        assert client.get("/get/notes").json == {"value": ["added after login"]}


@pytest.mark.parametrize("refresh", [True, False])
def test_an_in_place_change_to_a_permanent_session_is_kept_as_flask_keeps_it(
    collection, refresh
):
    # Flask's cookie session serialises a permanent session whole on every
    # request when SESSION_REFRESH_EACH_REQUEST is on, so a change made in
    # place without session.modified is kept; with it off, it is lost. The
    # same here, for a change in the view and one in an after_request function
    # that runs after the library's.
    kept = {}
    for cookie_session in (True, False):
        app = make_app(
            collection,
            cookie_session=cookie_session,
            SESSION_REFRESH_EACH_REQUEST=refresh,
        )

        @app.post("/start")
        def start():
            session.permanent = True
            session["cart"] = ["apple"]
            return "ok"

        @app.post("/add")
        def add():
            session["cart"].append("pear")
            return "ok"

        def change_late(response):
            if request.path == "/add":
                session["cart"].append("plum")
            return response

        app.after_request_funcs[None].insert(0, change_late)
        client = app.test_client()
        client.post("/start")
        assert client.post("/add").status_code == 200
        kept[cookie_session] = client.get("/get/cart").json["value"]
    assert kept[False] == kept[True]
    assert kept[True] == (["apple", "pear", "plum"] if refresh else ["apple"])


def _meanwhile(loaded, go, request, other_tab):
    """Run ``request`` in the "laptop" thread (see _with_a_paused_laptop); once
    it has loaded its session, run ``other_tab``; then let it finish. Returns
    its response."""
    seen = {}
    thread = threading.Thread(target=lambda: seen.update(r=request()), name="laptop")
    thread.start()
    assert loaded.wait(10)
    other_tab()
    go.set()
    thread.join(10)
    return seen["r"]


def test_a_logout_keeps_what_another_tab_wrote_meanwhile(collection):
    # The logout's request loaded the session before another tab wrote to it:
    # the rest that carries on anonymous has the other tab's keys (a key both
    # changed keeps the logout request's value, the later write), as a login
    # carries them over.
    app = make_app(collection)

    @app.post("/logout-and-note")
    def logout_and_note():
        logout_user()
        session["note"] = "mine"
        session.pop("old", None)
        return "ok"

    @app.post("/drop/<key>")
    def drop(key):
        session.pop(key, None)
        return "ok"

    loaded, go = _with_a_paused_laptop(app)
    browser = app.test_client()
    browser.post("/login/alice")
    for key, value in [("cart", ["apple"]), ("note", "old"), ("old", 1), ("gone", 1)]:
        browser.post(f"/set/{key}", json=value)

    def other_tab():
        # A new key, a changed one, a removed one, and the two that the
        # logout changes too.
        assert browser.post("/set/wish", json=["pear"]).status_code == 200
        assert browser.post("/set/cart", json=["apple", "plum"]).status_code == 200
        assert browser.post("/drop/gone").status_code == 200
        assert browser.post("/set/note", json="theirs").status_code == 200
        assert browser.post("/set/old", json=2).status_code == 200

    logout = _meanwhile(loaded, go, lambda: browser.post("/logout-and-note"), other_tab)
    assert logout.status_code == 200
    assert browser.get("/me").json["user"] is None
    assert stored(collection, user_id="alice") == []
    assert len(stored(collection)) == 1
    assert {
        key: browser.get(f"/get/{key}").json["value"]
        for key in ("wish", "cart", "gone", "note", "old")
    } == {
        "wish": ["pear"],
        "cart": ["apple", "plum"],
        "gone": None,
        "note": "mine",
        "old": None,
    }


def _a_cart_of_int_keys(collection, *, logged_in=True):
    """An app whose every request makes the session permanent (as many apps
    do), and a browser whose cart (a dict with int keys) holds items 2 and
    10, logged in as alice if ``logged_in``. Returns (app, browser, loaded,
    go), the last two for a paused "laptop" request (see _meanwhile)."""
    app = make_app(collection)

    @app.before_request
    def make_permanent():
        session.permanent = True

    @app.post("/cart-add/<int:item>")
    def cart_add(item):
        cart = {int(key): n for key, n in session.get("cart", {}).items()}
        session["cart"] = {**cart, item: 1}
        return "ok"

    loaded, go = _with_a_paused_laptop(app)
    browser = app.test_client()
    if logged_in:
        browser.post("/login/alice")
    browser.post("/cart-add/2")
    browser.post("/cart-add/10")
    return app, browser, loaded, go


def test_a_dict_with_int_keys_is_no_change_when_it_comes_back_unchanged(collection):
    # Stored as JSON, its keys come back as strings, in another order: the
    # look for changes made in place must not take that for one (a write per
    # request, or a stale copy written over another tab's).
    _, browser, loaded, go = _a_cart_of_int_keys(collection)
    collection.reset()
    assert browser.get("/plain").status_code == 200
    assert [name for name, _ in collection.log] == ["find_one"]
    # A read-only page that loaded the cart before another tab changed it.
    page = _meanwhile(
        loaded, go, lambda: browser.get("/plain"), lambda: browser.post("/cart-add/7")
    )
    assert page.status_code == 200
    assert browser.get("/get/cart").json == {"value": {"2": 1, "10": 1, "7": 1}}


def test_a_logout_carries_another_tabs_change_to_a_dict_with_int_keys(collection):
    _, browser, loaded, go = _a_cart_of_int_keys(collection)
    logout = _meanwhile(
        loaded, go, lambda: browser.post("/logout"), lambda: browser.post("/cart-add/7")
    )
    assert logout.status_code == 200
    assert browser.get("/me").json["user"] is None
    assert browser.get("/get/cart").json == {"value": {"2": 1, "10": 1, "7": 1}}


def test_a_login_carries_another_tabs_write_over_a_dict_with_int_keys(collection):
    _, browser, loaded, go = _a_cart_of_int_keys(collection, logged_in=False)
    login = _meanwhile(
        loaded,
        go,
        lambda: browser.post("/login/alice"),
        lambda: browser.post("/set/cart", json="emptied in another tab"),
    )
    assert login.status_code == 200
    assert browser.get("/me").json["user"] == "alice"
    assert browser.get("/get/cart").json == {"value": "emptied in another tab"}


def _read_over_a_lowered_limit(app, collection, client):
    """Puts the logged-in client's session over a limit lowered since; pages
    are still served, and read it without a write."""
    client.post("/set/notes", json="x" * 3000)
    app.config["SINGLE_SESSION_MAX_SIZE"] = 2000
    collection.reset()
    assert client.get("/me").json["user"] == "alice"
    assert client.get("/plain").status_code == 200
    assert [name for name, _ in collection.log] == ["find_one", "find_one"]


def test_a_permanent_session_over_the_limit_still_serves_every_page(collection):
    # A permanent session that holds a list is serialised again on every
    # request (SESSION_REFRESH_EACH_REQUEST), to save a change made in place:
    # over a limit lowered since it was stored, it is still read, and its size
    # is checked only if it changed.
    app = make_app(collection)

    @app.post("/permanent")
    def permanent():
        session.permanent = True
        return "ok"

    @app.post("/add-in-place")
    def add_in_place():
        session["cart"].append("pear")
        return "ok"

    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/cart", json=["apple"])
    client.post("/permanent")
    _read_over_a_lowered_limit(app, collection, client)
    # A change in place is a write: over the limit, it fails as one.
    before = stored(collection)
    with pytest.raises(SessionTooLarge, match="SINGLE_SESSION_MAX_SIZE"):
        client.post("/add-in-place")
    assert stored(collection) == before


def test_a_session_over_the_limit_is_read_when_the_app_sets_permanent(collection):
    # Setting session.permanent on every request marks the session modified:
    # with nothing changed, nothing is written and the size is not checked.
    app, client, _, _ = _a_cart_of_int_keys(collection)
    _read_over_a_lowered_limit(app, collection, client)
    with pytest.raises(SessionTooLarge):
        client.post("/cart-add/3")
    assert client.get("/get/cart").json == {"value": {"2": 1, "10": 1}}
