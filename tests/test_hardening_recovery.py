"""Recovery without a restart: while every database call fails, requests that
need the database are 503s that change nothing; when the database is back,
everything works again and no session written before the fault is lost."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect
from pymongo.errors import NetworkTimeout
from pymongo.errors import ServerSelectionTimeoutError

from conftest import make_app
from conftest import stored
from faults import FaultyCollection
from single_session import logout_everywhere
from single_session import SessionStoreUnavailable

OUTAGES = {
    "AutoReconnect": AutoReconnect("connection closed (test)"),
    "NetworkTimeout": NetworkTimeout("timed out (test)"),
    "ServerSelectionTimeoutError": ServerSelectionTimeoutError("no servers (test)"),
}


@pytest.fixture
def faulty(raw_collection):
    return FaultyCollection(raw_collection)


@pytest.mark.parametrize("error", OUTAGES.values(), ids=OUTAGES.keys())
def test_requests_go_from_503_back_to_normal_and_nothing_is_lost(faulty, error):
    app = make_app(faulty)
    alice, bob, anonymous = app.test_client(), app.test_client(), app.test_client()
    alice.post("/login/alice?remember=1")
    alice.post("/set/cart", json=["apple"])
    anonymous.post("/set/theme", json="dark")
    before = stored(faulty)

    faulty.faults.down = error
    during = [
        alice.get("/me"),
        alice.get("/get/cart"),
        alice.post("/set/cart", json=["pear"]),
        alice.post("/logout"),
        anonymous.get("/get/theme"),
        bob.post("/login/bob"),
        bob.post("/set/cart", json=[1]),
    ]
    with app.app_context(), pytest.raises(SessionStoreUnavailable):
        logout_everywhere("alice")
    assert [r.status_code for r in during] == [503] * len(during)
    assert all("Set-Cookie" not in r.headers for r in during)
    assert faulty.faults.calls  # the database really was asked, and failed

    faulty.faults.down = None
    assert stored(faulty) == before
    assert alice.get("/me").json["user"] == "alice"
    assert alice.get("/get/cart").json["value"] == ["apple"]
    assert anonymous.get("/get/theme").json["value"] == "dark"
    assert bob.post("/login/bob").json["user"] == "bob"
    assert alice.post("/set/cart", json=["pear"]).status_code == 200
    assert alice.get("/get/cart").json["value"] == ["pear"]


def test_a_restored_remember_me_survives_an_outage(faulty):
    """A device whose session cookie is gone keeps its remember-me cookie
    through an outage, and is restored once the database is back."""
    app = make_app(faulty)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    client.delete_cookie("session")
    remember = client.get_cookie("remember_token").value

    faulty.faults.down = AutoReconnect("down (test)")
    r = client.get("/me")
    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    assert client.get_cookie("remember_token").value == remember

    faulty.faults.down = None
    assert client.get("/me").json == {"user": "alice", "fresh": False}


def test_outage_between_requests_of_one_login_leaves_one_session(faulty):
    """Failed logins during the outage left nothing behind: after it, the user
    has exactly the sessions that succeeded."""
    app = make_app(faulty, SINGLE_SESSION_MAX_SESSIONS=2)
    first = app.test_client()
    first.post("/login/alice")

    faulty.faults.down = AutoReconnect("down (test)")
    for _ in range(3):
        assert app.test_client().post("/login/alice").status_code == 503

    faulty.faults.down = None
    assert len(stored(faulty, user_id="alice")) == 1
    second = app.test_client()
    assert second.post("/login/alice").status_code == 200
    assert first.get("/me").json["user"] == "alice"  # two allowed: nobody evicted
    assert len(stored(faulty, user_id="alice")) == 2


def test_a_restore_that_fails_half_way_keeps_the_remember_me(faulty):
    """The database fails after the device's old session was taken but before
    its successor is stored: the old one is put back, and the next try works."""
    app = make_app(faulty)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    client.delete_cookie("session")
    remember = client.get_cookie("remember_token").value

    faulty.faults.plan("insert_one", AutoReconnect("down for one call (test)"))
    r = client.get("/me")
    assert r.status_code == 503
    assert client.get_cookie("remember_token").value == remember

    assert client.get("/me").json == {"user": "alice", "fresh": False}
    assert len(stored(faulty, user_id="alice")) == 1
