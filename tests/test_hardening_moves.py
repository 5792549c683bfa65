"""A session getting a new id (a remember-me restore, logout_others) when things
go wrong in the middle: a revocation, a database failure, the app's own code
failing, a second request of the same browser, a response already sent."""

from __future__ import annotations

import threading
import typing as t
from datetime import timedelta

import pytest
from flask import request
from flask import Response
from flask import session
from flask import stream_with_context
from flask_login import current_user
from flask_login import logout_user
from pymongo.errors import AutoReconnect

import conftest
import single_session
from conftest import make_app
from conftest import stored
from conftest import UpdateRecorder
from faults import FaultyCollection
from faults import transient
from single_session import logout_everywhere


@pytest.fixture
def faulty(raw_collection):
    return FaultyCollection(raw_collection)


def remembered(app: t.Any, user: str = "alice") -> t.Any:
    """A browser that logged in with remember-me, then was restarted."""
    client = app.test_client()
    assert client.post(f"/login/{user}?remember=1").status_code == 200
    client.delete_cookie("session")
    return client


def logged_in_with_another_tab(app: t.Any) -> tuple[t.Any, t.Any, t.Any]:
    """A browser logged in as alice, a second tab of it (the same session
    cookie, its own requests), and the app's store."""
    browser = app.test_client()
    browser.post("/login/alice")
    tab = app.test_client()
    tab.set_cookie("session", browser.get_cookie("session").value)
    return browser, tab, app.extensions["single_session"].store


def after(store: t.Any, method: str, then: t.Callable[[], t.Any]) -> None:
    """Run ``then`` once, right after ``store.<method>`` returns."""
    original = getattr(store, method)

    def wrapped(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = original(*args, **kwargs)
        setattr(store, method, original)
        then()
        return result

    setattr(store, method, wrapped)


def logged_out_everywhere(app: t.Any, user: str = "alice") -> t.Callable[[], int]:
    def run() -> int:
        with app.app_context():
            return logout_everywhere(user)

    return run


def _in_thread(fn: t.Callable[[], t.Any]) -> t.Any:
    out: dict[str, t.Any] = {}
    thread = threading.Thread(target=lambda: out.update(result=fn()))
    thread.start()
    thread.join(10)
    return out["result"]


def while_first_moves(
    store: t.Any,
    after_method: str,
    second_request: t.Callable[[], t.Any],
    until: str = "take",
) -> dict[str, t.Any]:
    """Two requests of one browser, interleaved: ``second_request`` runs in a
    thread of its own and stops right after its ``store.<after_method>`` call
    until the first request (made next, in this thread) has taken its session
    to move it (or made its ``store.<until>`` call); that call then waits for
    the second request to run its course. Returns a dict that holds the second
    request's response under ``"r"``."""
    seen: dict[str, t.Any] = {}
    second_paused, first_took = threading.Event(), threading.Event()
    pause_point, take = getattr(store, after_method), getattr(store, until)

    def paused(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = pause_point(*args, **kwargs)
        if threading.current_thread() is thread and not second_paused.is_set():
            second_paused.set()
            assert first_took.wait(10)
        return result

    def first_take(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = take(*args, **kwargs)
        if threading.current_thread() is not thread and not first_took.is_set():
            first_took.set()
            thread.join(10)  # the second request runs its course meanwhile
        return result

    setattr(store, after_method, paused)
    setattr(store, until, first_take)
    thread = threading.Thread(target=lambda: seen.update(r=second_request()))
    thread.start()
    assert second_paused.wait(10)
    return seen


def cookie_names(response: t.Any) -> list[str]:
    return sorted(h.split("=", 1)[0] for h in response.headers.getlist("Set-Cookie"))


def test_a_failed_restore_puts_no_deny_slot_back_on_a_tombstone(raw_collection, faulty):
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")
    device = remembered(app)
    store = app.extensions["single_session"].store

    def revoke_then_fail() -> None:
        _in_thread(logged_out_everywhere(app))
        faulty.faults.plan("insert_one", transient())  # the successor's insert

    after(store, "take_remembered", revoke_then_fail)
    assert device.get("/me").status_code == 503
    # Nothing holds alice's only place: a new login gets in.
    assert app.test_client().post("/login/alice").status_code == 200
    assert all(
        "slot_key" not in d for d in stored(raw_collection, revoked={"$exists": True})
    )


def test_a_restore_that_cannot_finish_lets_no_session_out(raw_collection, faulty):
    # logout_everywhere runs during the restore, and then the database fails
    # before the restore can tell: the device must not come back signed in.
    app = make_app(faulty)
    device = remembered(app)
    store = app.extensions["single_session"].store

    def revoke_then_fail() -> None:
        _in_thread(logged_out_everywhere(app))
        faulty.faults.plan("find_one_and_delete", transient(), transient())

    after(store, "take_remembered", revoke_then_fail)
    response = device.get("/me")
    assert response.status_code == 503
    assert cookie_names(response) == []
    assert device.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice") == []


def test_a_restore_that_cannot_finish_can_be_tried_again(raw_collection, faulty):
    # No revocation, just a failure at the end: the device keeps its old
    # cookie, and a later restore works (it is not mistaken for theft).
    app = make_app(faulty)
    clock = app.extensions["single_session"].clock
    device = remembered(app)
    faulty.faults.plan("find_one_and_delete", transient(), transient())
    response = device.get("/me")
    assert response.status_code == 503
    assert cookie_names(response) == []
    clock.advance(minutes=10)  # past the lease of the move left half-way
    assert device.get("/me").json == {"user": "alice", "fresh": False}
    assert stored(raw_collection, revoked={"$exists": True}) == []
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_the_apps_own_error_during_a_restore_leaves_it_to_try_again(raw_collection):
    failing = {}

    def limit(user: t.Any) -> int:
        if failing.pop("once", False):
            raise RuntimeError("the limit service is down (test)")
        return 1

    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=limit)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    device = remembered(app)
    failing["once"] = True
    assert device.get("/me").status_code == 500
    assert device.get("/me").json == {"user": "alice", "fresh": False}
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_second_request_during_a_move_does_not_lose_the_session(raw_collection):
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)

    @app.post("/logout-others")
    def logout_others() -> t.Any:
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    laptop = app.test_client()
    laptop.post("/login/alice")
    tab = app.test_client()
    tab.set_cookie("session", laptop.get_cookie("session").value)
    store = app.extensions["single_session"].store
    seen = {}

    def tab_visits_then_everyone_is_logged_out() -> None:
        # From other threads, as a real second request and a job (made in this
        # request's thread, they would share its context, and its user).
        seen["tab"] = _in_thread(lambda: tab.get("/me").json)
        seen["ended"] = _in_thread(logged_out_everywhere(app))

    after(store, "take", tab_visits_then_everyone_is_logged_out)
    assert laptop.post("/logout-others").status_code == 200
    assert seen["tab"]["user"] is None  # the old id no longer works
    assert seen["ended"] == 1  # the moving session was still there to end
    assert laptop.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice") == []


def test_no_restore_once_the_response_has_gone_out(raw_collection):
    # A streamed body that first asks for the user after the response's cookies
    # were set: a restore there could not hand the browser its new token.
    app = make_app(raw_collection)

    @app.get("/stream")
    def stream() -> t.Any:
        def body() -> t.Iterator[str]:
            yield "hello "
            yield str(current_user.get_id())

        return Response(stream_with_context(body()))

    device = remembered(app)
    before = stored(raw_collection, user_id="alice")
    response = device.get("/stream")
    assert response.get_data(as_text=True) == "hello None"
    assert cookie_names(response) == []
    assert stored(raw_collection, user_id="alice") == before
    assert device.get("/me").json == {"user": "alice", "fresh": False}


def test_a_refused_login_leaves_the_remembered_login(raw_collection):
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    device = remembered(app)
    app.test_client().post("/login/bob")  # bob's only place is taken
    assert device.post("/login/bob").status_code == 409
    assert device.get_cookie("remember_token") is not None
    assert device.get("/me").json == {"user": "alice", "fresh": False}


def test_a_failed_login_leaves_the_remembered_login(raw_collection, faulty):
    app = make_app(faulty)
    device = remembered(app)
    faulty.faults.plan("insert_one", transient())  # the login's insert
    assert device.post("/login/alice").status_code == 503
    assert device.get("/me").json == {"user": "alice", "fresh": False}


def test_logging_out_a_restored_login_sends_no_session_cookie(raw_collection):
    app = make_app(raw_collection)

    @app.post("/bye")
    def bye() -> t.Any:
        logout_user()  # restores (Flask-Login asks for the user), then ends it
        return {"ok": True}

    device = remembered(app)
    response = device.post("/bye")
    assert response.status_code == 200
    assert cookie_names(response) == ["remember_token"]  # deleted
    assert stored(raw_collection, user_id="alice") == []


# -- logout_others (the current session gets a new id through the policy) --------


def _with_logout_others(app: t.Any) -> t.Any:
    @app.post("/logout-others")
    def logout_others() -> t.Any:
        ended = app.extensions["test_ext"].logout_others(current_user)
        return {"ended": ended, "user": current_user.get_id()}

    return app


def _a_tab_logging_out_when_told(
    app: t.Any,
) -> tuple[t.Any, t.Any, t.Callable[[], None], threading.Thread]:
    """A browser logged in as alice, and a second tab of it whose request has
    loaded the session and logs out when told: returns the browser, the tab,
    the function that tells it (and waits for its request to end) and the
    thread its request runs in."""
    loaded, go = threading.Event(), threading.Event()

    @app.post("/logout-when-told")
    def logout_when_told() -> t.Any:
        loaded.set()
        assert go.wait(10)
        logout_user()
        return {"ok": True}

    browser = app.test_client()
    browser.post("/login/alice")
    tab = app.test_client()
    tab.set_cookie("session", browser.get_cookie("session").value)
    tab_request = threading.Thread(target=lambda: tab.post("/logout-when-told"))
    tab_request.start()
    assert loaded.wait(10)

    def the_tab_logs_out() -> None:
        go.set()
        tab_request.join(10)

    return browser, tab, the_tab_logs_out, tab_request


def _with_streamed_logout_others(
    app: t.Any,
) -> t.Callable[[t.Any], tuple[threading.Event, threading.Thread, dict[str, t.Any]]]:
    """A page whose streamed body calls logout_others after its first chunk
    (after the response's cookies are out). Returns a function that starts it
    for a client in a thread and waits for that chunk: then (go, thread,
    seen), where ``go`` lets the body go on and ``seen["r"]`` is the body."""
    ext = app.extensions["test_ext"]
    midway, go = threading.Event(), threading.Event()

    @app.get("/stream")
    def stream() -> t.Any:
        def body() -> t.Iterator[str]:
            yield "ended "
            midway.set()
            assert go.wait(10)
            yield str(ext.logout_others(current_user))

        return Response(stream_with_context(body()))

    def start(
        client: t.Any,
    ) -> tuple[threading.Event, threading.Thread, dict[str, t.Any]]:
        seen: dict[str, t.Any] = {}
        thread = threading.Thread(
            target=lambda: seen.update(r=client.get("/stream").get_data(as_text=True))
        )
        thread.start()
        assert midway.wait(10)
        return go, thread, seen

    return start


def _with_why(app: t.Any) -> t.Any:
    @app.get("/why")
    def why() -> t.Any:
        reason = single_session.revocation()
        return {"reason": reason and reason.reason}

    return app


def test_a_login_during_logout_others_still_evicts(raw_collection):
    app = _with_logout_others(make_app(raw_collection))
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    store = app.extensions["single_session"].store
    after(store, "take", lambda: _in_thread(lambda: phone.post("/login/alice")))
    assert laptop.post("/logout-others").status_code == 200
    # The phone logged in last: it is the one left, and the only one.
    assert len(stored(raw_collection, user_id="alice")) == 1
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


@pytest.mark.parametrize("moment", ["load", "insert"])
def test_logout_others_never_ends_a_newer_login_from_elsewhere(raw_collection, moment):
    # The phone presses "log out other devices" while alice logs in on a
    # laptop: the laptop logs in after the phone's request loaded its session
    # (and evicts it), or after the phone's new id was stored. Either way the
    # laptop, the newer login, stays; the phone ends signed out and is told why.
    app = _with_why(_with_logout_others(make_app(raw_collection)))

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    store = app.extensions["single_session"].store
    seen = {}
    after(
        store,
        moment,
        lambda: seen.update(r=_in_thread(lambda: laptop.post("/login/alice"))),
    )
    response = phone.post("/logout-others")
    assert response.status_code == 200
    assert seen["r"].json["user"] == "alice"
    assert response.json["ended"] == 0
    assert laptop.get("/me").json["user"] == "alice"
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"
    assert phone.get("/me").json["user"] is None
    assert len(stored(raw_collection, user_id="alice")) == 1


@pytest.mark.parametrize("on_limit", ["evict", "deny"])
def test_a_second_click_during_logout_others(raw_collection, on_limit):
    # The same browser asks twice at once (a double click): the second request
    # finds the session moving, goes on anonymous and leaves the cookie alone,
    # so the browser ends with the one session there is.
    app = _with_logout_others(
        make_app(raw_collection, SINGLE_SESSION_ON_LIMIT=on_limit)
    )
    browser, second, store = logged_in_with_another_tab(app)
    seen = {}
    after(
        store,
        "take",
        lambda: seen.update(r=_in_thread(lambda: second.post("/logout-others"))),
    )
    first = browser.post("/logout-others")
    assert first.status_code == 200
    assert first.json["user"] == "alice"
    assert cookie_names(seen["r"]) == []
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_deny_a_failed_login_again_keeps_the_session(raw_collection, faulty):
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")
    device = app.test_client()
    device.post("/login/alice")
    faulty.faults.plan("insert_one", transient())  # the new login's insert
    assert device.post("/login/alice").status_code == 503
    assert device.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1
    assert app.test_client().post("/login/alice").status_code == 409


def test_logout_others_after_a_logout_everywhere_does_not_bring_it_back(raw_collection):
    # logout_everywhere from the phone lands while logout_others moves the
    # session to its new id: the laptop must end signed out.
    app = _with_logout_others(
        make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    )
    laptop = app.test_client()
    laptop.post("/login/alice?remember=1")
    store = app.extensions["single_session"].store
    after(store, "take", lambda: _in_thread(logged_out_everywhere(app)))
    response = laptop.post("/logout-others")
    assert response.status_code == 200
    assert response.json["user"] is None
    assert stored(raw_collection, user_id="alice") == []
    laptop.delete_cookie("session")
    assert laptop.get("/me").json["user"] is None  # nor with its remember-me


def test_a_failed_move_does_not_put_back_a_session_the_policy_ended(
    raw_collection, faulty
):
    # The laptop logs in again; while its old session moves, the phone logs
    # in (and, newest, evicts it); then the laptop's new login fails.
    app = make_app(faulty)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    store = app.extensions["single_session"].store

    def phone_logs_in_then_the_database_fails() -> None:
        assert _in_thread(lambda: phone.post("/login/alice").status_code) == 200
        faulty.faults.plan("insert_one", transient())

    after(store, "take", phone_logs_in_then_the_database_fails)
    assert laptop.post("/login/alice").status_code == 503
    assert len(stored(raw_collection, user_id="alice")) == 1
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


def test_a_request_during_a_move_stores_nothing_and_sets_no_cookie(raw_collection):
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    browser, other_tab, store = logged_in_with_another_tab(app)
    seen = {}
    after(
        store,
        "take",
        lambda: seen.update(
            r=_in_thread(lambda: other_tab.post("/set/csrf", json="t"))
        ),
    )
    assert browser.post("/login/alice").status_code == 200  # logs in again
    assert seen["r"].status_code == 200
    assert cookie_names(seen["r"]) == []
    assert len(stored(raw_collection)) == 1
    assert browser.get("/me").json["user"] == "alice"


def test_a_lost_reply_while_taking_a_session(raw_collection, faulty):
    app = make_app(faulty)
    clock = app.extensions["single_session"].clock
    laptop = app.test_client()
    laptop.post("/login/alice")
    old_cookie = laptop.get_cookie("session").value
    faulty.faults.plan("find_one_and_update", ("after", AutoReconnect("lost (test)")))
    assert laptop.post("/login/alice").status_code == 200
    clock.advance(minutes=10)  # past the lease of any move left half-way
    copy = app.test_client()
    copy.set_cookie("session", old_cookie)
    assert copy.get("/me").json["user"] is None  # the old id stays ended
    assert laptop.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_lost_reply_while_finishing_a_restore(raw_collection, faulty):
    app = make_app(faulty)
    device = remembered(app)
    faulty.faults.plan("find_one_and_delete", ("after", AutoReconnect("lost (test)")))
    assert device.get("/me").json == {"user": "alice", "fresh": False}
    assert device.get_cookie("remember_token") is not None
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_double_click_on_logout_others(raw_collection):
    # Both requests loaded the session; the second one tries its move while the
    # first one's is under way: it stores nothing and leaves the cookie alone.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny"))
    browser, second, store = logged_in_with_another_tab(app)
    seen = while_first_moves(store, "load", lambda: second.post("/logout-others"))
    first = browser.post("/logout-others")
    assert first.status_code == 200
    assert first.json["user"] == "alice"
    assert seen["r"].status_code == 200
    assert cookie_names(seen["r"]) == []
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_double_click_on_logout_others_after_the_new_id_is_stored(raw_collection):
    # The second request loaded the session before the first took it, and
    # tries its own move once the first's new session is stored: it leaves the
    # session to the first, and ends nothing (the first's new session least of
    # all).
    app = _with_logout_others(make_app(raw_collection))
    browser, second, store = logged_in_with_another_tab(app)
    seen = while_first_moves(
        store, "load", lambda: second.post("/logout-others"), until="insert"
    )
    first = browser.post("/logout-others")
    assert first.status_code == 200 and first.json["user"] == "alice"
    assert seen["r"].status_code == 200 and seen["r"].json["ended"] == 0
    assert cookie_names(seen["r"]) == []
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


@pytest.mark.parametrize("on_limit", ["evict", "deny"])
def test_logout_others_over_a_lowered_limit(raw_collection, on_limit):
    # Two devices under a limit of two; the limit becomes one. logout_others on
    # the phone ends the laptop (for that reason) and keeps the phone, under
    # "deny" too, where the laptop holds the only place until it ends.
    limits = {"alice": 2}
    app = _with_why(
        _with_logout_others(
            make_app(
                raw_collection,
                SINGLE_SESSION_ON_LIMIT=on_limit,
                SINGLE_SESSION_MAX_SESSIONS=lambda user: limits[user.id],
            )
        )
    )

    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    limits["alice"] = 1
    response = phone.post("/logout-others")
    assert response.json == {"ended": 1, "user": "alice"}
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/why").json["reason"] == "logout_others"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_logout_others_and_a_login_in_the_same_millisecond(raw_collection):
    # A login from elsewhere lands right after logout_others stored its new
    # session, both at the same millisecond (BSON's precision): the policy's
    # order, (login time, _id), decides which stays, and one always does.
    app = _with_logout_others(make_app(raw_collection))
    state = app.extensions["single_session"]
    store = state.store
    for _ in range(12):
        raw_collection.delete_many({})
        phone, laptop = app.test_client(), app.test_client()
        state.clock = conftest.Clock()
        phone.post("/login/alice")
        frozen = state.clock()
        state.clock = lambda frozen=frozen: frozen
        after(
            store,
            "insert",
            lambda laptop=laptop: _in_thread(lambda: laptop.post("/login/alice")),
        )
        assert phone.post("/logout-others").status_code == 200
        alive = [who for who in (phone, laptop) if who.get("/me").json["user"]]
        assert len(alive) == 1
        assert len(stored(raw_collection, user_id="alice")) == 1


@pytest.mark.parametrize("moves", [1, 2, 3])
def test_a_logout_follows_its_login_through_every_move(raw_collection, moves):
    # Another tab gave the session new ids, once or more (logout_others): a
    # logout in a tab that loaded the first one ends the newest.
    app = _with_logout_others(make_app(raw_collection))
    browser = app.test_client()

    @app.post("/logout-slowly")
    def logout_slowly() -> t.Any:
        for _ in range(moves):
            browser.post("/logout-others")  # the other tab, meanwhile
        logout_user()
        return {"ok": True}

    browser.post("/login/alice")
    assert browser.post("/logout-slowly").status_code == 200
    assert browser.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice") == []


def test_a_logout_while_its_login_moves_again_leaves_no_login_behind(raw_collection):
    # A tab loaded the session and logs out while another tab, after one
    # logout_others, runs a second one: the logout reaches the moving session,
    # and its move ends what it stores. Nothing is left holding a place.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny"))
    browser, _, the_tab_logs_out, tab_request = _a_tab_logging_out_when_told(app)
    assert browser.post("/logout-others").json["user"] == "alice"
    after(app.extensions["single_session"].store, "take", the_tab_logs_out)
    assert browser.post("/logout-others").status_code == 200
    assert not tab_request.is_alive()
    assert browser.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []
    assert app.test_client().post("/login/alice").status_code == 200


def test_a_logout_while_the_same_user_logs_in_again_leaves_no_login_behind(
    raw_collection,
):
    # A tab loaded the session and logs out while another tab of the browser
    # signs the same user in again: the logout reaches the session being
    # moved, and the new login ends with it, whichever response comes last
    # (the browser may keep the logout's cookie: nothing would hold the new
    # session, which under "deny" would lock the user out).
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    browser, tab, the_tab_logs_out, tab_request = _a_tab_logging_out_when_told(app)
    after(app.extensions["single_session"].store, "take", the_tab_logs_out)
    assert browser.post("/login/alice").status_code == 200
    assert not tab_request.is_alive()
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []
    assert browser.get("/me").json["user"] is None
    assert tab.get("/me").json["user"] is None
    assert app.test_client().post("/login/alice").status_code == 200


@pytest.mark.parametrize("move", ["logout_others", "login_again", "restore"])
def test_a_logout_sent_while_another_tab_moves_the_session_reaches_it(
    raw_collection, move
):
    # One tab gives the session a new id (logout_others, the same user
    # signing in again, or a restore of a restarted browser); another tab's
    # Sign-out, sent meanwhile, finds the session moving. It still ends that
    # login, and the move ends the new id: the browser is signed out whichever
    # response comes last, and nothing is left holding a place.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny"))
    store = app.extensions["single_session"].store
    if move == "restore":
        browser = remembered(app)
        tab = app.test_client()
        tab.set_cookie("remember_token", browser.get_cookie("remember_token").value)
    else:
        browser, tab, store = logged_in_with_another_tab(app)
    out: dict[str, t.Any] = {}

    def the_tab_logs_out() -> None:
        # (In a thread of its own: a request run inside another one would
        # share its app context, and Flask-Login's user with it.)
        out.update(r=_in_thread(lambda: tab.post("/logout")))

    after(store, "take_remembered" if move == "restore" else "take", the_tab_logs_out)
    if move == "restore":
        assert browser.get("/me").json["user"] is None
    elif move == "logout_others":
        assert browser.post("/logout-others").json["user"] is None
    else:
        assert browser.post("/login/alice").status_code == 200
    assert out["r"].json["user"] is None
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []
    assert browser.get("/me").json["user"] is None
    browser.delete_cookie("remember_token")  # (the tab's response, if it came last)
    assert browser.get("/me").json["user"] is None
    assert app.test_client().post("/login/alice").status_code == 200


def test_a_logout_in_a_frozen_tab_keeps_another_users_remember_cookie(raw_collection):
    # A tab's Sign-out found alice's session moving (logout_others in another
    # tab); before it ends anything, the browser signs in as bob with
    # remember-me. The logout finds nothing of alice's left: bob's cookies,
    # remember-me included, stand (as for any logout, see end_login).
    app = _with_logout_others(make_app(raw_collection))
    browser = app.test_client()
    browser.post("/login/alice?remember=1")
    tab = app.test_client()
    for name in ("session", "remember_token"):
        tab.set_cookie(name, browser.get_cookie(name).value)
    store = app.extensions["single_session"].store
    loaded, go_on = threading.Event(), threading.Event()
    load = store.load

    def paused_load(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = load(*args, **kwargs)
        if threading.current_thread().name == "tab" and not loaded.is_set():
            loaded.set()
            assert go_on.wait(10)
        return result

    store.load = paused_load
    out: dict[str, t.Any] = {}
    tab_request = threading.Thread(
        target=lambda: out.update(r=tab.post("/logout")), name="tab"
    )

    def the_tab_loads() -> None:
        tab_request.start()
        assert loaded.wait(10)

    after(store, "take", the_tab_loads)
    assert browser.post("/logout-others").json["user"] == "alice"
    assert browser.post("/login/bob?remember=1").json["user"] == "bob"
    go_on.set()
    tab_request.join(10)
    assert out["r"].json["user"] is None
    assert "remember_token" not in cookie_names(out["r"])
    assert browser.get("/me").json["user"] == "bob"


def test_deny_logout_others_that_loses_its_place_to_a_login(raw_collection):
    # Under "deny", a login from elsewhere, waiting to be admitted, takes the
    # place logout_others frees for a moment by moving the session: that login
    # stays, and the device that asked ends signed out, the login not ended.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny"))
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    store = app.extensions["single_session"].store
    admit, admitted = threading.Event(), {}
    ensure_slot_index = store.ensure_slot_index

    def waiting_to_be_admitted() -> None:
        if threading.current_thread().name == "laptop":
            assert admit.wait(10)
        ensure_slot_index()

    store.ensure_slot_index = waiting_to_be_admitted
    laptop_login = threading.Thread(
        target=lambda: admitted.update(r=laptop.post("/login/alice")), name="laptop"
    )
    laptop_login.start()

    def the_laptop_is_admitted() -> None:
        admit.set()
        laptop_login.join(10)

    after(store, "take", the_laptop_is_admitted)
    response = phone.post("/logout-others")
    assert admitted["r"].status_code == 200
    assert response.json == {"ended": 0, "user": None}
    assert laptop.get("/me").json["user"] == "alice"
    assert phone.get("/me").json["user"] is None
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_deny_double_click_on_logout_others_over_a_lowered_limit(raw_collection):
    # Under "deny" with a limit lowered since, the first click is refused a
    # place and puts its session back; the second click, from another tab,
    # takes it before the first one looks again. The first leaves the session
    # to the second; the phone ends (by either), the browser keeps its login.
    app = _with_logout_others(
        make_app(
            raw_collection,
            SINGLE_SESSION_ON_LIMIT="deny",
            SINGLE_SESSION_MAX_SESSIONS=2,
        )
    )
    store = app.extensions["single_session"].store
    phone, browser = app.test_client(), app.test_client()
    phone.post("/login/alice")
    browser.post("/login/alice")
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1
    tab = app.test_client()
    tab.set_cookie("session", browser.get_cookie("session").value)
    second_took, first_done, seen = threading.Event(), threading.Event(), {}
    take, undo_take = store.take, store.undo_take

    def second_takes(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = take(*args, **kwargs)
        if threading.current_thread().name == "second" and not second_took.is_set():
            second_took.set()
            assert first_done.wait(10)
        return result

    def then_the_second_click(*args: t.Any, **kwargs: t.Any) -> None:
        undo_take(*args, **kwargs)
        if not second_took.is_set() and threading.current_thread().name != "second":
            second = threading.Thread(
                target=lambda: seen.update(r=tab.post("/logout-others")), name="second"
            )
            seen["thread"] = second
            second.start()
            assert second_took.wait(10)

    store.take, store.undo_take = second_takes, then_the_second_click
    first = browser.post("/logout-others")
    first_done.set()
    seen["thread"].join(10)
    assert first.json["user"] == seen["r"].json["user"] == "alice"
    assert first.json["ended"] + seen["r"].json["ended"] == 1
    assert tab.get("/me").json["user"] == "alice"
    assert phone.get("/me").json["user"] is None
    assert len(stored(raw_collection, user_id="alice", revoked={"$exists": False})) == 1


@pytest.mark.parametrize("restore_ends", ["after the request", "before it looks again"])
def test_logout_others_while_a_copy_of_the_remember_cookie_restores(
    raw_collection, restore_ends
):
    # A thief restores the device's login from a copy of its remember-me
    # cookie just as the device asks to log out the other devices. The device
    # still has its session, so the restore runs elsewhere; which of the two is
    # the owner cannot be told: every session ends, the thief's included,
    # whether the restore ends after the device's request or while it runs.
    app = _with_logout_others(make_app(raw_collection))
    store = app.extensions["single_session"].store
    victim, thief = app.test_client(), app.test_client()
    victim.post("/login/alice?remember=1")
    thief.set_cookie("remember_token", victim.get_cookie("remember_token").value)
    thief_took, thief_may_go, seen = threading.Event(), threading.Event(), {}
    take_remembered, take, load = store.take_remembered, store.take, store.load

    def thief_takes(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = take_remembered(*args, **kwargs)
        thief_took.set()
        assert thief_may_go.wait(10)
        return result

    def victim_takes(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if not thief_took.is_set() and threading.current_thread().name != "thief":
            thread = threading.Thread(
                target=lambda: seen.update(r=thief.get("/me")), name="thief"
            )
            seen["thread"] = thread
            thread.start()
            assert thief_took.wait(10)
        return take(*args, **kwargs)

    def victim_loads(*args: t.Any, **kwargs: t.Any) -> t.Any:
        # (The victim's load after its take failed: the restore ends then.)
        result = load(*args, **kwargs)
        if thief_took.is_set() and restore_ends == "before it looks again":
            if threading.current_thread().name != "thief":
                thief_may_go.set()
                seen["thread"].join(10)
        return result

    store.take_remembered, store.take, store.load = (
        thief_takes,
        victim_takes,
        victim_loads,
    )
    response = victim.post("/logout-others")
    thief_may_go.set()
    seen["thread"].join(10)
    assert response.json["user"] is None and response.json["ended"] >= 1
    assert thief.get("/me").json["user"] is None
    assert victim.get("/me").json["user"] is None
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []


@pytest.mark.parametrize("lowered", [False, True], ids=["stored", "lowered since"])
def test_logout_others_while_another_tab_restores_the_expired_session(
    raw_collection, lowered
):
    # A tab's logout_others loaded the session just before its idle expiry
    # (the one it was stored with, or a lifetime lowered since); another tab
    # of the same browser, just after it, restores the login from the
    # remember-me cookie. That restore is this browser's own: the first tab
    # leaves the session to it, and nothing ends.
    app = _with_logout_others(make_app(raw_collection))
    state = app.extensions["single_session"]
    store = state.store
    start = state.clock()
    clock = {"now": start}
    state.clock = lambda: clock["now"]
    browser = app.test_client()
    browser.post("/login/alice?remember=1")
    tab = app.test_client()
    for name in ("session", "remember_token"):
        tab.set_cookie(name, browser.get_cookie(name).value)
    if lowered:
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    lifetime = app.permanent_session_lifetime
    clock["now"] = start + lifetime - timedelta(milliseconds=5)
    restored, first_done, seen = threading.Event(), threading.Event(), {}
    take_remembered, take = store.take_remembered, store.take

    def tab_restores(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = take_remembered(*args, **kwargs)
        restored.set()
        assert first_done.wait(10)
        return result

    def first_takes(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if not restored.is_set() and threading.current_thread().name != "tab":
            clock["now"] = start + lifetime + timedelta(milliseconds=5)
            thread = threading.Thread(
                target=lambda: seen.update(r=tab.get("/me")), name="tab"
            )
            seen["thread"] = thread
            thread.start()
            assert restored.wait(10)
        return take(*args, **kwargs)

    store.take_remembered, store.take = tab_restores, first_takes
    first = browser.post("/logout-others")
    first_done.set()
    seen["thread"].join(10)
    assert first.json["ended"] == 0
    assert seen["r"].json["user"] == "alice"
    assert tab.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice", revoked={"$exists": False})) == 1


def test_logout_others_in_a_streamed_body_past_a_lowered_lifetime(raw_collection):
    # In a streamed body the session keeps its id, if it is still live: past
    # a lifetime lowered since its last write, it is not, and ends nobody.
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=2)
    start_streaming = _with_streamed_logout_others(app)
    clock = app.extensions["single_session"].clock
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    clock.advance(seconds=30)
    go, streaming, seen = start_streaming(laptop)
    clock.advance(seconds=10)
    phone.post("/login/alice")
    clock.advance(minutes=59, seconds=40)  # the laptop past 1 h idle, not the phone
    go.set()
    streaming.join(10)
    assert seen["r"] == "ended 0"
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


def test_logout_others_under_a_lowered_deny_limit_past_a_lowered_lifetime(
    raw_collection,
):
    # Under "deny" with a limit lowered since, the others hold every place and
    # logout_others would end them first, then take one. The session passed a
    # lifetime lowered since while it moved: it is no longer live, and ends
    # nobody.
    app = _with_logout_others(
        make_app(
            raw_collection,
            SINGLE_SESSION_ON_LIMIT="deny",
            SINGLE_SESSION_MAX_SESSIONS=2,
        )
    )
    clock = app.extensions["single_session"].clock
    store = app.extensions["single_session"].store
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice")
    clock.advance(minutes=30)
    phone.post("/set/x", json=1)  # the phone in use
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    clock.advance(minutes=29, seconds=50)  # the laptop just within it
    after(store, "take", lambda: clock.advance(seconds=20))
    response = laptop.post("/logout-others")
    assert response.json == {"ended": 0, "user": None}
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


def test_logout_others_in_a_streamed_body_of_an_evicted_device(raw_collection):
    # The laptop's streamed response calls logout_others after a login on the
    # phone evicted it: it ends nobody, and the phone stays.
    app = _with_why(make_app(raw_collection))
    start_streaming = _with_streamed_logout_others(app)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    go, streaming, seen = start_streaming(laptop)
    phone.post("/login/alice")
    go.set()
    streaming.join(10)
    assert seen["r"] == "ended 0"
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/why").json["reason"] == "signed_in_elsewhere"


@pytest.mark.parametrize("ended_by", ["login elsewhere", "logout_everywhere"])
def test_a_device_revoked_while_logout_others_moves_it_is_told_why(
    raw_collection, ended_by
):
    app = _with_why(_with_logout_others(make_app(raw_collection)))
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    store = app.extensions["single_session"].store
    meanwhile = (
        (lambda: phone.post("/login/alice"))
        if ended_by == "login elsewhere"
        else logged_out_everywhere(app)
    )
    after(store, "take", lambda: _in_thread(meanwhile))
    response = laptop.post("/logout-others")
    assert response.json == {"ended": 0, "user": None}
    reason = "signed_in_elsewhere" if ended_by == "login elsewhere" else ended_by
    assert laptop.get("/why").json["reason"] == reason
    assert laptop.get("/me").json["user"] is None


def test_logout_others_while_another_tab_logs_in_again_still_ends_the_others(
    raw_collection,
):
    # A login of the same user in another tab of the browser (a re-login form)
    # moves the session first: logout_others leaves the session to it, and
    # still ends the other devices.
    app = _with_logout_others(
        make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    )
    phone = app.test_client()
    phone.post("/login/alice")
    browser, tab, store = logged_in_with_another_tab(app)
    seen = while_first_moves(store, "load", lambda: tab.post("/logout-others"))
    assert browser.post("/login/alice").status_code == 200
    assert seen["r"].json == {"ended": 1, "user": "alice"}
    assert phone.get("/me").json["user"] is None
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice", revoked={"$exists": False})) == 1


def test_logout_others_as_the_absolute_lifetime_ends(raw_collection):
    # The session reaches its absolute lifetime while the request runs: no new
    # id brings it back, and nobody else is ended.
    app = _with_logout_others(
        make_app(
            raw_collection,
            SINGLE_SESSION_MAX_SESSIONS=None,
            SINGLE_SESSION_ABSOLUTE_LIFETIME=3600,
        )
    )
    clock = app.extensions["single_session"].clock

    @app.post("/slow-logout-others")
    def slow_logout_others() -> t.Any:
        clock.advance(minutes=2)
        return app.view_functions["logout_others"]()

    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    clock.advance(minutes=59)
    phone.post("/login/alice")
    assert laptop.post("/slow-logout-others").json == {"ended": 0, "user": None}
    assert phone.get("/me").json["user"] == "alice"


def test_a_login_in_a_request_that_found_the_session_moving(raw_collection):
    # The other tab sends the login form while this browser's session moves:
    # that request stores nothing (the moving request's response carries the
    # cookie), so no login is left that no browser holds.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny"))
    browser, other_tab, store = logged_in_with_another_tab(app)
    seen = {}
    after(
        store,
        "take",
        lambda: seen.update(r=_in_thread(lambda: other_tab.post("/login/alice"))),
    )
    assert browser.post("/logout-others").json["user"] == "alice"
    assert cookie_names(seen["r"]) == []
    assert len(stored(raw_collection, user_id="alice")) == 1
    assert browser.get("/me").json["user"] == "alice"


@pytest.mark.parametrize("move", ["restore", "logout_others"])
def test_a_login_during_a_move_counts_the_pair_once(raw_collection, move):
    # N = 2: the laptop's session and its successor both exist when the phone
    # logs in; they count as one, so both devices stay.
    app = _with_logout_others(make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=2))
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice?remember=1")
    store = app.extensions["single_session"].store
    after(store, "insert", lambda: _in_thread(lambda: phone.post("/login/alice")))
    if move == "restore":
        laptop.delete_cookie("session")
        assert laptop.get("/me").json["user"] == "alice"
    else:
        assert laptop.post("/logout-others").json["user"] == "alice"
    assert laptop.get("/me").json["user"] == "alice"
    assert phone.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 2


def test_a_login_again_that_cannot_finish_is_undone(raw_collection, faulty):
    app = make_app(faulty)
    clock = app.extensions["single_session"].clock
    laptop = app.test_client()
    laptop.post("/login/alice")
    faulty.faults.plan("find_one_and_delete", transient(), transient())
    assert laptop.post("/login/alice").status_code == 503
    clock.advance(minutes=10)  # past the lease: nothing comes back beside it
    assert laptop.get("/me").json["user"] == "alice"  # its session, put back
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_login_that_cannot_be_taken_back_in_an_outage_is_logged(
    raw_collection, faulty, caplog
):
    # The moves cannot be finished and the database stays down: the new
    # session, held by no device, stays until it expires (under "deny",
    # holding the user's place). The operator is told.
    app = make_app(faulty)
    ext = app.extensions["test_ext"]

    @app.get("/devices")
    def devices() -> t.Any:
        return {"handles": [s.handle for s in ext.sessions_of(current_user)]}

    @app.post("/sign-out-this-device")
    def sign_out_this_device() -> t.Any:
        (handle,) = [s.handle for s in ext.sessions_of(current_user) if s.current]
        return {"ok": ext.revoke(current_user, handle)}

    laptop = app.test_client()
    laptop.post("/login/alice")
    faulty.faults.plan("find_one_and_delete", transient(), transient())
    faulty.faults.plan("delete_one", transient(), transient())
    assert laptop.post("/login/alice").status_code == 503
    assert "could not take back a session stored by a login" in caplog.text
    assert len(stored(raw_collection, user_id="alice")) == 2
    # Both have the device's handle: the list shows the device once (the
    # session its cookie holds), and signing it out ends both.
    assert len(laptop.get("/devices").json["handles"]) == 1
    assert laptop.post("/sign-out-this-device").json == {"ok": True}
    assert stored(raw_collection, user_id="alice") == []
    assert laptop.get("/me").json["user"] is None


def test_a_logout_in_another_tab_during_logout_others_sticks(raw_collection):
    app = _with_logout_others(make_app(raw_collection))
    browser, other_tab, store = logged_in_with_another_tab(app)
    finished = []
    finish_move = store.finish_move

    def recording_finish_move(taken: t.Any) -> t.Any:
        finished.append(finish_move(taken))
        return finished[-1]

    store.finish_move = recording_finish_move
    seen = while_first_moves(store, "load", lambda: other_tab.post("/logout"))
    response = browser.post("/logout-others")
    assert seen["r"].status_code == 200
    assert response.json["user"] is None
    assert stored(raw_collection, user_id="alice") == []
    assert browser.get("/me").json["user"] is None
    # The logout left a tombstone on the moving session: why, and whose.
    (tombstone,) = finished
    assert tombstone["revoked"]["reason"] == "logged_out"
    assert tombstone["revoked"]["user_id"] == "alice"


@pytest.mark.parametrize("remember", ["", "?remember=1"])
def test_a_login_form_sent_twice(raw_collection, remember):
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")
    browser, second, store = logged_in_with_another_tab(app)
    seen = while_first_moves(
        store, "load", lambda: second.post(f"/login/alice{remember}")
    )
    first = browser.post("/login/alice")
    assert first.status_code == 200
    assert cookie_names(seen["r"]) == []
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_two_moves_started_in_the_same_millisecond(raw_collection):
    app = make_app(raw_collection)
    app.test_client().post("/login/alice")
    store = app.extensions["single_session"].store
    (document,) = stored(raw_collection, user_id="alice")
    now = app.extensions["single_session"].now()
    assert store.take(document["_id"], now) is not None
    assert store.take(document["_id"], now) is None


def test_logout_others_keeps_the_absolute_lifetime(raw_collection):
    # logout_others gives the session a new id, not a new sign-in: pressing it
    # now and then (with a stolen cookie, say) must not keep the session alive
    # past SINGLE_SESSION_ABSOLUTE_LIFETIME.
    app = _with_logout_others(
        make_app(
            raw_collection,
            SINGLE_SESSION_ABSOLUTE_LIFETIME=3600,
            SINGLE_SESSION_MAX_SESSIONS=None,
        )
    )
    clock = app.extensions["single_session"].clock
    thief = app.test_client()
    thief.post("/login/alice")
    (first,) = stored(raw_collection, user_id="alice")
    for _ in range(2):
        clock.advance(minutes=25)
        assert thief.post("/logout-others").json["user"] == "alice"
    (moved,) = stored(raw_collection, user_id="alice")
    assert moved["_id"] != first["_id"]
    assert moved["created_at"] == first["created_at"]
    assert moved["absolute_expires_at"] == first["absolute_expires_at"]
    assert moved["expires_at"] <= moved["absolute_expires_at"]
    clock.advance(minutes=15)  # 65 minutes after the sign-in
    assert thief.get("/me").json["user"] is None


def test_logout_others_keeps_an_absolute_lifetime_turned_on_since(raw_collection):
    app = _with_logout_others(
        make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    )
    clock = app.extensions["single_session"].clock
    browser = app.test_client()
    browser.post("/login/alice")
    clock.advance(minutes=30)
    app.config["SINGLE_SESSION_ABSOLUTE_LIFETIME"] = 3600
    assert browser.post("/logout-others").json["user"] == "alice"
    (moved,) = stored(raw_collection, user_id="alice")
    assert moved["absolute_expires_at"] == moved["created_at"] + timedelta(hours=1)
    assert moved["expires_at"] <= moved["absolute_expires_at"]


def _slow_writer(app: t.Any) -> tuple[threading.Event, threading.Event]:
    """A page that has loaded the session, then writes to it when told (as a
    second tab's request would, one that began before a login)."""
    loaded, write = threading.Event(), threading.Event()

    @app.post("/set-later")
    def set_later() -> t.Any:
        session.get("cart")
        loaded.set()
        write.wait(10)
        for key, value in request.get_json().items():
            if value is None:
                session.pop(key, None)
            else:
                session[key] = value
        return {"ok": True}

    return loaded, write


CARRY_OVER = {
    # (who the browser is, what it does, whether the other tab's write moves)
    "anonymous, logs in": (None, "/login/bob/both", True),
    "alice, logs in again": ("alice", "/login/alice/both", True),
    "alice, logs out others": ("alice", "/logout-others", True),
    "alice, bob logs in": ("alice", "/login/bob/both", False),
    "alice, clears and logs in again": ("alice", "/clean-login/alice", False),
}


@pytest.mark.parametrize(
    "who, path, carried", CARRY_OVER.values(), ids=CARRY_OVER.keys()
)
def test_a_login_keeps_what_another_tab_wrote_meanwhile(
    raw_collection, who, path, carried
):
    # A login gives the session a new id, made of what its request loaded. A
    # second tab of the browser writes to the old session meanwhile (after the
    # login has taken it, for the same user): that write is carried over, as
    # two requests writing to one session each keep their keys. A key both
    # change keeps the login's value (the later write), and a key the other
    # tab removed stays removed. Nothing moves from another user's session, nor
    # after the app cleared the session to log in.
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)

    @app.post("/logout-others")
    def logout_others() -> t.Any:
        session["both"] = "login"
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    @app.post("/login/<name>/both")
    def login_both(name: str) -> t.Any:
        session["both"] = "login"
        return app.view_functions["login"](name)

    @app.post("/clean-login/<name>")
    def clean_login(name: str) -> t.Any:
        session.clear()
        session["both"] = "login"
        return app.view_functions["login"](name)

    loaded, write = _slow_writer(app)
    browser = app.test_client()
    if who is not None:
        browser.post(f"/login/{who}")
    browser.post("/set/cart", json=["apple"])
    browser.post("/set/gone", json=1)
    tab = app.test_client()
    tab.set_cookie("session", browser.get_cookie("session").value)
    changes = {"csrf": "token", "both": "tab", "gone": None}
    tab_request = threading.Thread(
        target=lambda: tab.post("/set-later", json=changes), daemon=True
    )
    tab_request.start()
    assert loaded.wait(10)
    store = app.extensions["single_session"].store

    def the_tab_writes() -> None:
        write.set()
        tab_request.join(10)

    # (After the insert: a same-user login has taken the session by then.)
    after(store, "insert", the_tab_writes)
    assert browser.post(path).status_code == 200
    assert not tab_request.is_alive()

    assert browser.get("/get/csrf").json["value"] == ("token" if carried else None)
    assert browser.get("/get/both").json["value"] == "login"
    if path.startswith("/clean-login"):
        assert browser.get("/get/cart").json["value"] is None
    else:
        assert browser.get("/get/gone").json["value"] == (None if carried else 1)
        assert browser.get("/get/cart").json["value"] == ["apple"]
    assert len(stored(raw_collection, user_id=browser.get("/me").json["user"])) == 1


def test_a_write_meanwhile_too_large_to_carry_over_in_one_update_is_left(
    raw_collection,
):
    # Each carried key goes as its own field ("data.<key>"): a write of many
    # keys, within what a session may hold, could make an update over
    # MongoDB's 16 MiB (which pymongo refuses, a 500). The login goes on
    # without it, as if the other tab had written first.
    import bson

    updates: list[t.Any] = []
    app = make_app(
        UpdateRecorder(raw_collection, updates),
        SINGLE_SESSION_MAX_SESSIONS=None,
        SINGLE_SESSION_MAX_SIZE=None,
    )
    loaded, write = _slow_writer(app)
    browser = app.test_client()
    browser.post("/set/cart", json=["apple"])
    tab = app.test_client()
    tab.set_cookie("session", browser.get_cookie("session").value)
    changes = {f"k{i:06d}": "x" * 36 for i in range(300_000)}
    tab_request = threading.Thread(
        target=lambda: tab.post("/set-later", json=changes), daemon=True
    )
    tab_request.start()
    assert loaded.wait(10)

    def the_tab_writes() -> None:
        write.set()
        tab_request.join(30)

    after(app.extensions["single_session"].store, "insert", the_tab_writes)
    assert browser.post("/login/alice").status_code == 200
    assert not tab_request.is_alive()
    assert all(len(bson.encode(u)) <= 16 * 1024 * 1024 for u in updates)
    assert browser.get("/me").json["user"] == "alice"
    assert browser.get("/get/cart").json["value"] == ["apple"]
    assert browser.get("/get/k000001").json["value"] is None


@pytest.mark.parametrize("on_limit", ["evict", "deny"])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_a_logout_while_another_tab_logs_in_keeps_that_login(
    raw_collection, on_limit, user
):
    # A logout in one tab of a browser signed in as alice, while another tab
    # logs in. Another user's login replaced the session: the logout finds its
    # session gone and leaves the cookies, so that login stands. Alice logging
    # in again moved her session to a new id: the logout ends that one too (it
    # is her login on this browser). Either way no login is left stored with
    # no device holding it (under "deny", a place held until it expires: a
    # locked-out user).
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT=on_limit)
    browser = app.test_client()

    @app.post("/logout-slowly")
    def logout_slowly():
        browser.post(f"/login/{user}")  # the other tab, meanwhile
        logout_user()
        return {"ok": True}

    browser.post("/login/alice")
    response = browser.post("/logout-slowly")
    assert response.status_code == 200
    if user == "bob":
        assert "Set-Cookie" not in response.headers
        assert browser.get("/me").json["user"] == "bob"
        assert len(stored(raw_collection, user_id="bob")) == 1
    else:
        assert browser.get("/me").json["user"] is None
        assert stored(raw_collection, user_id="alice") == []
    assert browser.post(f"/login/{user}").status_code == 200


def test_a_logout_after_the_session_was_revoked_keeps_the_tombstone(raw_collection):
    # The phone's logout request loaded its session; a login on a laptop
    # evicts it before the logout ends it. The tombstone stays and the cookie
    # too, so that the phone is told why on its next request.
    app = _with_why(make_app(raw_collection))
    phone, laptop = app.test_client(), app.test_client()

    @app.post("/logout-slowly")
    def logout_slowly():
        laptop.post("/login/alice")  # meanwhile
        logout_user()
        return {"ok": True}

    phone.post("/login/alice")
    response = phone.post("/logout-slowly")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert phone.get("/why").json["reason"] == "signed_in_elsewhere"
    assert laptop.get("/me").json["user"] == "alice"


def test_emptying_the_session_while_a_login_moves_it_keeps_the_login(raw_collection):
    # One tab empties the anonymous session while another logs in (which
    # moves the session to a new id). The emptying request finds nothing to
    # delete and must leave the cookie: the login's cookie stands.
    app = make_app(raw_collection)
    browser = app.test_client()

    @app.post("/clear-slowly")
    def clear_slowly():
        session.clear()
        browser.post("/login/alice")  # the other tab, meanwhile
        return {"ok": True}

    browser.post("/set/cart", json=["apple"])
    response = browser.post("/clear-slowly")
    assert "Set-Cookie" not in response.headers
    assert browser.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice")) == 1


@pytest.mark.parametrize("limit", [1, None])
@pytest.mark.parametrize("on_limit", ["deny", "evict"])
def test_logging_in_again_after_the_session_idled_out_under_remember_me(
    raw_collection, on_limit, limit
):
    # The device's session idled out; its remember-me is still valid. The login
    # form (no restore first) replaces the remembered session: under "deny" it
    # gives its place back, and nothing of it is left over.
    app = make_app(
        raw_collection,
        SINGLE_SESSION_ON_LIMIT=on_limit,
        SINGLE_SESSION_MAX_SESSIONS=limit,
    )
    clock = app.extensions["single_session"].clock
    device = app.test_client()
    assert device.post("/login/alice?remember=1").status_code == 200
    clock.advance(days=32)
    assert device.post("/login/alice").status_code == 200
    (document,) = stored(raw_collection, user_id="alice")
    assert "revoked" not in document and "remember" not in document
    with app.test_request_context():
        assert len(app.extensions["test_ext"].sessions_of("alice")) == 1


def _second_click_paused_after_load(
    store: t.Any, tab: t.Any
) -> tuple[threading.Event, threading.Thread, dict[str, t.Any]]:
    """The second click (``tab``) loads the session, then waits for ``go``."""
    loaded, go, seen = threading.Event(), threading.Event(), {}
    load = store.load

    def paused_load(*args: t.Any, **kwargs: t.Any) -> t.Any:
        result = load(*args, **kwargs)
        if threading.current_thread().name == "second" and not loaded.is_set():
            loaded.set()
            assert go.wait(10)
        return result

    store.load = paused_load
    thread = threading.Thread(
        target=lambda: seen.update(r=tab.post("/logout-others")), name="second"
    )
    thread.start()
    assert loaded.wait(10)
    return go, thread, seen


def test_a_double_click_while_a_login_elsewhere_keeps_that_login(raw_collection):
    # The first click stores its new id; the phone logs in (the newest login:
    # it evicts that new id); then the second click, which loaded the session
    # before the first took it, runs while the first still moves it. The phone
    # logged in after the move began: it stays.
    app = _with_why(_with_logout_others(make_app(raw_collection)))
    browser, tab, store = logged_in_with_another_tab(app)
    phone = app.test_client()
    go, thread, seen = _second_click_paused_after_load(store, tab)

    def the_phone_then_the_second_click() -> None:
        assert _in_thread(lambda: phone.post("/login/alice")).status_code == 200
        go.set()
        thread.join(10)

    after(store, "insert", the_phone_then_the_second_click)
    browser.post("/logout-others")
    assert phone.get("/me").json["user"] == "alice"
    assert len(stored(raw_collection, user_id="alice", revoked={"$exists": False})) == 1


def test_a_double_click_on_a_session_stored_before_login_ids(raw_collection):
    # A session without a login_id lends its _id to its successors: the second
    # click knows the first one's new id for the same login, and keeps it.
    app = _with_why(
        _with_logout_others(make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None))
    )
    browser, tab, store = logged_in_with_another_tab(app)
    raw_collection.update_many({}, {"$unset": {"login_id": ""}})
    go, thread, seen = _second_click_paused_after_load(store, tab)
    after(store, "insert", lambda: (go.set(), thread.join(10)))
    assert browser.post("/logout-others").status_code == 200
    assert seen["r"].status_code == 200
    assert browser.get("/me").json["user"] == "alice"


@pytest.mark.parametrize("revoked", [True, {"reason": 7}], ids=["a bool", "a number"])
def test_a_revocation_of_another_shape_during_logout_others(raw_collection, revoked):
    # Another writer (an operator's script) revokes the session mid-move with
    # a value the library does not write: no 500, and no new id left behind.
    app = _with_why(_with_logout_others(make_app(raw_collection)))
    laptop = app.test_client()
    laptop.post("/login/alice")
    store = app.extensions["single_session"].store
    after(
        store,
        "take",
        lambda: raw_collection.update_many(
            {"user_id": "alice"}, {"$set": {"revoked": revoked}}
        ),
    )
    response = laptop.post("/logout-others")
    assert response.status_code == 200
    assert response.json == {"ended": 0, "user": None}
    assert stored(raw_collection, user_id="alice", revoked={"$exists": False}) == []


def test_logout_others_keeps_a_login_made_after_it_began(raw_collection):
    # logout_others has begun when a new phone logs in, and then another tab
    # of the browser logs in again, moving the session before logout_others
    # can. The old phone ends; the new one, which came after the call began,
    # stays.
    app = _with_logout_others(
        make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    )
    store = app.extensions["single_session"].store
    old_phone, new_phone = app.test_client(), app.test_client()
    old_phone.post("/login/alice")
    browser, tab, store = logged_in_with_another_tab(app)
    take, insert = store.take, store.insert
    reached, go = threading.Event(), threading.Event()

    def tab_pauses_before_insert(document: t.Any) -> t.Any:
        if threading.current_thread().name == "tab":
            reached.set()
            assert go.wait(10)
        return insert(document)

    def new_phone_and_tab_first(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if (
            threading.current_thread() is threading.main_thread()
            and not reached.is_set()
        ):
            _in_thread(lambda: new_phone.post("/login/alice"))
            seen["tab"] = threading.Thread(
                target=lambda: tab.post("/login/alice"), name="tab"
            )
            seen["tab"].start()
            assert reached.wait(10)
        return take(*args, **kwargs)

    seen: dict[str, t.Any] = {}
    store.insert, store.take = tab_pauses_before_insert, new_phone_and_tab_first
    response = browser.post("/logout-others")
    go.set()
    seen["tab"].join(10)
    assert response.json == {"ended": 1, "user": "alice"}
    assert old_phone.get("/me").json["user"] is None
    assert new_phone.get("/me").json["user"] == "alice"
