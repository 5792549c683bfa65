"""Exact round trip (promise 11), stated as "the same as Flask": any session
content of Flask's tagged-JSON types comes back from single_session equal to,
and of the same types as, what Flask's own cookie session gives back for it;
through an insert, an update and a login that moves the data to a new id."""

from __future__ import annotations

import typing as t
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import session
from flask.json.provider import DefaultJSONProvider
from flask.json.tag import JSONTag
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import session_json_serializer
from hypothesis import example
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from markupsafe import Markup

from conftest import make_app
from single_session import serialization
from single_session.sessions import LOGIN_KEYS

text = st.text(st.characters(exclude_categories=()), max_size=12)
timezones = (
    st.none()
    | st.just(timezone.utc)
    | st.integers(-14 * 60, 14 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.binary(max_size=16),
    st.uuids(),
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=timezones,
    ),
    text.map(Markup),
)
# Dict keys include the ones Flask's tagger must escape (" t", " di", ...).
dict_keys = text | st.sampled_from(
    [" t", " di", " b", " d", " m", " u", " l", "$ne", "a.b"]
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(dict_keys, children, max_size=3)
    ),
    max_leaves=8,
)
session_keys = text.filter(lambda k: k not in LOGIN_KEYS and not k.startswith("_"))
contents = st.dictionaries(session_keys, values, min_size=1, max_size=4)


def same(a: t.Any, b: t.Any) -> bool:
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


class Cycle:
    """Routes that put a given dict into the session and record what a later
    request reads back."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.put: dict[str, t.Any] = {}
        self.got: dict[str, t.Any] | None = None

        @app.post("/put")
        def put() -> str:
            session.update(self.put)
            return "ok"

        @app.get("/take")
        def take() -> str:
            self.got = {k: v for k, v in session.items() if k not in LOGIN_KEYS}
            return "ok"

    def run(self, client: t.Any, data: dict[str, t.Any]) -> dict[str, t.Any] | None:
        self.put = data
        self.got = None
        assert client.post("/put").status_code == 200
        assert client.get("/take").status_code == 200
        return self.got


def flask_cycle() -> Cycle:
    """The same app on Flask's own cookie session: the reference."""
    return Cycle(make_app(None, cookie_session=True))


roundtrip = settings(
    max_examples=120,
    deadline=None,
    # One app per test; every example uses a new client, so nothing carries over.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@roundtrip
@given(first=contents, second=contents)
@example(
    first={"when": datetime(2024, 5, 6, 7, 8, 9, 123456)},
    second={"when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))},
)
@example(
    first={"nested": {" t": (1, b"\x00\xff"), "u": uuid.UUID(int=7)}},
    second={"nested": [Markup("<b>x</b>"), ("a",), {}], "f": -0.0},
)
@example(first={"big": 2**100, "s": "\ud800"}, second={"x": None, "y": True})
def test_session_content_round_trips_as_flask_does(collection, first, second):
    ours = Cycle(make_app(collection))
    reference = flask_cycle()
    client, reference_client = ours.app.test_client(), reference.app.test_client()

    # A new session (insert), then a change to it (update of changed keys).
    for data in (first, second):
        expected = reference.run(reference_client, data)
        got = ours.run(client, data)
        assert got is not None and expected is not None
        assert same(got, expected), (got, expected)

    # A login moves the data to a new, bound session.
    ours.app.extensions["single_session"].clock.advance(seconds=1)
    assert client.post("/login/alice").status_code == 200
    assert reference_client.post("/login/alice").status_code == 200
    client.get("/take")
    expected = reference.run(reference_client, {})
    assert same(ours.got, expected)


@settings(max_examples=300, deadline=None)
@given(value=values | st.sampled_from([{" t": [1]}, 'a" b', {"x": ' "'}]))
def test_stored_text_is_flasks_tagged_json(value):
    """The stored text of a value is the text Flask's own tagged-JSON serializer
    writes for it (with Flask's default JSON provider), and reads back as what
    Flask reads back."""
    flask_serializer = TaggedJSONSerializer()
    with Flask(__name__).app_context():
        expected = flask_serializer.dumps(value)
        expected_value = flask_serializer.loads(expected)
    text = serialization.dump_value("k", value)
    assert text == expected
    assert same(serialization.load_data({"k": text})[0]["k"], expected_value)


class ComplexJSONProvider(DefaultJSONProvider):
    """An app's own JSON provider, with a form for one more type."""

    @staticmethod
    def default(o: t.Any) -> t.Any:
        if isinstance(o, complex):
            return [o.real, o.imag]
        return DefaultJSONProvider.default(o)


def test_the_apps_json_provider_gives_other_types_their_form(collection):
    """A type only the app's JSON provider knows is stored in the form it gives
    it, as Flask's cookie session does."""

    def cycle(app: Flask) -> t.Any:
        app.json = ComplexJSONProvider(app)

        @app.post("/complex")
        def put_complex() -> str:
            session["c"] = 1 + 2j
            return "ok"

        client = app.test_client()
        assert client.post("/complex").status_code == 200
        return client.get("/get/c").json

    assert cycle(make_app(collection)) == cycle(make_app(None, cookie_session=True))
    assert cycle(make_app(collection)) == {"value": [1.0, 2.0]}


class TagSet(JSONTag):
    """An app's own session type, registered as Flask documents it."""

    __slots__ = ()
    key = " set"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, set)

    def to_json(self, value: t.Any) -> t.Any:
        return sorted(value)

    def to_python(self, value: t.Any) -> t.Any:
        return set(value)


class TagPoint(JSONTag):
    """One whose key does not start with a space, and which claims a plain
    list of two numbers (a tag placed first sees every value)."""

    __slots__ = ()
    key = "point"

    def check(self, value: t.Any) -> bool:
        return type(value) is list and len(value) == 2

    def to_json(self, value: t.Any) -> t.Any:
        return {"x": value[0], "y": value[1]}

    def to_python(self, value: t.Any) -> t.Any:
        return (value["x"], value["y"])


@pytest.mark.parametrize("tag", [TagSet, TagPoint])
@pytest.mark.parametrize("index", [0, None])
def test_the_apps_own_session_tags_work_as_with_flask(collection, tag, index):
    value = {1, 2, 3} if tag is TagSet else [4, 5]
    results = []
    ours = make_app(collection)
    serializer = ours.session_interface.serializer
    tags, order = dict(serializer.tags), list(serializer.order)
    serializer.register(tag, index=index)
    try:
        for app in (ours, make_app(None, cookie_session=True)):

            @app.post("/put")
            def put() -> str:
                session["v"] = value
                session["plain"] = [1, "a"]
                return "ok"

            @app.get("/take")
            def take() -> str:
                return repr((session.get("v"), session.get("plain")))

            client = app.test_client()
            assert client.post("/put").status_code == 200
            results.append(client.get("/take").data)
    finally:
        serializer.tags.clear()
        serializer.tags.update(tags)
        serializer.order[:] = order
    assert results[0] == results[1]
    assert results[0] != repr((None, None)).encode()


def test_replacing_the_serializer_is_a_clear_error(collection):
    # Every stored value goes through Flask's shared session serializer: a
    # replacement, which Flask's cookie session would use, would be ignored.
    app = make_app(collection)
    with pytest.raises(TypeError, match="register the app's own tags"):
        app.session_interface.serializer = TaggedJSONSerializer()
    assert app.session_interface.serializer is session_json_serializer
