"""Bad input, one case at a time: cookies that are not ours, stored documents
that are not what the library writes, and values that cannot be stored."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from flask import session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import Signer

from conftest import make_app
from conftest import stored
from conftest import UpdateRecorder
from single_session import SessionDataError
from single_session import SessionTooLarge
from single_session.tokens import new_id


def session_cookie(client):
    cookie = client.get_cookie("session")
    return None if cookie is None else cookie.value


def logged_in(app):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/cart", json=["apple"])
    return client


def sign(app, payload, salt):
    return (
        Signer(app.secret_key, salt=salt, digest_method=hashlib.sha256)
        .sign(payload)
        .decode()
    )


def tamper(value):
    payload, signature = value.rsplit(".", 1)
    flipped = "A" if signature[0] != "A" else "B"
    return f"{payload}.{flipped}{signature[1:]}"


BAD_COOKIES = {
    "tampered signature": lambda app, good: tamper(good),
    "tampered id": lambda app, good: ("A" if good[0] != "A" else "B") + good[1:],
    "unsigned id": lambda app, good: good.rsplit(".", 1)[0],
    "empty": lambda app, good: "",
    "garbage": lambda app, good: "not-a-cookie",
    "8 KB": lambda app, good: good * (8192 // len(good) + 1),
    "NUL inside": lambda app, good: good[:10] + "\x00" + good[10:],
    "remember-me salt": lambda app, good: sign(
        app, good.rsplit(".", 1)[0], "single_session.remember"
    ),
    "Flask's cookie session": lambda app, good: (
        SecureCookieSessionInterface()
        .get_signing_serializer(app)
        .dumps({"_user_id": "alice", "_fresh": True})
    ),
    "another secret key": lambda app, good: (
        Signer(
            "another secret",
            salt="single_session.session",
            digest_method=hashlib.sha256,
        )
        .sign(good.rsplit(".", 1)[0])
        .decode()
    ),
}


@pytest.mark.parametrize("make_bad", BAD_COOKIES.values(), ids=BAD_COOKIES.keys())
def test_bad_cookie_is_anonymous_costs_no_query_and_harms_no_session(
    app, collection, make_bad
):
    good = session_cookie(logged_in(app))
    before = stored(collection)
    collection.reset()

    attacker = app.test_client(use_cookies=False)
    r = attacker.get("/private", headers={"Cookie": f"session={make_bad(app, good)}"})

    assert r.status_code == 401
    assert collection.log == []
    # The real session is untouched, and its owner is still logged in.
    assert stored(collection) == before
    owner = app.test_client(use_cookies=False)
    assert (
        owner.get("/me", headers={"Cookie": f"session={good}"}).json["user"] == "alice"
    )


# -- malformed stored documents --------------------------------------------------------

MALFORMED = {
    "no data": {"$unset": {"data": ""}},
    "data not a dict": {"$set": {"data": "cart=apple"}},
    "data value not a string": {"$set": {"data.cart": 5}},
    "data value not tagged JSON": {"$set": {"data.cart": "{not json"}},
    "data value two JSON values": {"$set": {"data.cart": '"apple","pear"'}},
    "data value empty": {"$set": {"data.cart": ""}},
    "data value not ASCII": {"$set": {"data.cart": '"poire \u00e0 la fran\u00e7aise"'}},
    "data value a broken UUID": {"$set": {"data.cart": '{" u":"zz"}'}},
    "data value a broken tuple": {"$set": {"data.cart": '{" t":5}'}},
    "data value a UUID not a string": {"$set": {"data.cart": '{" u":1}'}},
    "data value a date not a string": {"$set": {"data.cart": '{" d":1}'}},
    "data value a date a list": {"$set": {"data.cart": '{" d":[1]}'}},
    "data value bytes not a string": {"$set": {"data.cart": '{" b":1}'}},
    "no created_at": {"$unset": {"created_at": ""}},
    "seen_at a string": {"$set": {"seen_at": "yesterday"}},
    "expires_at a string": {"$set": {"expires_at": "2999-01-01T00:00:00Z"}},
    "no expires_at": {"$unset": {"expires_at": ""}},
    "purge_at a number": {"$set": {"purge_at": 12}},
    "no handle": {"$unset": {"handle": ""}},
    "handle a number": {"$set": {"handle": 7}},
    "user_id a number": {"$set": {"user_id": 7}},
    "user_id of another user": {"$set": {"user_id": "bob"}},
    "login_at a string": {"$set": {"login_at": "today"}},
    "no login_at": {"$unset": {"login_at": ""}},
    "data value nested too deep": {
        "$set": {"data.cart": "[" * 100_000 + "]" * 100_000}
    },
    "remember not a dict": {"$set": {"remember": "yes"}},
    "revoked not a dict": {"$set": {"revoked": "yes"}},
}


@pytest.mark.parametrize("update", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_document_is_absent_and_removed(
    app, collection, raw_collection, update
):
    client = logged_in(app)
    (doc,) = stored(collection)
    raw_collection.update_one({"_id": doc["_id"]}, update)

    r = client.get("/me")

    assert r.status_code == 200
    assert r.json["user"] is None
    assert client.get("/get/cart").json["value"] is None
    assert stored(collection, _id=doc["_id"]) == []


def test_malformed_anonymous_document_is_absent_and_removed(
    app, collection, raw_collection
):
    client = app.test_client()
    client.post("/set/cart", json=["apple"])
    (doc,) = stored(collection)
    raw_collection.update_one({"_id": doc["_id"]}, {"$set": {"data": ["apple"]}})

    assert client.get("/get/cart").json["value"] is None
    assert stored(collection, _id=doc["_id"]) == []


BAD_SECONDS = {
    "a string": "x",
    "not a number": float("nan"),
    "infinite": float("inf"),
    "beyond any date": 1e300,
    "negative": -5,
    "a bool": True,
}


@pytest.mark.parametrize("seconds", BAD_SECONDS.values(), ids=BAD_SECONDS.keys())
@pytest.mark.parametrize("refresh", [False, True])
def test_malformed_remember_lifetime_is_absent_and_removed(
    raw_collection, seconds, refresh
):
    # remember.seconds sets the cookie's lifetime: a value the library never
    # writes is a malformed document, whether the device comes back with its
    # session cookie or restores from its remember-me cookie.
    app = make_app(raw_collection, REMEMBER_COOKIE_REFRESH_EACH_REQUEST=refresh)
    for restart in (False, True):
        raw_collection.delete_many({})
        client = app.test_client()
        client.post("/login/alice?remember=1")
        (doc,) = stored(raw_collection)
        raw_collection.update_one(
            {"_id": doc["_id"]}, {"$set": {"remember.seconds": seconds}}
        )
        if restart:
            client.delete_cookie("session")

        r = client.get("/me")

        assert r.status_code == 200
        assert r.json["user"] is None
        assert stored(raw_collection) == []
        assert client.get_cookie("remember_token") is None
        assert client.get("/me").status_code == 200


def test_a_malformed_moved_from_does_not_stop_the_users_logins(raw_collection):
    app = make_app(raw_collection)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    raw_collection.update_one({"user_id": "alice"}, {"$set": {"moved_from": {"a": 1}}})

    assert laptop.post("/login/alice").status_code == 200
    assert laptop.get("/me").json["user"] == "alice"
    assert phone.get("/me").json["user"] is None


def test_a_moving_mark_far_in_the_future_does_not_freeze_the_device(raw_collection):
    # A mark further ahead than the lease (a clock far off, corruption) is no
    # move: the device goes on, logs out and in again, rather than being
    # anonymous until that date.
    app = make_app(raw_collection)
    clock = app.extensions["single_session"].clock
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/cart", json=["apple"])
    raw_collection.update_one(
        {"user_id": "alice"}, {"$set": {"moving": clock() + timedelta(hours=1)}}
    )

    assert client.get("/me").json["user"] == "alice"
    assert client.get("/get/cart").json["value"] == ["apple"]
    assert client.post("/login/alice").status_code == 200
    assert client.get("/me").json["user"] == "alice"
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_sessions_of_skips_what_it_cannot_show(raw_collection):
    app = make_app(raw_collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]
    devices = [app.test_client() for _ in range(3)]
    for device in devices:
        device.post("/login/alice")
    first, second, third = stored(raw_collection)
    raw_collection.update_one({"_id": first["_id"]}, {"$set": {"device": "x"}})
    raw_collection.update_one(
        {"_id": second["_id"]}, {"$set": {"device": {"ip": 5, "user_agent": ["x"]}}}
    )
    raw_collection.update_one({"_id": third["_id"]}, {"$unset": {"created_at": ""}})

    with app.test_request_context():
        infos = ext.sessions_of("alice")

    assert sorted(i.handle for i in infos) == sorted(
        [first["handle"], second["handle"]]
    )
    assert all(i.ip is None and i.user_agent is None for i in infos)


# -- values that cannot be stored ------------------------------------------------------


def unstorable_app(collection, **config):
    app = make_app(collection, **config)

    @app.post("/put-set")
    def put_set():
        session["tags"] = {"a", "b"}
        return "ok"

    @app.post("/put-deep")
    def put_deep():
        value: list = []
        for _ in range(5000):
            value = [value]
        session["deep"] = value
        return "ok"

    return app


@pytest.mark.parametrize("path,key", [("/put-set", "tags"), ("/put-deep", "deep")])
def test_unstorable_value_names_its_key_and_leaves_the_session(collection, path, key):
    app = unstorable_app(collection)
    client = logged_in(app)
    before = stored(collection)

    with pytest.raises(SessionDataError, match=repr(key)) as info:
        client.post(path)

    assert info.value.key == key
    assert stored(collection) == before
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_unstorable_value_is_a_500_without_a_cookie_in_production(collection):
    app = unstorable_app(collection)
    app.testing = False
    client = app.test_client()
    client.post("/set/cart", json=["apple"])
    before = stored(collection)

    r = client.post("/put-set")

    assert r.status_code == 500
    assert r.headers.getlist("Set-Cookie") == []
    assert stored(collection) == before


def test_oversized_session_names_the_limit_and_leaves_the_session(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=2000)
    client = logged_in(app)
    before = stored(collection)

    with pytest.raises(SessionTooLarge, match="SINGLE_SESSION_MAX_SIZE") as info:
        client.post("/set/big", json="x" * 3000)

    assert info.value.limit == 2000
    assert "2000" in str(info.value)
    assert stored(collection) == before
    assert client.get("/get/big").json["value"] is None
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_oversized_new_session_stores_nothing(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=2000)
    client = app.test_client()
    with pytest.raises(SessionTooLarge):
        client.post("/set/big", json="x" * 3000)
    assert stored(collection) == []
    assert client.get_cookie("session") is None


def test_no_limit_still_stops_below_what_mongodb_holds(collection):
    # With SINGLE_SESSION_MAX_SIZE = None, a session over MongoDB's 16 MiB is
    # refused as too large by the library (a real server would refuse the
    # document with an error that is no database failure: a bare 500).
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=None)
    client = logged_in(app)
    before = stored(collection)
    with pytest.raises(SessionTooLarge, match="MongoDB document") as info:
        client.post("/set/big", json="x" * (16 * 1024 * 1024))
    assert info.value.limit < 16 * 1024 * 1024
    assert stored(collection) == before
    assert client.get("/get/cart").json["value"] == ["apple"]


def test_a_change_of_many_keys_is_sent_in_an_update_mongodb_takes(collection):
    """Each changed key goes as its own field ("data.<key>"), which makes an
    update larger than the session: one that changes most keys of a session
    just within what a document holds would be over MongoDB's 16 MiB (pymongo
    refuses it before sending, with an error that is no database failure)."""
    import bson

    updates = []
    app = make_app(UpdateRecorder(collection, updates), SINGLE_SESSION_MAX_SIZE=None)
    keys = [f"k{i:06d}" for i in range(300_000)]

    @app.post("/fill/<letter>")
    def fill(letter):
        for key in keys:
            session[key] = letter * 36
        return "ok"

    client = app.test_client()
    assert client.post("/fill/a").status_code == 200
    assert client.post("/fill/b").status_code == 200
    assert [len(bson.encode(u)) <= 16 * 1024 * 1024 for u in updates] == [True]
    assert client.get("/get/k123456").json["value"] == "b" * 36
    (document,) = stored(collection)
    assert len(document["data"]) == len(keys)


def test_the_size_counts_a_key_in_utf8_bytes(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=1500)

    @app.post("/set-wide-key")
    def set_wide_key():
        session["é" * 700] = 1  # 700 characters, 1,400 bytes
        return {"ok": True}

    @app.post("/set-wider-key")
    def set_wider_key():
        session["é" * 800] = 1  # 800 characters, 1,600 bytes
        return {"ok": True}

    assert app.test_client().post("/set-wide-key").status_code == 200
    with pytest.raises(SessionTooLarge):
        app.test_client().post("/set-wider-key")


def test_odd_keys_round_trip(app):
    """Keys MongoDB treats specially ('.', '$', empty, NUL) are stored escaped."""
    client = app.test_client()
    keys = ["a.b", "$where", "%2E", "", "nul\x00", "%", "_id"]

    @app.post("/odd")
    def odd():
        for i, key in enumerate(keys):
            session[key] = i
        return "ok"

    @app.get("/odd")
    def read_odd():
        return {"items": sorted((k, v) for k, v in session.items())}

    client.post("/odd")
    assert client.get("/odd").json["items"] == sorted(
        [k, i] for i, k in enumerate(keys)
    )


def test_new_id_shape():
    """The ids the fuzz tests treat as well formed are what new_id makes."""
    sid = new_id()
    assert len(sid) == 43 and sid.isascii()


def _over_the_limit_by_two_tabs(raw_collection, **config):
    """Two tabs of one browser each write a key the size of half the limit at
    once: each request sees a session within the limit, and the store merges
    the two writes into one over it."""
    import threading

    from faults import LockedCollection

    collection = LockedCollection(raw_collection, threading.Lock())
    app = make_app(collection, SINGLE_SESSION_MAX_SIZE=1000, **config)
    loaded, go = threading.Event(), threading.Event()

    @app.post("/slow/<key>")
    def slow(key):
        session[key] = "x" * 480
        loaded.set()
        assert go.wait(10)
        return "ok"

    first = logged_in(app)
    second = app.test_client()
    second.set_cookie("session", first.get_cookie("session").value)
    seen = {}
    thread = threading.Thread(target=lambda: seen.update(r=first.post("/slow/a")))
    thread.start()
    assert loaded.wait(10)
    assert second.post("/set/b", json="y" * 480).status_code == 200
    go.set()
    thread.join(10)
    assert seen["r"].status_code == 200
    (document,) = stored(raw_collection)
    assert {"a", "b", "cart"} <= set(document["data"])
    return app, first


def test_a_session_pushed_over_the_limit_by_two_tabs_is_read_and_can_shrink(
    raw_collection,
):
    # The limit holds each request to what it sees; two tabs' writes merged
    # may end over it, by one write at most. Such a session is still read; a
    # write that keeps it over the limit fails as any does, and one that
    # brings it back under is stored.
    app, client = _over_the_limit_by_two_tabs(raw_collection)
    assert client.get("/me").json["user"] == "alice"
    before = stored(raw_collection)
    with pytest.raises(SessionTooLarge, match="SINGLE_SESSION_MAX_SIZE"):
        client.post("/set/b", json="z" * 470)
    assert stored(raw_collection) == before
    assert client.post("/set/b", json="z").status_code == 200
    assert client.post("/logout").status_code == 200
    assert client.get("/me").json["user"] is None
    assert client.get("/get/cart").json == {"value": ["apple"]}
    assert client.get("/get/b").json == {"value": "z"}
