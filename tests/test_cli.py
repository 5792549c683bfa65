"""``flask single-session`` commands."""

from __future__ import annotations

import time
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask

from conftest import make_app
from faults import closed_port
from single_session.cli import single_session_cli
from single_session.store import SessionStore


def test_cli_commands(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    runner = app.test_cli_runner()
    phone = app.test_client()
    phone.post("/login/alice", headers={"User-Agent": "Phone/1.0"})
    app.extensions["single_session"].clock.advance(seconds=1)
    app.test_client().post(
        "/login/alice?remember=1", headers={"User-Agent": "Laptop/2.0"}
    )
    app.test_client().post("/set/cart", json=[1])

    result = runner.invoke(args=["single-session", "list", "alice"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert "Laptop/2.0" in lines[0] and "remembered" in lines[0]
    assert "Phone/1.0" in lines[1] and "127.0.0.1" in lines[1]
    assert lines[1].count(" UTC ") == 2  # login, last seen

    result = runner.invoke(args=["single-session", "stats"])
    assert result.output.split("\n")[:4] == [
        "sessions: 3",
        "bound: 2",
        "anonymous: 1",
        "tombstones: 0",
    ]

    result = runner.invoke(args=["single-session", "logout-everywhere", "alice"])
    assert result.exit_code == 0
    assert "Ended 2 session(s) of user 'alice'." in result.output
    assert phone.get("/me").json["user"] is None

    result = runner.invoke(args=["single-session", "stats"])
    assert "tombstones: 2" in result.output and "bound: 0" in result.output

    result = runner.invoke(args=["single-session", "list", "alice"])
    assert "No live sessions for user 'alice'." in result.output


def test_create_indexes(collection):
    app = make_app(collection)
    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 0, result.output
    indexes = collection._inner.index_information()
    assert {
        "single_session_user",
        "single_session_purge",
        "single_session_remember",
    } <= set(indexes)
    assert indexes["single_session_purge"]["expireAfterSeconds"] == 0
    # No unique index but _id's unless "deny" needs one: a collection sharded
    # on a hashed _id could not have it.
    assert not any(info.get("unique") for info in indexes.values())


def test_create_indexes_for_deny(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    result = app.test_cli_runner().invoke(args=["single-session", "create-indexes"])
    assert result.exit_code == 0, result.output
    assert collection._inner.index_information()["single_session_slot"]["unique"]


def test_deny_creates_its_slot_index_before_admitting(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    app.test_client().post("/login/alice")
    assert collection._inner.index_information()["single_session_slot"]["unique"]


def test_help_lists_the_commands(collection):
    app = make_app(collection)
    result = app.test_cli_runner().invoke(args=["single-session", "--help"])
    for command in ("list", "logout-everywhere", "stats", "create-indexes"):
        assert command in result.output


COMMANDS = [
    ["list", "alice"],
    ["logout-everywhere", "alice"],
    ["stats"],
    ["create-indexes"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_a_database_that_is_down_is_one_line_and_exit_status_1(args):
    app = make_app(
        None,
        SINGLE_SESSION_MONGODB_URI=f"mongodb://127.0.0.1:{closed_port()}/down",
        SINGLE_SESSION_TIMEOUT=0.3,
    )
    started = time.monotonic()
    try:
        result = app.test_cli_runner().invoke(args=["single-session", *args])
    finally:
        store = app.extensions["single_session"].store
        if store._collection is not None:
            store._collection.database.client.close()
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(
        "Error: MongoDB could not be reached, or did not answer within"
        " SINGLE_SESSION_TIMEOUT (0.3 s): "
    )
    # stats finds the server with the usual timeout before its long counts.
    assert took < 0.3 * 2 + 0.6, took


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_an_app_without_the_extension_is_one_line(args):
    app = Flask(__name__)
    app.cli.add_command(single_session_cli)
    result = app.test_cli_runner().invoke(args=["single-session", *args])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: The current Flask app is not registered")


def test_a_bug_is_not_hidden_behind_one_line(collection, monkeypatch):
    # Only the library's own errors become one line: anything else keeps its
    # traceback.
    app = make_app(collection)

    def broken(self):
        raise RuntimeError("a bug (test)")

    monkeypatch.setattr(SessionStore, "counts", broken)
    result = app.test_cli_runner().invoke(args=["single-session", "stats"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_the_timeout_is_shown_in_seconds(monkeypatch):
    app = make_app(
        None,
        SINGLE_SESSION_MONGODB_URI=f"mongodb://127.0.0.1:{closed_port()}/down",
        SINGLE_SESSION_TIMEOUT=timedelta(milliseconds=300),
    )
    try:
        result = app.test_cli_runner().invoke(args=["single-session", "list", "a"])
    finally:
        store = app.extensions["single_session"].store
        if store._collection is not None:
            store._collection.database.client.close()
    assert "SINGLE_SESSION_TIMEOUT (0.3 s)" in result.output


def test_list_shows_what_a_client_sent_escaped(collection):
    # Any client sets its own User-Agent: an escape sequence (or a line break,
    # in a document written by other means) must not reach the operator's
    # terminal as such.
    app = make_app(collection)
    agent = "Mozilla/5.0\x1b[2J\x1b[31mFAKE\x1b[0m"
    app.test_client().post("/login/alice", headers={"User-Agent": agent})
    collection._inner.update_one(
        {"user_id": "alice"}, {"$set": {"device.ip": "10.0.0.1\nfake line"}}
    )
    result = app.test_cli_runner().invoke(args=["single-session", "list", "alice"])
    (line,) = result.output.splitlines()
    assert "\x1b" not in line
    assert "ip 10.0.0.1\\nfake line" in line
    assert line.endswith("Mozilla/5.0\\x1b[2J\\x1b[31mFAKE\\x1b[0m")


def test_stats_add_up_over_a_malformed_tombstone(collection):
    app = make_app(collection)
    app.test_client().post("/login/alice")
    app.test_client().post("/set/cart", json=[1])
    tombstone = {
        "_id": "malformed",
        "user_id": "bob",  # a tombstone the library wrote has none
        "revoked": {"reason": "revoked", "at": datetime.now(timezone.utc)},
        "purge_at": datetime.now(timezone.utc) + timedelta(days=1),
    }
    collection._inner.insert_one(tombstone)
    result = app.test_cli_runner().invoke(args=["single-session", "stats"])
    assert result.output.split("\n")[:4] == [
        "sessions: 2",
        "bound: 1",
        "anonymous: 1",
        "tombstones: 1",
    ]
