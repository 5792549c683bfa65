"""Settings: a bad value is a ConfigurationError that names it, at init_app,
not a 500 (or a silent misbehaviour) on a later request."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType

import pytest

from conftest import make_app
from single_session import ConfigurationError

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
