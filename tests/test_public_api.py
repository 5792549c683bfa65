"""The public API as the docs promise it: told once per device, ids of any type,
a refused login that leaves the device's own login, sessions_of and revoke on
the current session."""

from __future__ import annotations

import typing as t
from datetime import timedelta

import pytest
from flask import Flask
from flask import get_flashed_messages
from flask import jsonify
from flask import session
from flask_login import current_user
from flask_login import login_user
from flask_login import LoginManager
from flask_login import UserMixin

import single_session
from conftest import make_app
from conftest import Recorder
from conftest import stored
from conftest import USERS
from single_session import LoginDenied
from single_session import session_revoked


def who(client: t.Any) -> t.Any:
    return client.get("/me").json["user"]


def _with_messages(app: t.Any) -> t.Any:
    @app.get("/messages")
    def messages() -> t.Any:
        reason = single_session.revocation()
        return {
            "messages": get_flashed_messages(),
            "reason": reason and reason.reason,
            "user": current_user.get_id(),
        }

    return app


def test_a_remembered_device_is_told_once_when_its_first_request_skips_the_user(
    collection: t.Any,
) -> None:
    app = _with_messages(make_app(collection))
    revoked = Recorder(session_revoked, app)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice?remember=1")
    laptop.post("/login/alice")  # evicts the phone
    assert phone.get("/plain").status_code == 200  # never asks for the user
    assert phone.get_cookie("remember_token") is None  # its remember-me went too
    told = phone.get("/messages").json
    assert told["user"] is None
    assert len(told["messages"]) == 1
    assert [call["reason"] for call in revoked.calls] == ["signed_in_elsewhere"]


class Member(UserMixin):
    def __init__(self, number: int) -> None:
        self.id = number
        self.is_admin = False

    def get_id(self) -> int:  # type: ignore[override]
        return self.id  # an int, as many apps return


def test_logout_others_with_an_int_id_and_a_limit_per_user(collection: t.Any) -> None:
    members = {1: Member(1)}
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        TESTING=True,
        SINGLE_SESSION_MAX_SESSIONS=lambda user: None if user.is_admin else 3,
    )
    LoginManager(app).user_loader(lambda user_id: members.get(int(user_id)))
    extension = single_session.SingleSession(app, collection=collection)

    @app.post("/login")
    def login() -> t.Any:
        login_user(members[1])
        return "ok"

    @app.post("/others")
    def others() -> t.Any:
        return jsonify(ended=extension.logout_others(current_user.get_id()))

    @app.get("/me")
    def me() -> t.Any:
        return jsonify(user=current_user.get_id())

    @app.post("/others-of-a-deleted-user")
    def others_of_a_deleted_user() -> t.Any:
        # The account is deleted while a device is signed in to it: its other
        # sessions end all the same; this one keeps its id (no user to run
        # the policy for).
        user_id = current_user.get_id()
        del members[1]
        return jsonify(ended=extension.logout_others(user_id))

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login")
    laptop.post("/login")
    response = laptop.post("/others")
    assert response.status_code == 200 and response.json == {"ended": 1}
    assert who(laptop) == 1
    assert who(phone) is None

    phone.post("/login")
    response = phone.post("/others-of-a-deleted-user")
    assert response.status_code == 200 and response.json == {"ended": 1}
    assert (
        len(list(collection.find({"user_id": "1", "revoked": {"$exists": False}}))) == 1
    )


class TokenUser(UserMixin):
    """A user whose session holds an auth token, not its id
    (``LoginManager.id_attribute``): a password change changes the token."""

    def __init__(self, name: str, token: str) -> None:
        self.id = name
        self.token = token

    def get_auth_token(self) -> str:
        return self.token


def test_the_api_finds_a_users_sessions_by_the_login_managers_id_attribute(
    collection: t.Any,
) -> None:
    alice = TokenUser("alice", "alice-v1")
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True, SINGLE_SESSION_MAX_SESSIONS=None)
    login_manager = LoginManager(app)
    login_manager.id_attribute = "get_auth_token"
    login_manager.user_loader(lambda token: alice if token == alice.token else None)
    extension = single_session.SingleSession(app, collection=collection)

    @app.post("/login")
    def login() -> t.Any:
        login_user(alice)
        return "ok"

    @app.get("/me")
    def me() -> t.Any:
        return jsonify(user=current_user.get_id())

    @app.get("/devices")
    def devices() -> t.Any:
        return jsonify(count=len(extension.sessions_of(current_user)))

    @app.post("/others")
    def others() -> t.Any:
        return jsonify(ended=extension.logout_others(current_user))

    @app.post("/everywhere")
    def everywhere() -> t.Any:
        return jsonify(ended=single_session.logout_everywhere(current_user))

    phone, laptop, tablet = (app.test_client() for _ in range(3))
    for device in (phone, laptop, tablet):
        device.post("/login")
    assert laptop.get("/devices").json == {"count": 3}
    assert laptop.post("/others").json == {"ended": 2}
    assert who(phone) is None and who(tablet) is None
    assert who(laptop) == "alice"

    phone.post("/login")
    assert phone.post("/everywhere").json == {"ended": 2}
    assert who(phone) is None and who(laptop) is None


@pytest.mark.parametrize("cleared_first", [False, True])
def test_a_refused_login_leaves_the_device_anonymous_with_its_data(
    collection: t.Any, cleared_first: bool
) -> None:
    # The device was signed in as alice; login_user(bob) overwrote her login
    # before it was refused, and what the request did to it before (a
    # session.clear() against fixation, say) cannot be told apart: it ends.
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")

    @app.post("/switch-to-bob")
    def switch_to_bob() -> t.Any:
        if cleared_first:
            session.clear()
        try:
            login_user(USERS["bob"])
        except LoginDenied:
            return {"user": current_user.get_id()}, 409
        return {"user": current_user.get_id()}

    app.test_client().post("/login/bob")  # bob's one place is taken
    device = app.test_client()
    device.post("/login/alice")
    device.post("/set/cart", json=["pen"])
    response = device.post("/switch-to-bob")
    assert response.status_code == 409
    assert response.json["user"] is None
    assert who(device) is None
    assert stored(collection, user_id="alice") == []
    expected = None if cleared_first else ["pen"]
    assert device.get("/get/cart").json == {"value": expected}


def test_sessions_of_marks_the_current_session_in_a_restoring_request(
    collection: t.Any,
) -> None:
    app = make_app(collection)
    extension = app.extensions["test_ext"]

    @app.get("/devices")
    def devices() -> t.Any:
        return {"current": [s.current for s in extension.sessions_of(current_user)]}

    device = app.test_client()
    device.post("/login/alice?remember=1")
    device.delete_cookie("session")  # the browser restarts
    assert device.get("/devices").json == {"current": [True]}


def test_sessions_of_says_remembered_only_while_the_remember_me_lasts(
    collection: t.Any,
) -> None:
    app = make_app(collection, REMEMBER_COOKIE_DURATION=timedelta(hours=1))
    extension = app.extensions["test_ext"]
    clock = app.extensions["single_session"].clock
    device = app.test_client()
    device.post("/login/alice?remember=1")
    with app.app_context():
        assert [s.remembered for s in extension.sessions_of("alice")] == [True]
    clock.advance(hours=2)
    device.get("/me")  # the session itself lives on
    with app.app_context():
        assert [s.remembered for s in extension.sessions_of("alice")] == [False]


def test_revoking_the_current_session_logs_the_request_out(collection: t.Any) -> None:
    app = _with_messages(make_app(collection))
    extension = app.extensions["test_ext"]

    @app.post("/sign-out-this-device")
    def sign_out_this_device() -> t.Any:
        (mine,) = [s for s in extension.sessions_of(current_user) if s.current]
        ended = extension.revoke(current_user, mine.handle)
        return {"ended": ended, "user": current_user.get_id()}

    device = app.test_client()
    device.post("/login/alice")
    assert device.post("/sign-out-this-device").json == {"ended": True, "user": None}
    # It knew: no "signed out from another device" on its next page.
    assert device.get("/messages").json == {
        "messages": [],
        "reason": None,
        "user": None,
    }
