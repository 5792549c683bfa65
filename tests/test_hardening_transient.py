"""Transient errors in the middle of writes (AutoReconnect, NetworkTimeout)
raised by a wrapped collection on chosen calls. Idempotent operations are tried
once more and otherwise fail with a 503 / SessionStoreUnavailable; logout,
eviction and logout_everywhere never report a success that did not happen; a
failed login leaves no half-bound session; a taken session id gets a new one."""

from __future__ import annotations

import pytest
from flask import session
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from pymongo.errors import AutoReconnect
from pymongo.errors import DuplicateKeyError
from pymongo.errors import NetworkTimeout

from conftest import make_app
from conftest import stored
from conftest import USERS
from faults import FaultyCollection
from single_session import logout_everywhere
from single_session import revocation
from single_session import SessionStoreUnavailable

TRANSIENT = {
    "AutoReconnect": lambda: AutoReconnect("connection reset (test)"),
    "NetworkTimeout": lambda: NetworkTimeout("timed out (test)"),
}


@pytest.fixture(params=TRANSIENT.values(), ids=TRANSIENT.keys())
def transient(request):
    """Makes a new transient error of one kind."""
    return request.param


@pytest.fixture
def faulty(raw_collection):
    return FaultyCollection(raw_collection)


@pytest.fixture
def app(faulty):
    return make_app(faulty)


def live(collection, user):
    return stored(collection, user_id=user, revoked={"$exists": False})


def login(app, user="alice"):
    client = app.test_client()
    assert client.post(f"/login/{user}").status_code == 200
    return client


# -- logout_everywhere -----------------------------------------------------------------


def test_logout_everywhere_is_retried_once(app, faulty, transient):
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    phone, laptop = login(app), login(app)
    faulty.faults.plan("update_many", transient())

    with app.app_context():
        assert logout_everywhere("alice") == 2

    assert faulty.faults.count("update_many") == 2
    assert live(faulty, "alice") == []
    assert phone.get("/me").json["user"] is None
    assert laptop.get("/me").json["user"] is None


def test_logout_everywhere_that_fails_twice_raises_and_ends_nothing(
    app, faulty, transient
):
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    phone, laptop = login(app), login(app)
    faulty.faults.plan("update_many", transient(), transient())

    with app.app_context(), pytest.raises(SessionStoreUnavailable):
        logout_everywhere("alice")

    assert faulty.faults.count("update_many") == 2
    assert len(live(faulty, "alice")) == 2
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] == "alice"


def test_logout_everywhere_whose_reply_was_lost_still_ends_everything(app, faulty):
    """The update happened but its reply was lost: the retry finds nothing left
    to end. The sessions are ended all the same, and no error is raised."""
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    phone, laptop = login(app), login(app)
    faulty.faults.plan("update_many", ("after", AutoReconnect("reply lost (test)")))

    with app.app_context():
        ended = logout_everywhere("alice")

    assert ended <= 2  # never more than there were
    assert live(faulty, "alice") == []
    assert phone.get("/me").json["user"] is None
    assert laptop.get("/me").json["user"] is None


# -- logout ----------------------------------------------------------------------------


def test_logout_is_retried_once(app, faulty, transient):
    client = login(app)
    faulty.faults.plan("find_one_and_delete", transient())

    assert client.post("/logout").status_code == 200

    assert live(faulty, "alice") == []
    assert client.get("/me").json["user"] is None


def test_a_logout_that_finds_its_session_revoked_on_the_second_try_tells_why(
    faulty, transient
):
    # The first try fails before it is applied; meanwhile another device
    # revokes the session. The second try finds only its tombstone: the
    # device is told why, as it would be without the failure.
    app = make_app(faulty)

    @app.post("/logout-after-revocation")
    def logout_after_revocation():
        state = app.extensions["single_session"]
        state.store.revoke({"user_id": "alice"}, "logout_everywhere", state.now())
        logout_user()
        return "ok"

    @app.get("/why")
    def why():
        revoked = revocation()
        return {"why": None if revoked is None else revoked.reason}

    client = login(app)
    faulty.faults.plan("find_one_and_delete", transient())
    assert client.post("/logout-after-revocation").status_code == 200
    assert client.get("/why").json == {"why": "logout_everywhere"}
    assert client.get("/me").json["user"] is None


def test_logout_that_fails_twice_is_a_503_and_the_login_stays(app, faulty, transient):
    client = login(app)
    client.post("/set/cart", json=["apple"])
    before = stored(faulty)
    faulty.faults.plan("find_one_and_delete", transient(), transient())

    r = client.post("/logout")

    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    assert stored(faulty) == before
    assert client.get("/me").json["user"] == "alice"
    assert client.get("/get/cart").json["value"] == ["apple"]
    # And logging out works once the database answers.
    assert client.post("/logout").status_code == 200
    assert live(faulty, "alice") == []


# -- eviction --------------------------------------------------------------------------


def test_eviction_is_retried_once(app, faulty, transient):
    phone = login(app)
    faulty.faults.plan("update_many", transient())

    laptop = login(app)

    assert phone.get("/me").json["user"] is None
    assert laptop.get("/me").json["user"] == "alice"
    assert len(live(faulty, "alice")) == 1


def test_eviction_that_fails_is_a_failed_login_that_leaves_nothing(
    app, faulty, transient
):
    phone = login(app)
    before = stored(faulty)
    faulty.faults.plan("update_many", transient(), transient())

    laptop = app.test_client()
    r = laptop.post("/login/alice")

    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    # No half-bound session: the new one was taken back; the phone is as it was.
    assert stored(faulty) == before
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None


def test_eviction_whose_reply_was_lost_still_evicts(app, faulty):
    phone = login(app)
    faulty.faults.plan("update_many", ("after", AutoReconnect("reply lost (test)")))

    laptop = login(app)

    assert phone.get("/me").json["user"] is None
    assert laptop.get("/me").json["user"] == "alice"
    assert len(live(faulty, "alice")) == 1


# -- login -----------------------------------------------------------------------------


def test_login_whose_insert_reply_was_lost_is_found_and_kept(app, faulty):
    faulty.faults.plan("insert_one", ("after", AutoReconnect("reply lost (test)")))

    client = login(app)

    assert client.get("/me").json["user"] == "alice"
    assert len(live(faulty, "alice")) == 1
    assert faulty.faults.count("insert_one") == 1  # an insert is never sent twice


def test_login_whose_insert_failed_is_a_503_that_leaves_nothing(app, faulty, transient):
    faulty.faults.plan("insert_one", transient())

    client = app.test_client()
    r = client.post("/login/alice")

    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    assert stored(faulty) == []
    assert faulty.faults.count("insert_one") == 1


@pytest.mark.parametrize("step", ["find", "update_many"])
def test_login_failing_after_its_insert_leaves_no_half_bound_session(
    faulty, transient, step
):
    """Anonymous data, an existing session to evict, then a login that fails
    after its new session was inserted: reading the user's sessions (find) or
    evicting (update_many). The new session is taken back."""
    app = make_app(faulty)
    phone = login(app)
    laptop = app.test_client()
    laptop.post("/set/cart", json=["apple"])
    before = stored(faulty)
    faulty.faults.plan(step, transient(), transient())

    r = laptop.post("/login/alice")

    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    assert stored(faulty) == before
    assert phone.get("/me").json["user"] == "alice"
    assert laptop.get("/me").json["user"] is None
    assert laptop.get("/get/cart").json["value"] == ["apple"]


def test_login_whose_old_session_cannot_be_deleted_still_succeeds(
    faulty, transient, caplog
):
    """The last step of a login removes the device's previous session. If that
    fails, the login (which has already evicted the phone) stands; the old
    session is a leftover nobody has the cookie of."""
    app = make_app(faulty)
    phone = login(app)
    laptop = app.test_client()
    laptop.post("/set/cart", json=["apple"])
    old_cookie = laptop.get_cookie("session").value
    faulty.faults.plan("find_one_and_delete", transient(), transient())

    r = laptop.post("/login/alice")

    assert r.status_code == 200
    assert "could not delete a replaced session" in caplog.text
    assert laptop.get_cookie("session").value != old_cookie
    assert laptop.get("/me").json["user"] == "alice"
    assert laptop.get("/get/cart").json["value"] == ["apple"]
    assert phone.get("/me").json["user"] is None
    assert len(live(faulty, "alice")) == 1


def test_login_whose_insert_is_in_doubt_is_taken_back(faulty, transient):
    """The insert's reply was lost and the check whether it landed failed too:
    the login fails, and its session (which did land) is taken back."""
    app = make_app(faulty)
    faulty.faults.plan("insert_one", ("after", AutoReconnect("reply lost (test)")))
    faulty.faults.plan("find_one", transient(), transient())

    r = app.test_client().post("/login/alice")

    assert r.status_code == 503
    assert stored(faulty) == []


def test_deny_login_in_doubt_holds_no_slot(raw_collection, transient):
    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")
    faulty.faults.plan("insert_one", ("after", AutoReconnect("reply lost (test)")))
    faulty.faults.plan("find_one", transient(), transient())

    assert app.test_client().post("/login/alice").status_code == 503

    # The slot is free: the next login is admitted.
    assert stored(faulty, user_id="alice") == []
    assert login(app).get("/me").json["user"] == "alice"


# -- ordinary writes -------------------------------------------------------------------


def test_write_is_retried_once(app, faulty, transient):
    client = login(app)
    faulty.faults.plan("update_one", transient())

    assert client.post("/set/cart", json=["apple"]).status_code == 200
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_write_that_fails_twice_is_a_503_and_the_session_stays(app, faulty, transient):
    client = login(app)
    client.post("/set/cart", json=["apple"])
    before = stored(faulty)
    faulty.faults.plan("update_one", transient(), transient())

    r = client.post("/set/cart", json=["pear"])

    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    assert stored(faulty) == before
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_read_is_retried_once(app, faulty, transient):
    client = login(app)
    faulty.faults.plan("find_one", transient())

    assert client.get("/me").json["user"] == "alice"
    assert faulty.faults.count("find_one") == 2


# -- a taken session id ----------------------------------------------------------------


def test_taken_id_gets_a_new_one(app, faulty):
    faulty.faults.plan("insert_one", DuplicateKeyError("E11000 duplicate key (test)"))

    client = login(app)

    tried = [doc["_id"] for name, doc in faulty.faults.calls if name == "insert_one"]
    assert len(tried) == 2 and tried[0] != tried[1]
    (doc,) = stored(faulty)
    assert doc["_id"] == tried[1]
    assert client.get("/me").json["user"] == "alice"


def test_taken_ids_are_retried_a_bounded_number_of_times(app, faulty):
    faulty.faults.plan(
        "insert_one", *[DuplicateKeyError("E11000 duplicate key (test)")] * 10
    )

    with pytest.raises(DuplicateKeyError):
        app.test_client().post("/set/cart", json=["apple"])

    assert faulty.faults.count("insert_one") == 3
    assert stored(faulty) == []


# -- a failure after a login or restore was stored -------------------------------


def _cookie_names(response):
    return sorted(h.split("=", 1)[0] for h in response.headers.getlist("Set-Cookie"))


def test_a_login_stored_before_a_later_failure_keeps_its_cookie(
    raw_collection, transient
):
    # The view logs in, then changes the session; that last write fails. The
    # request is a 503, but the login is stored: its cookie goes out, or the
    # login would be held by no device (under "deny", holding the only place).
    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty, SINGLE_SESSION_ON_LIMIT="deny")

    @app.post("/login-then-note")
    def login_then_note():
        login_user(USERS["alice"])
        faulty.faults.plan("update_one", transient(), transient())
        session["note"] = "welcome"
        return "ok"

    device = app.test_client()
    response = device.post("/login-then-note")
    assert response.status_code == 503
    assert _cookie_names(response) == ["session"]
    assert device.get("/me").json["user"] == "alice"
    assert device.get("/get/note").json == {"value": None}  # the failed write
    assert len(live(raw_collection, "alice")) == 1


def test_a_restore_stored_before_a_later_failure_keeps_its_cookies(
    raw_collection, transient
):
    # The rotated remember-me token is stored: without the new cookie, the
    # device's next restore would present the old token and look stolen.
    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty)

    @app.post("/greet")
    def greet():
        session["greeted"] = current_user.get_id()  # restores, then writes
        return "ok"

    clock = app.extensions["single_session"].clock
    device = app.test_client()
    device.post("/login/alice?remember=1")
    device.delete_cookie("session")  # the browser restarts
    faulty.faults.plan("update_one", transient(), transient())
    response = device.post("/greet")
    assert response.status_code == 503
    assert _cookie_names(response) == ["remember_token", "session"]
    assert device.get("/me").json["user"] == "alice"

    clock.advance(seconds=120)  # well past the grace for parallel restores
    device.delete_cookie("session")  # and the browser restarts again
    assert device.get("/me").json["user"] == "alice"
    assert stored(raw_collection, revoked={"$exists": True}) == []
