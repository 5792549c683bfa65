"""Hostile cookies: whatever a client sends as its session or remember-me cookie,
the answer is a 2xx/4xx, never a 500, and nothing reaches the database before
the signature checks out (promise 9)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import example
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from itsdangerous import Signer

from single_session.tokens import hash_id
from single_session.tokens import new_id

# The app and collection fixtures keep no state between examples here: a
# request with a bad cookie writes nothing (that is what is tested).
fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

INJECTIONS = [
    '{"$ne": null}',
    '{"$gt": ""}',
    '{"$where": "sleep(10000)"}',
    "[]",
    "null",
    "$ne",
    "a" * 43 + "." + "b" * 43,
    "' OR 1=1 --",
    "%00",
    "..",
    "session=other",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)

cookie_values = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0xFF)),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.sampled_from(INJECTIONS),
    json_values.map(json.dumps),
    # Shaped like a signed id (43 + "." + 43 URL-safe characters), wrong signature.
    st.from_regex(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}", fullmatch=True),
).filter(lambda v: "\r" not in v and "\n" not in v)

READ_ONLY = ["/me", "/private", "/plain", "/get/cart"]


def send(app, path, header, method="GET"):
    client = app.test_client(use_cookies=False)
    return client.open(path, method=method, headers={"Cookie": header})


def deleted(response, name):
    return any(
        h.startswith(name + "=;") and "Max-Age=0" in h
        for h in response.headers.getlist("Set-Cookie")
    )


@fuzz
@given(value=cookie_values, path=st.sampled_from(READ_ONLY))
@example(value="x" * 100_000, path="/me")
@example(value="é" * 8192, path="/private")
@example(value="a\x00b", path="/me")
@example(value="", path="/me")
def test_any_session_cookie_is_refused_without_a_query(app, collection, value, path):
    collection.reset()
    header = f"session={value}"
    r = send(app, path, header)
    assert r.status_code < 500
    assert collection.log == []
    # Nor is it adopted or deleted: a request that stores nothing leaves a
    # cookie it cannot verify as it is, as Flask's cookie session does (it may
    # be another app's, or signed with a key this worker does not know yet).
    assert not any(h.startswith("session=") for h in r.headers.getlist("Set-Cookie"))


@fuzz
@given(value=cookie_values, path=st.sampled_from(READ_ONLY))
@example(value="alice|" + "0" * 128, path="/private")  # Flask-Login's own format
def test_any_remember_cookie_is_refused_without_a_query(app, collection, value, path):
    collection.reset()
    r = send(app, path, f"remember_token={value}")
    assert r.status_code < 500
    assert collection.log == []
    if path == "/private":
        assert r.status_code == 401


@fuzz
@given(session=cookie_values, remember=cookie_values)
@example(session="", remember="|\x80")  # shaped as Flask-Login's, not ASCII
def test_both_cookies_at_once_cost_nothing(app, collection, session, remember):
    collection.reset()
    r = send(app, "/me", f"session={session}; remember_token={remember}")
    assert r.status_code == 200
    assert r.json["user"] is None
    assert collection.log == []


def sign(app, payload, salt="single_session.session"):
    signer = Signer(app.secret_key, salt=salt, digest_method=hashlib.sha256)
    return signer.sign(payload).decode("latin-1")


@fuzz
@given(payload=cookie_values.filter(lambda v: v.isascii()))
@example(payload='{"$ne": null}')
@example(payload=new_id() + "." + new_id())
def test_a_validly_signed_payload_that_is_not_an_id_costs_no_query(
    app, collection, payload
):
    """Even with the right key, only a well-formed id reaches the database, and
    then only as its hash."""
    collection.reset()
    r = send(app, "/me", f"session={sign(app, payload)}")
    assert r.status_code == 200
    assert r.json["user"] is None
    assert collection.log == []


def test_a_well_formed_unknown_id_is_looked_up_by_its_hash_only(app, collection):
    sid = new_id()
    r = send(app, "/me", f"session={sign(app, sid)}")
    assert r.status_code == 200
    filters = [query for _, query in collection.log]
    assert filters and all(query["_id"] == hash_id(sid) for query in filters)
    assert deleted(r, "session")


def test_writes_with_a_bad_cookie_start_a_new_session(app, collection):
    """A garbage cookie is never adopted as an id: the session gets a new one."""
    from conftest import stored

    client = app.test_client(use_cookies=False)
    r = client.post("/set/cart", json=[1], headers={"Cookie": 'session={"$ne": null}'})
    assert r.status_code == 200
    (doc,) = stored(collection)
    (header,) = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("session=")]
    sid = header.split("=", 1)[1].split(";")[0].rsplit(".", 1)[0]
    assert doc["_id"] == hash_id(sid)
