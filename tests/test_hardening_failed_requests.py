"""Requests that fail, or stream, after a login: the login lasts no longer than
the request that made it if its cookie never reaches the browser (as with
Flask's cookie session), so it holds no place under the policy."""

from __future__ import annotations

import logging
import threading
import typing as t

import pytest
from flask import copy_current_request_context
from flask import got_request_exception
from flask import request
from flask import request_finished
from flask import Response
from flask import session
from flask import stream_with_context
from flask_login import current_user
from flask_login import login_user
from pymongo.errors import OperationFailure
from werkzeug.test import EnvironBuilder

from conftest import make_app
from conftest import Recorder
from conftest import stored
from conftest import USERS
from faults import FaultyCollection
from single_session import logout_everywhere
from single_session import session_revoked
from test_hardening_moves import _in_thread
from test_hardening_moves import remembered


def _production(app: t.Any) -> t.Any:
    # As in production: an unhandled error becomes a 500 page, not a traceback
    # in the test.
    app.config["TESTING"] = False
    return app


@pytest.fixture(params=["single_session", "cookie_session"])
def backend(request: t.Any) -> str:
    return str(request.param)


def _app(collection: t.Any, backend: str, **config: t.Any) -> t.Any:
    app = _production(
        make_app(collection, cookie_session=backend == "cookie_session", **config)
    )

    @app.post("/login-then-bad-value")
    def login_then_bad_value() -> str:
        login_user(USERS["alice"])
        session["pref"] = object()  # an app bug: cannot be stored
        return "ok"

    @app.post("/login-then-crash")
    def login_then_crash() -> str:
        login_user(USERS["alice"])
        raise RuntimeError("the view fails after the login (test)")

    @app.after_request
    def failing_after_request(response: t.Any) -> t.Any:
        if request.args.get("fail"):
            raise RuntimeError("an after_request function fails (test)")
        return response

    @app.post("/stream-login")
    def stream_login() -> t.Any:
        def body() -> t.Iterator[str]:
            yield "a"
            login_user(USERS["alice"])
            yield "b"

        return stream_with_context(body())

    return app


@pytest.mark.parametrize(
    "failing, kept",
    [
        # The session cannot be saved, or an after_request function fails
        # before it is: the response carries no cookie, the login is lost.
        ("/login-then-bad-value", False),
        ("/login/alice?fail=1", False),
        # The view fails after the login: Flask still saves the session, and
        # the 500 page carries the login's cookie.
        ("/login-then-crash", True),
    ],
)
def test_a_login_whose_request_fails_is_held_or_holds_no_place(
    raw_collection: t.Any, backend: str, failing: str, kept: bool
) -> None:
    app = _app(raw_collection, backend, SINGLE_SESSION_ON_LIMIT="deny")
    device, other = app.test_client(), app.test_client()
    assert device.post(failing).status_code == 500
    assert device.get("/me").json["user"] == ("alice" if kept else None)
    if backend == "cookie_session":
        return  # (no policy: the comparison is the device's login above)
    # Under "deny" a login nobody holds would take the user's only place.
    assert other.post("/login/alice").status_code == (409 if kept else 200)
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_login_whose_request_fails_in_testing_holds_no_place(
    raw_collection: t.Any,
) -> None:
    # With TESTING (or DEBUG), the exception reaches the caller and no response
    # is made at all.
    app = _app(raw_collection, "single_session", SINGLE_SESSION_ON_LIMIT="deny")
    app.config["TESTING"] = True
    with pytest.raises(RuntimeError):
        app.test_client().post("/login-then-crash")
    assert stored(raw_collection, user_id="alice") == []
    assert app.test_client().post("/login/alice").status_code == 200


def test_a_login_in_a_streamed_body_is_not_stored(
    raw_collection: t.Any, backend: str, caplog: t.Any
) -> None:
    app = _app(raw_collection, backend, SINGLE_SESSION_ON_LIMIT="deny")
    device = app.test_client()
    with caplog.at_level(logging.WARNING, logger="single_session"):
        assert device.post("/stream-login").data == b"ab"
    assert device.get("/me").json["user"] is None
    assert app.test_client().post("/login/alice").status_code == 200
    if backend == "single_session":
        assert len(stored(raw_collection, user_id="alice")) == 1
        assert "streamed body" in caplog.text


def test_a_first_write_whose_cookie_never_went_out_is_taken_back(
    raw_collection: t.Any,
) -> None:
    app = _app(raw_collection, "single_session")

    def fails_late(response: t.Any) -> t.Any:
        if request.args.get("late"):
            raise RuntimeError("fails after the library stored the session (test)")
        return response

    # Runs after the library's own after_request function, which has stored the
    # new session by then (Flask runs them last registered first).
    app.after_request_funcs.setdefault(None, []).insert(0, fails_late)
    assert app.test_client().post("/set/cart?late=1", json=[1]).status_code == 500
    assert stored(raw_collection) == []
    assert app.test_client().post("/login/alice?late=1").status_code == 500
    assert stored(raw_collection) == []


def test_a_failed_request_keeps_the_login_it_came_with(raw_collection: t.Any) -> None:
    # Only what the failing request stored under a new id is taken back.
    app = _app(raw_collection, "single_session")
    device = app.test_client()
    device.post("/login/alice")
    assert device.post("/set/cart?fail=1", json=[1]).status_code == 500
    assert device.get("/me").json["user"] == "alice"
    with app.app_context():
        assert logout_everywhere("alice") == 1


def _in_a_thread_with_a_copy_of_the_request() -> None:
    @copy_current_request_context
    def job() -> None:
        pass  # a welcome mail, say

    worker = threading.Thread(target=job)
    worker.start()
    worker.join(10)


def test_a_thread_given_a_copy_of_the_request_does_not_take_its_login_back(
    raw_collection: t.Any,
) -> None:
    app = make_app(raw_collection)

    @app.post("/login-and-mail")
    def login_and_mail() -> str:
        login_user(USERS["alice"])
        _in_a_thread_with_a_copy_of_the_request()
        return "ok"

    @app.get("/restore-and-mail")
    def restore_and_mail() -> t.Any:
        user = current_user.get_id()  # restored from the remember-me cookie
        _in_a_thread_with_a_copy_of_the_request()
        return {"user": user}

    device = app.test_client()
    assert device.post("/login-and-mail").status_code == 200
    assert device.get("/me").json["user"] == "alice"

    device.post("/login/alice?remember=1")
    device.delete_cookie("session")  # the browser restarts
    assert device.get("/restore-and-mail").json["user"] == "alice"
    device.delete_cookie("session")
    assert device.get("/me").json["user"] == "alice"  # restored again


def test_a_login_whose_request_raises_after_its_cookies_were_set_in_testing(
    raw_collection: t.Any,
) -> None:
    # With TESTING, an exception after save_session (a request_finished
    # receiver) reaches the caller: no response, so nobody holds the login.
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")

    def fails(sender: t.Any, response: t.Any, **extra: t.Any) -> None:
        if request.args.get("fail"):
            raise RuntimeError("a request_finished receiver fails (test)")

    request_finished.connect(fails, app)
    try:
        with pytest.raises(RuntimeError):
            app.test_client().post("/login/alice?fail=1")
        assert stored(raw_collection, user_id="alice") == []
        assert app.test_client().post("/login/alice").status_code == 200
    finally:
        request_finished.disconnect(fails, app)


def _streaming_login_app(collection: t.Any, fail: bool, **config: t.Any) -> t.Any:
    app = make_app(collection)
    app.config.update(config)

    @app.post("/login-then-stream")
    def login_then_stream() -> t.Any:
        login_user(USERS["alice"])

        def body() -> t.Iterator[str]:
            yield "part 1\n"
            if fail:
                raise RuntimeError("the stream breaks (test)")
            yield "part 2\n"

        return Response(stream_with_context(body()))

    return app


@pytest.mark.parametrize(
    "fail, config",
    [
        # The client goes away after the first chunk (the server closes the body).
        (False, {"TESTING": False, "DEBUG": True}),
        (False, {"TESTING": False, "PROPAGATE_EXCEPTIONS": True}),
        # The body fails half-way, the exception propagated or not.
        (True, {"TESTING": False, "PROPAGATE_EXCEPTIONS": True}),
        (True, {"TESTING": False, "PROPAGATE_EXCEPTIONS": False}),
    ],
)
def test_a_streamed_response_keeps_the_login_its_headers_handed_over(
    raw_collection: t.Any, fail: bool, config: dict[str, t.Any]
) -> None:
    # The headers, cookies included, went out before the body: whatever
    # happens to the body, the device holds the login.
    app = _streaming_login_app(raw_collection, fail, **config)
    environ = EnvironBuilder(path="/login-then-stream", method="POST").get_environ()
    headers: list[tuple[str, str]] = []
    body = app(environ, lambda status, h, exc_info=None: headers.extend(h))
    assert any(name == "Set-Cookie" for name, _ in headers)
    try:
        if fail:
            with pytest.raises(RuntimeError):
                list(body)
        else:
            next(iter(body))
    finally:
        body.close()
    assert len(stored(raw_collection, user_id="alice")) == 1


def test_a_failing_take_back_does_not_replace_the_apps_error(
    raw_collection: t.Any,
) -> None:
    faulty = FaultyCollection(raw_collection)
    app = _app(faulty, "single_session")
    app.config["TESTING"] = True
    faulty.faults.plan("delete_one", OperationFailure("not authorized (test)", code=13))
    with pytest.raises(RuntimeError, match="the view fails after the login"):
        app.test_client().post("/login-then-crash")


def test_an_error_an_api_library_answers_itself_keeps_the_session(
    raw_collection: t.Any,
) -> None:
    # Flask-RESTful and Flask-RESTX send got_request_exception from their own
    # error handler and still answer (a 4xx, the cookie included): in testing
    # or debug too, the session that response hands over stays.
    app = make_app(raw_collection, SINGLE_SESSION_ON_LIMIT="deny")

    @app.post("/api/login")
    def api_login() -> t.Any:
        login_user(USERS["alice"])
        try:
            raise ValueError("please confirm your e-mail (test)")
        except ValueError as e:
            got_request_exception.send(app, exception=e)
            return {"message": str(e)}, 409

    device = app.test_client()
    assert device.post("/api/login").status_code == 409
    assert device.get("/me").json["user"] == "alice"


def test_the_take_back_keeps_a_tombstone_a_remembered_device_is_told_by(
    raw_collection: t.Any,
) -> None:
    app = make_app(raw_collection)  # TESTING: the exception propagates
    told = Recorder(session_revoked, app)

    @app.get("/restore-then-crash")
    def restore_then_crash() -> t.Any:
        current_user.get_id()  # restores the laptop from its remember-me
        # Meanwhile the phone signs in: the restored session is evicted.
        _in_thread(lambda: app.test_client().post("/login/alice"))
        raise RuntimeError("the view fails (test)")

    laptop = remembered(app)
    with pytest.raises(RuntimeError):
        laptop.get("/restore-then-crash")
    laptop.get("/me")
    assert [call["reason"] for call in told.calls] == ["signed_in_elsewhere"]
