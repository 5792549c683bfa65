"""A revoked device is told why, and nothing brings its session back
(promises 3 and 7)."""

from __future__ import annotations

import threading

import pytest
from flask import get_flashed_messages
from flask import session
from flask_login import current_user
from flask_login import login_user

import single_session
from conftest import make_app
from conftest import Recorder
from conftest import stored
from conftest import USERS
from single_session import logout_everywhere
from single_session import session_revoked


def who(client):
    return client.get("/me").json["user"]


def _add_why(app):
    """A page that says why the device was signed out, and what was flashed."""

    @app.get("/why")
    def why():
        reason = single_session.revocation()
        return {"reason": reason and reason.reason, "flashed": get_flashed_messages()}


def _evicted(app):
    """A phone whose session was revoked by a login on a laptop."""
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    return phone


def test_evicted_device_learns_why(app, collection):
    revoked = Recorder(session_revoked, app)
    seen = {}

    @app.get("/login-page")
    def login_page():
        reason = single_session.revocation()
        seen["reason"] = reason and reason.reason
        seen["messages"] = get_flashed_messages(with_categories=True)
        return "login page"

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    phone.get("/login-page")
    assert seen["reason"] == "signed_in_elsewhere"
    assert seen["messages"] == [
        (
            "warning",
            "You were signed out because your account signed in on another device.",
        )
    ]
    (call,) = revoked.calls
    assert call["reason"] == "signed_in_elsewhere" and call["user_id"] == "alice"
    assert call["handle"]
    # Told once: the next request is just anonymous.
    phone.get("/login-page")
    assert seen["reason"] is None and seen["messages"] == []
    assert len(revoked.calls) == 1


def test_tombstone_keeps_only_the_reason(app, collection):
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    phone.post("/set/secret", json="x")
    laptop.post("/login/alice")
    (tombstone,) = [d for d in stored(collection) if "revoked" in d]
    assert tombstone["revoked"]["reason"] == "signed_in_elsewhere"
    for field in ("data", "user_id", "remember", "device"):
        assert field not in tombstone
    # It goes when the session would have expired.
    assert tombstone["purge_at"] > tombstone["revoked"]["at"]


def test_message_can_be_turned_off_or_changed(collection):
    app = make_app(collection, SINGLE_SESSION_REVOKED_MESSAGE=None)

    @app.get("/messages")
    def messages():
        return {"messages": get_flashed_messages()}

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    assert phone.get("/messages").json == {"messages": []}
    # With nothing to keep, the stale cookie is simply deleted.
    assert phone.get_cookie("session") is None

    app2 = make_app(collection, SINGLE_SESSION_REVOKED_MESSAGE="Signed out.")

    @app2.get("/messages")
    def messages2():
        return {"messages": get_flashed_messages()}

    phone, laptop = app2.test_client(), app2.test_client()
    phone.post("/login/alice")
    with app2.app_context():
        logout_everywhere("alice")
    assert phone.get("/messages").json == {"messages": ["Signed out."]}


def test_logout_everywhere_reason(app):
    revoked = Recorder(session_revoked, app)
    phone = app.test_client()
    phone.post("/login/alice")
    with app.app_context():
        logout_everywhere("alice")
    assert who(phone) is None
    assert revoked.calls[0]["reason"] == "logout_everywhere"


@pytest.mark.parametrize("permanent", [False, True])
@pytest.mark.parametrize("late", ["write", "touch"])
def test_in_flight_request_does_not_bring_a_revoked_session_back(
    app, collection, clock, late, permanent
):
    revoked = Recorder(session_revoked, app)
    entered = threading.Event()
    release = threading.Event()

    @app.post("/permanent")
    def make_permanent():
        session.permanent = True
        return "ok"

    @app.post("/slow")
    def slow_request():
        session.get("x")
        entered.set()
        assert release.wait(10)
        if late == "write":
            session["written_after_revocation"] = True
        return "ok"

    _add_why(app)

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    if permanent:
        phone.post("/permanent")
        assert phone.get_cookie("session").expires is not None
    if late == "touch":
        clock.advance(seconds=61)  # the slow request's touch is due
    result = {}

    def slow():
        result["response"] = phone.post("/slow")

    thread = threading.Thread(target=slow)
    thread.start()
    assert entered.wait(10)
    laptop.post("/login/alice")  # evicts the phone while its request runs
    release.set()
    thread.join(10)
    response = result["response"]
    assert response.status_code == 200
    # Its cookie is left alone (a permanent one keeps its expiry, so a browser
    # closed meanwhile keeps it), so that its next request is told why.
    assert not response.headers.getlist("Set-Cookie")
    assert (phone.get_cookie("session").expires is not None) == permanent
    told = phone.get("/why").json
    assert told["reason"] == "signed_in_elsewhere"
    assert len(told["flashed"]) == 1
    assert [call["reason"] for call in revoked.calls] == ["signed_in_elsewhere"]
    assert who(phone) is None
    # No document for the phone came back, with or without the late write.
    docs = stored(collection)
    assert [d["user_id"] for d in docs if "user_id" in d] == ["alice"]
    assert not any("written_after_revocation" in d.get("data", {}) for d in docs)
    (tombstone,) = [d for d in docs if "revoked" in d]
    assert "data" not in tombstone


@pytest.mark.parametrize("remember", [False, True])
def test_a_login_revoked_while_its_request_runs_still_hands_over_its_id(app, remember):
    entered, release = threading.Event(), threading.Event()

    @app.post("/slow-login")
    def slow_login():
        login_user(USERS["alice"], remember=remember)
        entered.set()
        assert release.wait(10)
        session["welcome"] = True  # a write after the login (a flash, say)
        return "ok"

    _add_why(app)

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/set/cart", json=[1])  # an anonymous session first
    before = phone.get_cookie("session").value
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=phone.post("/slow-login")))
    thread.start()
    assert entered.wait(10)
    laptop.post("/login/alice")  # evicts the phone's new login
    release.set()
    thread.join(10)
    assert result["r"].status_code == 200
    # The old id is gone (its data moved to the login): the device gets the new
    # one, which names the tombstone.
    assert phone.get_cookie("session").value != before
    if remember:
        phone.delete_cookie("session")  # the browser restarts
    told = phone.get("/why").json
    assert told["reason"] == "signed_in_elsewhere"
    assert len(told["flashed"]) == 1
    assert who(laptop) == "alice"


def test_logout_others_revoked_while_its_request_runs_still_hands_over_its_id(
    app,
):
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    entered, release = threading.Event(), threading.Event()

    @app.post("/change-password")
    def change_password():
        app.extensions["test_ext"].logout_others("alice")
        entered.set()
        assert release.wait(10)
        session["notice"] = "password changed"
        return "ok"

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(r=phone.post("/change-password"))
    )
    thread.start()
    assert entered.wait(10)
    with app.app_context():
        logout_everywhere("alice")
    release.set()
    thread.join(10)
    assert result["r"].status_code == 200
    revoked = Recorder(session_revoked, app)
    assert who(phone) is None
    assert [call["reason"] for call in revoked.calls] == ["logout_everywhere"]


def test_revoked_cookie_costs_one_query_then_none(app, collection):
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    collection.reset()
    phone.get("/me")  # learns why (the tombstone is marked as told)
    assert collection.ops() == ["find_one", "update_one"]
    # The flash message alone travels in the cookie: nothing was stored, and
    # the next request costs no query.
    assert phone.get_cookie("session").value.startswith("~")
    collection.reset()
    phone.get("/me")
    assert collection.ops() == []


def test_logout_others_reason_and_message(app):
    revoked = Recorder(session_revoked, app)

    @app.post("/logout-others")
    def logout_others():
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    @app.get("/login-page")
    def login_page():
        return {"flashed": get_flashed_messages()}

    phone, laptop = app.test_client(), app.test_client()
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    phone.post("/login/alice")
    laptop.post("/login/alice")
    assert laptop.post("/logout-others").json == {"ended": 1}
    assert phone.get("/login-page").json == {
        "flashed": ["This device was signed out from another of your devices."]
    }
    assert [call["reason"] for call in revoked.calls] == ["logout_others"]
    assert who(laptop) == "alice"


def test_an_old_cookie_sent_again_and_again_is_told_once(app, collection):
    # A bot, a stolen cookie, or a second tab: each request that comes back with
    # the revoked session's cookie (ignoring the Set-Cookie of the answers) is
    # not told again, and stores nothing.
    _add_why(app)
    revoked = Recorder(session_revoked, app)
    phone, laptop, replay = (app.test_client() for _ in range(3))
    phone.post("/login/alice")
    old = phone.get_cookie("session").value
    laptop.post("/login/alice")

    answers = []
    for _ in range(5):
        replay.set_cookie("session", old)
        answers.append(replay.get("/why").json)
    assert answers[0] == {
        "reason": "signed_in_elsewhere",
        "flashed": [
            "You were signed out because your account signed in on another device."
        ],
    }
    assert answers[1:] == [{"reason": None, "flashed": []}] * 4
    assert len(revoked.calls) == 1
    # The tombstone, the laptop's session, and nothing else: the flash of the
    # first answer was read in the same request.
    assert len(stored(collection)) == 2
    # The device itself, coming back later, is not told twice either.
    assert phone.get("/why").json == {"reason": None, "flashed": []}


def test_a_revoked_remembered_device_is_told_once(app, collection):
    _add_why(app)
    revoked = Recorder(session_revoked, app)
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    remember_cookie = phone.get_cookie("remember_token").value
    with app.app_context():
        logout_everywhere("alice")

    answers = []
    for _ in range(3):
        device = app.test_client()  # the browser restarted, remember-me only
        device.set_cookie("remember_token", remember_cookie)
        answers.append((device.get("/why").json, device.get_cookie("remember_token")))
    assert answers[0][0]["reason"] == "logout_everywhere"
    assert [a[0] for a in answers[1:]] == [{"reason": None, "flashed": []}] * 2
    assert all(cookie is None for _, cookie in answers)  # deleted each time
    assert len(revoked.calls) == 1
    assert len(stored(collection)) == 1  # the tombstone alone


def test_a_thief_retrying_a_stale_remember_cookie_does_not_take_the_telling(app, clock):
    # The phone rotated its token; a copy of the old one is used later: the
    # device is revoked for a reused token. The copy is told in the request
    # that used it; trying it again tells nothing; the phone, which holds the
    # current token, is told when it comes back.
    _add_why(app)
    revoked = Recorder(session_revoked, app)
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    stolen = phone.get_cookie("remember_token").value
    phone.delete_cookie("session")
    assert who(phone) == "alice"  # restored: the token rotates
    clock.advance(seconds=60)

    thief = app.test_client()
    thief.set_cookie("remember_token", stolen)
    assert thief.get("/why").json["reason"] == "remember_token_reused"
    for _ in range(2):
        again = app.test_client()
        again.set_cookie("remember_token", stolen)
        assert again.get("/why").json == {"reason": None, "flashed": []}

    phone.delete_cookie("session")  # its browser restarts: remember-me alone
    assert phone.get("/why").json["reason"] == "remember_token_reused"
    assert [c["reason"] for c in revoked.calls] == ["remember_token_reused"] * 2


def test_a_parallel_tab_leaves_the_cookie_to_the_one_told(app, clock):
    # Two tabs send the revoked session's cookie at once: one is told and its
    # response carries the message in a new cookie; the other must not delete
    # that cookie, whichever response the browser applies last.
    _add_why(app)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    old = phone.get_cookie("session").value
    laptop.post("/login/alice")

    told = phone.get("/plain")  # reads nothing: the message waits in the cookie
    assert told.headers["Set-Cookie"].startswith("session=~")
    tab = app.test_client()
    tab.set_cookie("session", old)
    parallel = tab.get("/plain")
    assert "Set-Cookie" not in parallel.headers
    assert phone.get("/why").json["flashed"] != []

    # Later, the old cookie is just stale: it goes.
    clock.advance(minutes=1)
    late = app.test_client()
    late.set_cookie("session", old)
    assert late.get("/plain").headers["Set-Cookie"].startswith("session=;")


def test_a_told_request_that_fails_leaves_the_telling_to_the_next(raw_collection):
    from pymongo.errors import AutoReconnect

    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty)
    _add_why(app)
    phone = _evicted(app)

    # The first request back stores something, and the database fails then.
    faulty.faults.plan("insert_one", AutoReconnect(), AutoReconnect())
    assert phone.post("/set/cart", json=["apple"]).status_code == 503
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"


def test_a_claim_whose_replies_were_lost_is_released(raw_collection):
    from pymongo.errors import AutoReconnect

    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty)
    _add_why(app)
    phone = _evicted(app)

    # The claim is applied, but both replies are lost: a 503. The release
    # (its own call) gets through, so the next request is told.
    faulty.faults.plan(
        "update_one", ("after", AutoReconnect()), ("after", AutoReconnect())
    )
    assert phone.get("/why").status_code == 503
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"


def test_a_told_request_that_ends_without_a_response_gives_the_telling_back(app):
    # In testing or debug, the exception propagates: no response, no cookie.
    _add_why(app)

    @app.get("/crash")
    def crash():
        raise RuntimeError("the view fails (test)")

    phone = _evicted(app)
    with pytest.raises(RuntimeError):
        phone.get("/crash")
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"


def test_a_told_request_whose_write_fails_gives_the_telling_back(app):
    # A value that cannot be stored: a 500 raised while the session is written
    # (production mode), so no cookie goes out.
    _add_why(app)
    app.testing = False

    @app.get("/bad")
    def bad():
        session["x"] = object()
        return "ok"

    phone = _evicted(app)
    response = phone.get("/bad")
    assert response.status_code == 500
    assert response.headers.getlist("Set-Cookie") == []
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"


def test_a_503_that_hands_over_a_login_keeps_the_telling(raw_collection, clock):
    # The told request logs in and then fails: its 503 carries the new login's
    # cookie (and the message with it), so the old cookie is not told again.
    from pymongo.errors import AutoReconnect

    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty)
    _add_why(app)
    revoked = Recorder(session_revoked, app)

    @app.post("/login-and-cart")
    def login_and_cart():
        login_user(USERS["alice"])
        faulty.faults.plan("update_one", AutoReconnect(), AutoReconnect())
        session["cart"] = ["apple"]
        return "ok"

    phone = _evicted(app)
    old = phone.get_cookie("session").value
    assert phone.post("/login-and-cart").status_code == 503
    assert phone.get_cookie("session").value != old
    app.extensions["single_session"].clock.advance(minutes=1)
    replay = app.test_client()
    replay.set_cookie("session", old)
    assert replay.get("/why").json["reason"] is None
    assert len(revoked.calls) == 1


def test_a_parallel_tab_sent_to_the_login_view_keeps_the_message(app):
    # Both tabs open a login_required page with the revoked cookie: the second
    # gets Flask-Login's own message, and must not replace the cookie that
    # carries the revocation's message.
    _add_why(app)
    app.login_manager.login_view = "why"
    phone = _evicted(app)
    tab = app.test_client()
    tab.set_cookie("session", phone.get_cookie("session").value)
    assert phone.get("/private").status_code == 302
    response = tab.get("/private")
    assert response.status_code == 302
    assert "Set-Cookie" not in response.headers
    flashed = phone.get("/why").json["flashed"]
    assert any("signed out" in message for message in flashed)


def test_a_stale_remember_cookie_does_not_take_the_telling_after_a_logout(app, clock):
    # Any reason: the device holds the current token; an older copy of its
    # cookie (a thief's) is not told, and the device still is.
    _add_why(app)
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    stale = phone.get_cookie("remember_token").value
    phone.delete_cookie("session")
    assert who(phone) == "alice"  # restored: the token rotates
    clock.advance(minutes=5)
    with app.app_context():
        logout_everywhere("alice")

    thief = app.test_client()
    thief.set_cookie("remember_token", stale)
    assert thief.get("/why").json == {"reason": None, "flashed": []}
    phone.delete_cookie("session")
    assert phone.get("/why").json["reason"] == "logout_everywhere"


def test_two_tabs_at_the_same_moment_one_told_the_other_leaves_the_cookie(
    app, monkeypatch
):
    # Both requests read the tombstone before either claims it: the one that
    # loses the claim must not delete the cookie that carries the message.
    phone = _evicted(app)
    old = phone.get_cookie("session").value
    store = app.extensions["single_session"].store
    claim = store.claim_tombstone
    both_read = threading.Barrier(2)

    def claim_together(*args):
        both_read.wait(5)
        return claim(*args)

    monkeypatch.setattr(store, "claim_tombstone", claim_together)
    headers = []

    def tab():
        client = app.test_client()
        client.set_cookie("session", old)
        headers.append(client.get("/plain").headers.get("Set-Cookie"))

    threads = [threading.Thread(target=tab) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(str(h)[:9] for h in headers) == ["None", "session=~"]


def test_a_restore_revoked_during_its_move_is_told_once(app, monkeypatch):
    # The remembered device restores while another request logs the user out
    # everywhere: it is told then, and a second tab with the same remember-me
    # cookie is not told again.
    from single_session.policy import LOGOUT_EVERYWHERE
    from single_session.policy import revoke_all

    _add_why(app)
    revoked = Recorder(session_revoked, app)
    phone = app.test_client()
    phone.post("/login/alice?remember=1")
    remember = phone.get_cookie("remember_token").value
    store = app.extensions["single_session"].store
    state = app.extensions["single_session"]
    finish = store.finish_move

    def revoked_during_the_move(taken):
        monkeypatch.setattr(store, "finish_move", finish)
        revoke_all(state, "alice", LOGOUT_EVERYWHERE)  # another request
        return finish(taken)

    monkeypatch.setattr(store, "finish_move", revoked_during_the_move)
    answers = []
    for _ in range(2):
        tab = app.test_client()
        tab.set_cookie("remember_token", remember)
        answers.append(tab.get("/why").json["reason"])
    assert answers == ["logout_everywhere", None]
    assert len(revoked.calls) == 1


def test_every_device_ended_at_once_is_told_once(raw_collection):
    # One update ends all three; each device is told, once. (The test
    # collection stores a copy of the tombstone in each document, as MongoDB
    # does: see conftest.)
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    _add_why(app)
    revoked = Recorder(session_revoked, app)
    devices = [app.test_client() for _ in range(3)]
    for device in devices:
        device.post("/login/alice")
    with app.app_context():
        assert logout_everywhere("alice") == 3
    for device in devices:
        assert device.get("/why").json["reason"] == "logout_everywhere"
        assert device.get("/why").json["reason"] is None
    assert len(revoked.calls) == 3
