"""Settings: a bad value is a ConfigurationError that names it, at init_app,
not a 500 (or a silent misbehaviour) on a later request."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType

import pymongo
import pytest
from flask import Flask
from flask import session
from flask_login import LoginManager

from conftest import make_app
from single_session import ConfigurationError
from single_session import SingleSession

BAD = [
    ("SINGLE_SESSION_TOUCH_INTERVAL", "abc"),
    ("SINGLE_SESSION_TOUCH_INTERVAL", None),
    ("SINGLE_SESSION_TOUCH_INTERVAL", -1),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", 0),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", -5),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", "abc"),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", timedelta(0)),
    ("SINGLE_SESSION_TIMEOUT", 0),
    ("SINGLE_SESSION_TIMEOUT", -1),
    ("SINGLE_SESSION_TIMEOUT", "abc"),
    ("SINGLE_SESSION_TIMEOUT", None),
    ("SINGLE_SESSION_TIMEOUT", math.nan),
    ("SINGLE_SESSION_TIMEOUT", math.inf),
    ("SINGLE_SESSION_TIMEOUT", 1e300),
    ("SINGLE_SESSION_TIMEOUT", True),
    ("SINGLE_SESSION_TIMEOUT", 1e-9),  # rounds to nothing
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", timedelta.max),  # past the last date
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", 10**12),
    ("SINGLE_SESSION_MAX_SIZE", 0),
    ("SINGLE_SESSION_MAX_SIZE", -1),
    ("SINGLE_SESSION_MAX_SIZE", 1.5),
    ("SINGLE_SESSION_MAX_SIZE", "100"),
    ("SINGLE_SESSION_MAX_SESSIONS", 0),
    ("SINGLE_SESSION_MAX_SESSIONS", 1.5),
    ("SINGLE_SESSION_MAX_SESSIONS", "2"),
    ("SINGLE_SESSION_MAX_SESSIONS", True),
    ("SINGLE_SESSION_ON_LIMIT", "first"),
    ("SINGLE_SESSION_REVOKED_MESSAGE", 1),
    ("SINGLE_SESSION_REVOKED_MESSAGE", ["a"]),
    ("SINGLE_SESSION_REVOKED_MESSAGE", {"revoked": 5}),
    ("SINGLE_SESSION_REVOKED_MESSAGE", lambda reason: "bye"),
    ("SINGLE_SESSION_REVOKED_MESSAGE", MappingProxyType({"revoked": ["x"]})),
    ("SINGLE_SESSION_REVOKED_MESSAGE", {"signed_in_elswhere": "Signed out."}),
    ("SINGLE_SESSION_RECORD_DEVICE", "false"),  # as an environment variable gives it
    ("SINGLE_SESSION_RECORD_DEVICE", None),
    ("SINGLE_SESSION_RECORD_DEVICE", 0),
]


@pytest.mark.parametrize("key, value", BAD, ids=lambda v: repr(v))
def test_a_bad_setting_is_refused_at_init_app(collection, key, value):
    with pytest.raises(ConfigurationError) as info:
        make_app(collection, **{key: value})
    assert key in str(info.value)


class LazyString:
    """What flask_babel's lazy_gettext returns: not a str, but flashes as one."""

    def __str__(self) -> str:
        return "Vous avez été déconnecté."

    def __html__(self) -> str:
        return str(self)


GOOD = [
    ("SINGLE_SESSION_TOUCH_INTERVAL", 0),  # write back on every request
    ("SINGLE_SESSION_TOUCH_INTERVAL", "30"),  # as an environment variable gives it
    ("SINGLE_SESSION_TOUCH_INTERVAL", Decimal("2.5")),
    ("SINGLE_SESSION_REVOKED_MESSAGE", LazyString()),
    ("SINGLE_SESSION_REVOKED_MESSAGE", {"signed_in_elsewhere": LazyString()}),
    ("SINGLE_SESSION_REVOKED_MESSAGE", MappingProxyType({"revoked": "Signed out."})),
    ("SINGLE_SESSION_TOUCH_INTERVAL", timedelta(minutes=5)),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", 3600.5),
    ("SINGLE_SESSION_ABSOLUTE_LIFETIME", timedelta(days=7)),
    ("SINGLE_SESSION_TIMEOUT", timedelta(seconds=2)),
    ("SINGLE_SESSION_MAX_SIZE", None),
    ("SINGLE_SESSION_MAX_SESSIONS", None),
    ("SINGLE_SESSION_MAX_SESSIONS", 3),
    ("SINGLE_SESSION_MAX_SESSIONS", lambda user: 2),
    ("SINGLE_SESSION_REVOKED_MESSAGE", None),
    ("SINGLE_SESSION_REVOKED_MESSAGE", "Signed out."),
    ("SINGLE_SESSION_REVOKED_MESSAGE", {"revoked": None, "logout_everywhere": "x"}),
    ("SINGLE_SESSION_REVOKED_MESSAGE", {"logged_out": "Signed out in another tab."}),
    ("SINGLE_SESSION_RECORD_DEVICE", False),
]


@pytest.mark.parametrize("key, value", GOOD, ids=lambda v: repr(v))
def test_good_settings_are_accepted(collection, key, value):
    client = make_app(collection, **{key: value}).test_client()
    assert client.post("/login/alice").status_code == 200
    assert client.get("/me").json["user"] == "alice"


def test_a_setting_changed_later_to_a_bad_value_names_itself(collection):
    # Settings read when used may change after init_app (in tests, say).
    app = make_app(collection)
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = lambda user: 0
    app.config["TESTING"] = True
    with pytest.raises(ConfigurationError, match="SINGLE_SESSION_MAX_SESSIONS"):
        app.test_client().post("/login/alice")


@pytest.mark.parametrize("good, bad", [(1, True), (0, False), (60, "60s")])
def test_a_touch_interval_changed_later_to_a_bad_value_fails_each_time(
    collection, good, bad
):
    # (The interval is worked out once per setting: a bad value equal to the
    # last good one, as True is to 1, is still checked.)
    app = make_app(collection, SINGLE_SESSION_TOUCH_INTERVAL=good)
    client = app.test_client()
    client.post("/login/alice")
    assert client.get("/me").json["user"] == "alice"
    app.config["SINGLE_SESSION_TOUCH_INTERVAL"] = bad
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="SINGLE_SESSION_TOUCH_INTERVAL"):
            client.post("/set/cart", json=[1])


@pytest.mark.parametrize(
    "key, value",
    [
        ("SINGLE_SESSION_ON_LIMIT", "Evict"),
        ("SINGLE_SESSION_RECORD_DEVICE", "false"),
    ],
)
def test_a_setting_read_at_login_changed_later_to_a_bad_value(collection, key, value):
    # A typo set after init_app (a test fixture, say) fails the login that reads
    # it rather than behaving as some other value ("deny", or recording).
    app = make_app(collection)
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        app.test_client().post("/login/alice")


LOCATIONS = [
    ("SINGLE_SESSION_MONGODB_URI", "mongodb://"),
    ("SINGLE_SESSION_MONGODB_URI", "http://localhost"),
    ("SINGLE_SESSION_MONGODB_URI", "mongodb://localhost:99999"),
    ("SINGLE_SESSION_MONGODB_URI", 27017),
    ("SINGLE_SESSION_DATABASE", "my.db"),
    ("SINGLE_SESSION_DATABASE", ""),
    ("SINGLE_SESSION_DATABASE", 5),
    ("SINGLE_SESSION_DATABASE", "x" * 64),
    ("SINGLE_SESSION_MONGODB_URI", "mongodb+srv://h1:27017,h2/app"),
    ("SINGLE_SESSION_MONGODB_URI", "mongodb+srv://cluster.example.com:27017/app"),
    ("SINGLE_SESSION_MONGODB_URI", "mongodb+srv://cluster.example.com/bad$db"),
    ("SINGLE_SESSION_MONGODB_URI", "mongodb://127.0.0.1:1/" + "x" * 64),
    # (Beyond the URI's form: what MongoClient refuses before connecting.)
    ("SINGLE_SESSION_MONGODB_URI", "mongodb://127.0.0.1:1/app?authMechanism=PLAIN"),
    ("SINGLE_SESSION_COLLECTION", ""),
    ("SINGLE_SESSION_COLLECTION", "a$b"),
    ("SINGLE_SESSION_COLLECTION", "system.sessions"),
    ("SINGLE_SESSION_COLLECTION", ".sessions"),
    ("SINGLE_SESSION_COLLECTION", None),
]


@pytest.mark.parametrize("key, value", LOCATIONS, ids=lambda v: repr(v))
def test_a_bad_location_is_refused_at_init_app(key, value):
    # Checked without a connection: a typo is found when the app starts, not by
    # a 500 on the first write.
    config = {"SINGLE_SESSION_MONGODB_URI": "mongodb://127.0.0.1:1/app", key: value}
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", **config)
    LoginManager(app)
    with pytest.raises(ConfigurationError) as info:
        SingleSession(app)
    assert key in str(info.value)


def test_a_refused_srv_uri_does_not_show_its_password():
    # An unescaped "/" in the password: what reads as the host is part of it.
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="k",
        SINGLE_SESSION_MONGODB_URI="mongodb+srv://admin:hunter2/x@cluster.example.net/db",
    )
    LoginManager(app)
    with pytest.raises(ConfigurationError) as info:
        SingleSession(app)
    assert "hunter2" not in str(info.value)
    assert "%2F" in str(info.value)


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://127.0.0.1:1",
        "mongodb://user:pw@127.0.0.1:1,127.0.0.2:1/app?replicaSet=rs&timeoutMS=500",
        "mongodb+srv://cluster.example.invalid/app",  # (no DNS lookup at init)
        "mongodb+srv://user:p%40ss@cluster.example.invalid/?retryWrites=true",
        "mongodb://127.0.0.1:1/?someFutureOption=1",  # a warning, as for MongoClient
        "mongodb://[::1]:1,127.0.0.1:1/app",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock/app",
        "mongodb://127.0.0.1:1/?tls=true&tlsCAFile=/not/there/yet.pem",
        # (pymongo warns about such hosts when it makes the client for real.)
        "mongodb://u:p@cluster.docdb.amazonaws.com:27017/app?tls=true",
    ],
)
@pytest.mark.filterwarnings("ignore:Unknown option")
def test_good_locations_are_accepted_without_connecting(uri):
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SINGLE_SESSION_MONGODB_URI=uri)
    LoginManager(app)
    SingleSession(app)
    assert app.extensions["single_session"].store is not None


def test_init_app_takes_a_collection_for_an_app_factory(raw_collection):
    single = SingleSession()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.update(SECRET_KEY="k")
        LoginManager(app)
        single.init_app(app, collection=raw_collection)

        @app.post("/set")
        def set_value() -> str:
            session["cart"] = ["apple"]
            return "ok"

        return app

    create_app().test_client().post("/set")
    (document,) = raw_collection.find()
    assert "cart" in document["data"]


def test_init_app_takes_a_real_pymongo_collection():
    # (A pymongo Collection refuses truth-value testing: mongomock's does not.)
    client = pymongo.MongoClient("mongodb://127.0.0.1:1/", connect=False)
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k")
    LoginManager(app)
    SingleSession().init_app(app, collection=client.app.sessions)
    assert app.extensions["single_session"].store.collection.name == "sessions"
    client.close()
