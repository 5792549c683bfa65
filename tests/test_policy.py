"""Logins bind sessions to users; the per-user limit (promises 4 and 5)."""

from __future__ import annotations

import pytest
from flask import flash
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
from conftest import stored
from conftest import USERS
from single_session import logout_everywhere


def devices(app, n):
    return [app.test_client() for _ in range(n)]


def who(client):
    return client.get("/me").json["user"]


def session_cookie(client):
    cookie = client.get_cookie("session")
    return None if cookie is None else cookie.value


def live(collection, user):
    return [d for d in stored(collection, user_id=user)]


def test_newest_login_wins(app, collection):
    first, second = devices(app, 2)
    assert first.post("/login/alice").json == {"user": "alice"}
    assert second.post("/login/alice").json == {"user": "alice"}
    assert who(second) == "alice"
    assert who(first) is None
    assert len(live(collection, "alice")) == 1


def test_other_users_are_untouched(app, collection):
    alice1, bob, alice2 = devices(app, 3)
    alice1.post("/login/alice")
    bob.post("/login/bob")
    alice2.post("/login/alice")
    assert who(bob) == "bob"
    assert who(alice1) is None


def test_login_gets_a_fresh_id_and_keeps_the_anonymous_data(app, collection):
    client = app.test_client()
    client.post("/set/cart", json=["book", "pen"])
    anonymous_id = session_cookie(client)
    client.post("/login/alice")
    assert session_cookie(client) != anonymous_id
    assert client.get("/get/cart").json == {"value": ["book", "pen"]}
    # The anonymous session is gone, not left behind.
    (doc,) = stored(collection)
    assert doc["user_id"] == "alice"
    # And the old id does not work any more.
    stale = app.test_client()
    stale.set_cookie("session", anonymous_id)
    assert stale.get("/get/cart").json == {"value": None}


def test_changes_made_after_login_in_the_same_view_are_kept(app):
    @app.post("/login-and-fill")
    def login_and_fill():
        session["cart"] = []
        from flask_login import login_user

        login_user(USERS["alice"])
        session["cart"].append("pen")  # in place...
        session.modified = True  # ...and said so, as Flask asks
        return "ok"

    client = app.test_client()
    client.post("/login-and-fill")
    assert who(client) == "alice"
    assert client.get("/get/cart").json == {"value": ["pen"]}


def test_logging_in_again_on_the_same_device_rotates_the_id(app, collection):
    client = app.test_client()
    client.post("/login/alice")
    first_id = session_cookie(client)
    client.post("/login/alice")
    assert session_cookie(client) != first_id
    assert who(client) == "alice"
    assert len(stored(collection)) == 1


def test_switching_user_on_one_device(app, collection):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/login/bob")
    assert who(client) == "bob"
    assert [d["user_id"] for d in stored(collection)] == ["bob"]


def test_limit_of_two(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=2)
    one, two, three = devices(app, 3)
    for device in (one, two, three):
        device.post("/login/alice")
    assert [who(d) for d in (one, two, three)] == [None, "alice", "alice"]


def test_no_limit(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    clients = devices(app, 5)
    for device in clients:
        device.post("/login/alice")
    assert all(who(d) == "alice" for d in clients)


def test_per_user_limit_callable(collection):
    app = make_app(
        collection,
        SINGLE_SESSION_MAX_SESSIONS=lambda user: None if user.id == "admin" else 1,
    )
    admins = devices(app, 3)
    for device in admins:
        device.post("/login/admin")
    alices = devices(app, 2)
    for device in alices:
        device.post("/login/alice")
    assert all(who(d) == "admin" for d in admins)
    assert [who(d) for d in alices] == [None, "alice"]


def test_deny_refuses_the_new_login_and_keeps_its_data(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    first, second = devices(app, 2)
    first.post("/login/alice")
    second.post("/set/cart", json=["pen"])
    second_id = session_cookie(second)
    response = second.post("/login/alice")
    assert response.status_code == 409
    assert "already has 1 active session" in response.json["denied"]
    # The view saw an anonymous user after the refusal.
    assert response.json["user"] is None
    assert who(second) is None
    assert second.get("/get/cart").json == {"value": ["pen"]}
    assert session_cookie(second) == second_id
    # The existing session is untouched.
    assert who(first) == "alice"
    assert len(live(collection, "alice")) == 1


def test_deny_admits_again_after_logout(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    first, second = devices(app, 2)
    first.post("/login/alice")
    assert second.post("/login/alice").status_code == 409
    first.post("/logout")
    assert second.post("/login/alice").status_code == 200
    assert who(second) == "alice"


def test_deny_admits_again_after_the_session_expired(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    clock = app.extensions["single_session"].clock
    first, second = devices(app, 2)
    first.post("/login/alice")
    clock.advance(days=32)
    assert second.post("/login/alice").status_code == 200
    assert who(first) is None


def test_deny_relogin_on_the_same_device_is_allowed(collection):
    app = make_app(collection, SINGLE_SESSION_ON_LIMIT="deny")
    client = app.test_client()
    client.post("/login/alice")
    assert client.post("/login/alice").status_code == 200
    assert who(client) == "alice"


def test_deny_with_two_slots(collection):
    app = make_app(
        collection, SINGLE_SESSION_ON_LIMIT="deny", SINGLE_SESSION_MAX_SESSIONS=2
    )
    one, two, three = devices(app, 3)
    assert one.post("/login/alice").status_code == 200
    assert two.post("/login/alice").status_code == 200
    assert three.post("/login/alice").status_code == 409
    assert who(one) == who(two) == "alice"


def test_logout_deletes_the_session_and_clears_the_cookie(app, collection):
    client = app.test_client()
    client.post("/login/alice")
    response = client.post("/logout")
    assert stored(collection) == []
    assert any(
        h.startswith("session=") and "Expires=Thu, 01 Jan 1970" in h
        for h in response.headers.getlist("Set-Cookie")
    )
    assert who(client) is None


def test_logout_keeps_other_data_unbound_under_a_new_id(app, collection):
    client = app.test_client()
    client.post("/login/alice")
    client.post("/set/theme", json="dark")
    bound_id = session_cookie(client)
    client.post("/logout")
    assert session_cookie(client) != bound_id
    assert client.get("/get/theme").json == {"value": "dark"}
    (doc,) = stored(collection)
    assert "user_id" not in doc


def test_logout_everywhere_spares_other_users(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    alices = devices(app, 3)
    bob = app.test_client()
    for device in alices:
        device.post("/login/alice")
    bob.post("/login/bob")
    with app.app_context():
        assert logout_everywhere(USERS["alice"]) == 3
        assert logout_everywhere("alice") == 0
    assert [who(d) for d in alices] == [None, None, None]
    assert who(bob) == "bob"


def test_logout_everywhere_from_a_view(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)

    @app.post("/everywhere")
    def everywhere():
        from flask_login import logout_user

        count = logout_everywhere(current_user)
        logout_user()
        return {"ended": count}

    phone, laptop = devices(app, 2)
    phone.post("/login/alice")
    laptop.post("/login/alice")
    assert laptop.post("/everywhere").json == {"ended": 2}
    assert who(phone) is None
    assert who(laptop) is None


def test_logout_everywhere_logs_out_the_calling_request_too(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)

    @app.post("/everywhere-only")
    def everywhere_only():
        count = logout_everywhere(current_user)
        flash(f"Signed out of {count} sessions.")
        return {"ended": count, "user": current_user.get_id()}

    @app.get("/messages")
    def messages():
        return {"messages": get_flashed_messages()}

    phone, laptop = devices(app, 2)
    phone.post("/login/alice")
    laptop.post("/set/cart", json=["pen"])
    laptop.post("/login/alice")
    assert laptop.post("/everywhere-only").json == {"ended": 2, "user": None}
    assert who(laptop) is None
    assert laptop.get("/messages").json == {"messages": ["Signed out of 2 sessions."]}
    assert laptop.get("/get/cart").json == {"value": ["pen"]}
    assert who(phone) is None
    assert stored(collection, user_id="alice") == []


def test_logout_others_keeps_this_device_with_a_fresh_id(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)

    @app.post("/password-changed")
    def password_changed():
        return {"ended": app.extensions["test_ext"].logout_others(current_user)}

    phone, tablet, laptop = devices(app, 3)
    for device in (phone, tablet, laptop):
        device.post("/login/alice")
    laptop.post("/set/draft", json="hello")
    before = session_cookie(laptop)
    assert laptop.post("/password-changed").json == {"ended": 2}
    assert session_cookie(laptop) != before
    assert who(laptop) == "alice"
    assert laptop.get("/get/draft").json == {"value": "hello"}
    assert who(phone) is None and who(tablet) is None
    old = app.test_client()
    old.set_cookie("session", before)
    assert who(old) is None


def test_sessions_of_and_revoke_one_device(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]

    @app.get("/devices")
    def list_devices():
        return {
            "sessions": [
                {
                    "handle": s.handle,
                    "current": s.current,
                    "ua": s.user_agent,
                    "ip": s.ip,
                }
                for s in ext.sessions_of(current_user)
            ]
        }

    @app.post("/revoke/<handle>")
    def revoke(handle):
        return {"ok": ext.revoke(current_user, handle)}

    phone = app.test_client()
    phone.post("/login/alice", headers={"User-Agent": "Phone/1.0"})
    app.extensions["single_session"].clock.advance(seconds=1)
    laptop = app.test_client()
    laptop.post("/login/alice", headers={"User-Agent": "Laptop/2.0"})
    sessions = laptop.get("/devices").json["sessions"]
    assert [s["ua"] for s in sessions] == ["Laptop/2.0", "Phone/1.0"]
    assert [s["current"] for s in sessions] == [True, False]
    assert all(s["ip"] == "127.0.0.1" for s in sessions)
    phone_handle = sessions[1]["handle"]
    # The handle is not the session id, nor its hash.
    assert phone_handle not in session_cookie(phone)
    assert all(phone_handle != d["_id"] for d in stored(collection))
    assert laptop.post(f"/revoke/{phone_handle}").json == {"ok": True}
    assert laptop.post(f"/revoke/{phone_handle}").json == {"ok": False}
    assert who(phone) is None
    assert who(laptop) == "alice"


@pytest.mark.parametrize("move", ["restore", "logout_others", "login_again"])
def test_a_device_keeps_its_handle_when_its_session_gets_a_new_id(collection, move):
    # A devices page listed the phone; then its session got a new id (its
    # browser restarted and restored the login, it logged out the others, or
    # it signed in again). "Sign out" on that list still reaches it.
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]

    @app.post("/logout-others")
    def logout_others():
        return {"ended": ext.logout_others(current_user)}

    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice?remember=1")
    laptop.post("/login/alice")
    with app.app_context():
        (listed,) = [s for s in ext.sessions_of("alice") if s.remembered]
    before = session_cookie(phone)
    if move == "restore":
        phone.delete_cookie("session")
        assert who(phone) == "alice"
    elif move == "logout_others":
        assert phone.post("/logout-others").json == {"ended": 1}
    else:
        assert phone.post("/login/alice?remember=1").status_code == 200
    assert session_cookie(phone) != before
    with app.app_context():
        handles = [s.handle for s in ext.sessions_of("alice") if s.remembered]
        assert handles == [listed.handle]
        assert ext.revoke("alice", listed.handle) is True
    assert who(phone) is None
    phone.delete_cookie("session")
    assert who(phone) is None  # its remember-me went too


def test_revoke_cannot_reach_another_users_session(collection):
    app = make_app(collection)
    ext = app.extensions["test_ext"]
    bob = app.test_client()
    bob.post("/login/bob")
    with app.app_context():
        (bob_session,) = ext.sessions_of("bob")
        assert ext.revoke("alice", bob_session.handle) is False
    assert who(bob) == "bob"


def test_bounded_operations_whatever_the_number_of_sessions(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=None)
    ext = app.extensions["test_ext"]
    for _ in range(30):
        app.test_client().post("/login/alice")
    with app.app_context():
        collection.reset()
        ext.sessions_of("alice")
        assert collection.ops() == ["find"]
        collection.reset()
        assert logout_everywhere("alice") == 30
        assert collection.ops() == ["update_many"]
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = 1
    for _ in range(30):
        app.test_client().post("/login/bob")
    app.config["SINGLE_SESSION_MAX_SESSIONS"] = None
    collection.reset()
    app.test_client().post("/login/bob")
    assert sorted(collection.ops()) == sorted(["insert_one"])


def test_module_function_needs_the_extension():
    from flask import Flask

    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        logout_everywhere("alice")


def _with_set_user(app):
    """A page that logs in by writing Flask-Login's key itself, as app code or
    session_transaction() may (not through login_user())."""

    @app.post("/set-user/<name>")
    def set_user(name):
        session["_user_id"] = name
        return "ok"

    return app


def test_login_outside_login_user_goes_through_the_policy(app, collection):
    _with_set_user(app)
    first, second = devices(app, 2)
    first.post("/login/alice")
    second.post("/set/cart", json=["pen"])
    second.post("/set-user/alice")
    assert who(second) == "alice"
    assert who(first) is None
    assert second.get("/get/cart").json == {"value": ["pen"]}
    (doc,) = stored(collection, user_id="alice")
    assert doc["data"]["_user_id"] == '"alice"'


def test_switching_the_user_outside_login_user_binds_the_new_login(app, collection):
    # An admin's "switch user" written straight into Flask-Login's key, on a
    # device already logged in as someone else: the new login is bound in
    # the same request, so logout_everywhere reaches it at once.
    _with_set_user(app)
    laptop = app.test_client()
    laptop.post("/login/alice")
    laptop.post("/set/cart", json=["pen"])
    laptop.post("/set-user/bob")
    assert stored(collection, user_id="alice") == []
    (doc,) = stored(collection, user_id="bob")
    assert doc["data"]["_user_id"] == '"bob"'
    assert all(d.get("user_id") is not None for d in stored(collection))
    with app.app_context():
        assert [s.handle for s in app.extensions["test_ext"].sessions_of("bob")] == [
            doc["handle"]
        ]
        assert logout_everywhere("bob") == 1
    assert who(laptop) is None


def test_switching_to_a_user_with_no_place_left_is_dropped(collection, caplog):
    app = _with_set_user(make_app(collection, SINGLE_SESSION_ON_LIMIT="deny"))
    phone = app.test_client()
    phone.post("/login/bob")
    laptop = app.test_client()
    laptop.post("/login/alice")
    laptop.post("/set-user/bob")
    assert "login_user" in caplog.text
    assert who(laptop) is None
    assert who(phone) == "bob"
    assert len(stored(collection, user_id="bob")) == 1
    assert stored(collection, user_id="alice") == []


def test_unknown_or_refused_login_outside_login_user_is_dropped(collection, caplog):
    app = _with_set_user(make_app(collection, SINGLE_SESSION_ON_LIMIT="deny"))
    ghost = app.test_client()
    ghost.post("/set-user/nobody")
    assert who(ghost) is None
    first, second = devices(app, 2)
    first.post("/login/alice")
    second.post("/set-user/alice")
    assert who(second) is None
    assert who(first) == "alice"
    assert "login_user" in caplog.text
    assert len(stored(collection, user_id="alice")) == 1


def test_flask_logins_test_client_works(collection):
    from flask_login import FlaskLoginClient

    app = make_app(collection)
    app.test_client_class = FlaskLoginClient
    phone = app.test_client(user=USERS["alice"])
    assert who(phone) == "alice"
    laptop = app.test_client(user=USERS["alice"])
    assert who(laptop) == "alice"
    assert who(phone) is None  # the policy applied to it too


def test_strong_session_protection_keeps_data_unbound(collection):
    app = make_app(collection)
    app.login_manager.session_protection = "strong"
    client = app.test_client()
    client.post("/login/alice", headers={"User-Agent": "A"})
    client.post("/set/theme", json="dark", headers={"User-Agent": "A"})
    bound_id = session_cookie(client)
    # Another browser fingerprint: Flask-Login drops the login.
    assert client.get("/me", headers={"User-Agent": "B"}).json["user"] is None
    assert session_cookie(client) != bound_id
    assert client.get("/get/theme", headers={"User-Agent": "B"}).json == {
        "value": "dark"
    }
    assert all("user_id" not in d for d in stored(collection))


def test_exports():
    assert {
        "SingleSession",
        "logout_everywhere",
        "LoginDenied",
        "SessionStoreUnavailable",
    } <= set(single_session.__all__)


def test_integer_user_ids(raw_collection):
    # Flask-Login asks get_id() for a str, but many apps return the database's
    # int: Flask-Login keeps it as it is, and so must the session.
    class Member(UserMixin):
        def __init__(self, number: int) -> None:
            self.id = number

        def get_id(self) -> int:  # type: ignore[override]
            return self.id

    members = {1: Member(1), 2: Member(2)}
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test secret", TESTING=True)
    login_manager = LoginManager(app)
    login_manager.user_loader(lambda user_id: members.get(int(user_id)))
    ext = single_session.SingleSession(app, collection=raw_collection)

    @app.post("/login/<int:number>")
    def login(number):
        login_user(members[number])
        session["cart"] = ["pen"]
        return jsonify(user=current_user.get_id())

    @app.post("/write")
    def write():
        session["a"] = 1
        session.modified = True
        session["b"] = 2
        return jsonify(user=current_user.get_id())

    @app.get("/me")
    def me():
        return jsonify(
            user=current_user.get_id() if current_user.is_authenticated else None
        )

    phone, laptop = app.test_client(), app.test_client()
    assert phone.post("/login/1").json == {"user": 1}
    assert phone.get("/me").json == {"user": 1}
    assert phone.post("/write").json == {"user": 1}
    assert phone.get("/me").json == {"user": 1}
    (document,) = stored(raw_collection, user_id="1")
    assert document["data"]["_user_id"] == "1"  # tagged JSON of the int 1

    # The policy and logout_everywhere see the same user.
    assert laptop.post("/login/1").json == {"user": 1}
    assert phone.get("/me").json == {"user": None}
    assert laptop.get("/me").json == {"user": 1}
    with app.app_context():
        assert ext.logout_everywhere(members[1]) == 1
    assert laptop.get("/me").json == {"user": None}

    # A login written by the test client's session_transaction, as an int.
    with laptop.session_transaction() as sess:
        sess["_user_id"] = 2
        sess["_fresh"] = True
    assert laptop.get("/me").json == {"user": 2}
    assert laptop.get("/me").json == {"user": 2}
