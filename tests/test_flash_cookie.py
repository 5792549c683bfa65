"""A session that holds only flashed messages lives in its cookie: a crawler sent
from a login_required page to the login view (with Flask-Login's "Please log in"
message) writes nothing, as a cookie-less request whose session stays empty
writes nothing (promise 2)."""

from __future__ import annotations

import secrets

import pytest
from flask import flash
from flask import get_flashed_messages
from flask import session
from itsdangerous import TimestampSigner
from markupsafe import Markup

from conftest import make_app
from conftest import stored
from single_session.flash_cookie import MAX_LENGTH


def _app(collection, **config):
    app = make_app(collection, **config)
    app.login_manager.login_view = "login_page"

    @app.get("/login-page")
    def login_page():
        return {"flashed": get_flashed_messages(with_categories=True)}

    @app.post("/flash")
    def flash_message():
        flash(Markup("<b>Saved</b>"), "info")
        return {"ok": True}

    return app


def _cookie(response):
    return [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")
    ]


def test_a_crawler_on_a_protected_page_writes_nothing(collection, raw_collection):
    app = _app(collection)
    for _ in range(100):
        bot = app.test_client()  # no cookie, never sends one back
        response = bot.get("/private")
        assert response.status_code == 302
        assert bot.get_cookie("session").value.startswith("~")
    assert stored(raw_collection) == []
    assert collection.ops(exclude=()) == []


def test_a_browser_reads_the_message_then_holds_no_cookie(collection, raw_collection):
    app = _app(collection)
    browser = app.test_client()
    browser.get("/private")
    response = browser.get("/login-page")
    assert response.json["flashed"] == [
        ["message", "Please log in to access this page."]
    ]
    assert browser.get_cookie("session") is None  # read: the session is empty
    assert browser.get("/login-page").json["flashed"] == []
    assert stored(raw_collection) == []
    assert collection.ops(exclude=()) == []


def test_a_request_that_leaves_the_messages_leaves_the_cookie(collection):
    app = _app(collection)
    browser = app.test_client()
    browser.get("/private")
    before = browser.get_cookie("session").value
    response = browser.get("/plain")  # reads nothing from the session
    assert _cookie(response) == []
    assert browser.get_cookie("session").value == before
    assert browser.get("/login-page").json["flashed"] == [
        ["message", "Please log in to access this page."]
    ]


def test_once_it_holds_more_it_is_stored_with_its_messages(collection, raw_collection):
    app = _app(collection)
    browser = app.test_client()
    browser.post("/flash")
    assert stored(raw_collection) == []
    browser.post("/set/cart", json=["apple"])
    (document,) = stored(raw_collection)
    assert set(document["data"]) == {"_flashes", "cart"}
    assert not browser.get_cookie("session").value.startswith("~")
    flashed = browser.get("/login-page").json["flashed"]
    assert flashed == [["info", "<b>Saved</b>"]]
    assert browser.get("/get/cart").json["value"] == ["apple"]


def test_a_login_carries_the_messages(collection, raw_collection):
    app = _app(collection)
    browser = app.test_client()
    browser.get("/private")
    assert browser.post("/login/alice").json["user"] == "alice"
    (document,) = stored(raw_collection)
    assert document["user_id"] == "alice"
    assert "_flashes" in document["data"]
    assert browser.get("/login-page").json["flashed"] == [
        ["message", "Please log in to access this page."]
    ]
    assert browser.get("/me").json["user"] == "alice"


def test_the_messages_keep_their_types(collection):
    app = _app(collection)
    seen = {}

    @app.get("/markup")
    def markup():
        (message,) = get_flashed_messages()
        seen["message"] = message
        return "ok"

    browser = app.test_client()
    browser.post("/flash")
    browser.get("/markup")
    assert type(seen["message"]) is Markup
    assert seen["message"] == Markup("<b>Saved</b>")


@pytest.mark.parametrize(
    "value",
    [
        "~",
        "~garbage",
        "~" + "x" * (MAX_LENGTH + 10),
        "~eyJfZmxhc2hlcyI6W119.ZZZZZZ.forged",
        "~\u00e9\u00e9",
    ],
    ids=["empty", "garbage", "huge", "forged", "non-ascii"],
)
def test_a_bad_flash_cookie_is_ignored(collection, raw_collection, value):
    app = _app(collection)
    browser = app.test_client()
    browser.set_cookie("session", value)
    response = browser.get("/login-page")
    assert response.status_code == 200
    assert response.json["flashed"] == []
    assert response.headers.getlist("Set-Cookie") == []  # left, as Flask leaves it
    assert collection.ops(exclude=()) == []
    assert stored(raw_collection) == []


def test_a_flash_cookie_signed_with_another_key(collection):
    app = _app(collection)
    browser = app.test_client()
    browser.get("/private")
    value = browser.get_cookie("session").value

    # Rotated: the old key is a fallback, and the cookie still reads.
    app.config.update(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["test secret"])
    rotated = app.test_client()
    rotated.set_cookie("session", value)
    assert rotated.get("/login-page").json["flashed"] != []

    # Another app's key: not ours.
    app.config.update(SECRET_KEY="other key", SECRET_KEY_FALLBACKS=[])
    other = app.test_client()
    other.set_cookie("session", value)
    assert other.get("/login-page").json["flashed"] == []


def test_an_old_flash_cookie_is_dropped(collection, monkeypatch):
    # Older than the idle lifetime, as a stored session would be gone.
    app = _app(collection, PERMANENT_SESSION_LIFETIME=3600)
    browser = app.test_client()
    browser.get("/private")
    now = TimestampSigner.get_timestamp(TimestampSigner("k"))
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now + 3601)
    assert browser.get("/login-page").json["flashed"] == []


def test_many_messages_are_stored_as_a_session(collection, raw_collection):
    app = _app(collection)

    @app.post("/flash-many")
    def flash_many():
        for _ in range(100):
            flash(secrets.token_hex(20))  # (no compression makes it short)
        return {"ok": True}

    browser = app.test_client()
    browser.post("/flash-many")
    assert len(stored(raw_collection)) == 1  # too long for a cookie
    assert len(browser.get("/login-page").json["flashed"]) == 100


def test_app_data_with_an_underscore_is_not_a_flag(collection, raw_collection):
    app = _app(collection)

    @app.post("/csrf")
    def csrf():
        session["_csrf_token"] = "abc"
        flash("hello")
        return {"ok": True}

    browser = app.test_client()
    browser.post("/csrf")
    (document,) = stored(raw_collection)
    assert set(document["data"]) == {"_csrf_token", "_flashes"}


def test_a_permanent_flash_session_keeps_an_expiry(collection):
    app = _app(collection)

    @app.post("/flash-permanent")
    def flash_permanent():
        session.permanent = True
        flash("kept")
        return {"ok": True}

    browser = app.test_client()
    response = browser.post("/flash-permanent")
    (header,) = _cookie(response)
    assert header.startswith("session=~") and "Expires=" in header


def test_a_logout_message_needs_no_stored_session(collection, raw_collection):
    app = _app(collection)

    @app.post("/logout-with-message")
    def logout_with_message():
        from flask_login import logout_user

        logout_user()
        flash("You were logged out.")
        return {"ok": True}

    browser = app.test_client()
    browser.post("/login/alice")
    assert len(stored(raw_collection)) == 1
    browser.post("/logout-with-message")
    assert stored(raw_collection) == []
    assert browser.get("/login-page").json["flashed"] == [
        ["message", "You were logged out."]
    ]
    assert browser.get("/me").json["user"] is None


def test_a_late_after_request_that_empties_the_session(collection):
    # An after_request function that runs after the extension's (Flask runs
    # them last registered first) empties the session after the flash cookie
    # was made: no stale cookie goes out.
    app = _app(collection)

    def late(response):
        session.pop("_flashes", None)
        return response

    app.after_request_funcs.setdefault(None, []).insert(0, late)  # runs last
    browser = app.test_client()
    response = browser.post("/flash")
    assert _cookie(response) == []
    assert browser.get_cookie("session") is None


def test_another_message_is_added_to_the_cookie(collection, raw_collection):
    # flash() appends to the session's list in place: the cookie must still
    # be sent again, with both messages.
    app = _app(collection)
    browser = app.test_client()
    browser.get("/private")
    response = browser.post("/flash")
    (header,) = _cookie(response)
    assert header.startswith("session=~")
    assert browser.get("/login-page").json["flashed"] == [
        ["message", "Please log in to access this page."],
        ["info", "<b>Saved</b>"],
    ]
    assert stored(raw_collection) == []


def test_requests_that_leave_the_messages_do_not_send_them_again(collection):
    # Flask-Login changes the session on most requests (its own flags); the
    # cookie is not sent again for that, or a tab could bring back messages
    # that another tab has shown meanwhile.
    app = _app(collection)
    phone = app.test_client()
    phone.get("/private")
    value = phone.get_cookie("session").value
    tab = app.test_client()
    tab.set_cookie("session", value)
    assert phone.get("/login-page").json["flashed"] != []  # shown, deleted
    assert phone.get_cookie("session") is None
    for path in ("/me", "/plain"):
        assert _cookie(tab.get(path)) == []


@pytest.mark.parametrize("message", [True, False], ids=["message", "no-message"])
def test_use_session_for_next_writes_nothing_either(
    collection, raw_collection, message
):
    # With USE_SESSION_FOR_NEXT, Flask-Login keeps the page to go back to in
    # the session (with its session identifier): that travels in the cookie
    # too, and the login then goes back there.
    app = _app(collection, USE_SESSION_FOR_NEXT=True, SESSION_PROTECTION="strong")
    if not message:
        app.login_manager.login_message = None

    @app.post("/login-then-next/<name>")
    def login_then_next(name):
        from flask_login import login_user

        from conftest import USERS

        login_user(USERS[name])
        return {"next": session.get("next")}

    for _ in range(3):
        bot = app.test_client()
        assert bot.get("/private?page=2").status_code == 302
    assert stored(raw_collection) == []

    browser = app.test_client()
    browser.get("/private?page=2")
    assert browser.get_cookie("session").value.startswith("~")
    answer = browser.post("/login-then-next/alice").json
    assert answer["next"].endswith("/private?page=2")
    assert browser.get("/private").json["user"] == "alice"


def test_messages_filtered_down_to_none_are_no_session(collection, raw_collection):
    app = _app(collection)

    @app.post("/drop-info")
    def drop_info():
        session["_flashes"] = [m for m in session.get("_flashes", []) if m[0] != "info"]
        return {"ok": True}

    browser = app.test_client()
    browser.post("/flash")
    browser.post("/drop-info")
    assert stored(raw_collection) == []
    assert browser.get_cookie("session") is None


def test_the_apps_own_next_stays_on_the_server(collection, raw_collection):
    # Only Flask-Login's "next" (USE_SESSION_FOR_NEXT) goes into the cookie,
    # which the client can read; an app's own key of that name is stored.
    app = _app(collection)

    @app.post("/own-next")
    def own_next():
        session["next"] = "/checkout?coupon=SECRET"
        flash("hello")
        return {"ok": True}

    browser = app.test_client()
    browser.post("/own-next")
    assert len(stored(raw_collection)) == 1
    assert not browser.get_cookie("session").value.startswith("~")


def test_messages_that_flash_did_not_make_stay_on_the_server(
    collection, raw_collection
):
    app = _app(collection, USE_SESSION_FOR_NEXT=True)

    @app.post("/odd-flashes")
    def odd_flashes():
        session["next"] = "/x"
        session["_flashes"] = (("message", "hi"),)  # a tuple, not flash()'s list
        return {"ok": True}

    browser = app.test_client()
    browser.post("/odd-flashes")
    assert len(stored(raw_collection)) == 1
    assert browser.get("/login-page").json["flashed"] == [["message", "hi"]]
