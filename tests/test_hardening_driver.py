"""Real driver faults, without a server (promise 10): a real pymongo client
pointed at a closed loopback port, and at a loopback socket that accepts
connections and never answers. Requests that need the database end within
SINGLE_SESSION_TIMEOUT (+0.5 s) with a 503 and no cookie; the app starts while
the database is down."""

from __future__ import annotations

import time

import pymongo
import pytest
from flask_login.utils import encode_cookie

from conftest import make_app
from faults import closed_port
from faults import SilentServer
from single_session import logout_everywhere
from single_session import SessionStoreUnavailable
from single_session.tokens import new_id

TIMEOUT = 0.3
#: pymongo looks at its server-selection deadline only every 0.5 s
#: (MIN_HEARTBEAT_INTERVAL), so a call may end up to 0.5 s late; plus 0.1 s for
#: the test itself.
SLACK = 0.6


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(params=["closed port", "silent server"])
def dead_uri(request):
    """A MongoDB URI where no answer ever comes. No serverSelectionTimeoutMS:
    the driver's own default (30 s) would hang the request; the library's
    timeout must cut it short."""
    if request.param == "closed port":
        port = closed_port()
    else:
        port = request.getfixturevalue("silent_server").port
    return f"mongodb://127.0.0.1:{port}/sessions_test"


def close_client(app):
    store = app.extensions["single_session"].store
    if store._collection is not None:
        store._collection.database.client.close()


@pytest.fixture
def dead_app(dead_uri):
    """The app built from SINGLE_SESSION_MONGODB_URI."""
    app = make_app(
        None, SINGLE_SESSION_MONGODB_URI=dead_uri, SINGLE_SESSION_TIMEOUT=TIMEOUT
    )
    yield app
    close_client(app)


@pytest.fixture
def dead_collection_app(dead_uri):
    """The app given a collection of a (connecting) client the test made."""
    client = pymongo.MongoClient(dead_uri)
    yield make_app(client.db.sessions, SINGLE_SESSION_TIMEOUT=TIMEOUT)
    client.close()


def signed_session_cookie(app):
    return app.extensions["single_session"].session_signer.get(app).sign(new_id())


def get_with_a_session_cookie(app):
    """A request that carries a signed session cookie: it needs the database."""
    client = app.test_client(use_cookies=False)
    cookie = signed_session_cookie(app)
    return client.get("/me", headers={"Cookie": f"session={cookie}"})


def render_503s(app):
    """The app's own page for a 503."""

    @app.errorhandler(503)
    def unavailable(e):
        return "Back soon", 503


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def test_app_starts_and_serves_cookieless_requests_while_the_database_is_down(dead_uri):
    app, elapsed = timed(
        lambda: make_app(
            None, SINGLE_SESSION_MONGODB_URI=dead_uri, SINGLE_SESSION_TIMEOUT=TIMEOUT
        )
    )
    try:
        assert elapsed < 0.2
        client = app.test_client()
        r, elapsed = timed(lambda: client.get("/me"))
        assert r.status_code == 200 and r.json["user"] is None
        assert client.get("/plain").status_code == 200
        assert elapsed < 0.2
        # Nothing needed the database: no client was even made.
        assert app.extensions["single_session"].store._collection is None
    finally:
        close_client(app)


def assert_session_cookie_request_is_a_fast_503(app):
    r, elapsed = timed(lambda: get_with_a_session_cookie(app))

    assert r.status_code == 503
    assert elapsed < TIMEOUT + SLACK
    assert "Set-Cookie" not in r.headers


def test_request_with_a_session_cookie_is_a_fast_503_without_cookies(dead_app):
    assert_session_cookie_request_is_a_fast_503(dead_app)


def test_same_with_a_collection_of_a_client_the_app_made(dead_collection_app):
    assert_session_cookie_request_is_a_fast_503(dead_collection_app)


def test_request_with_a_remember_cookie_is_a_fast_503_that_keeps_it(dead_app):
    with dead_app.app_context():
        value = (
            dead_app.extensions["single_session"]
            .remember_signer.get(dead_app)
            .sign(new_id(), new_id())
        )
        cookie = encode_cookie(value)
    client = dead_app.test_client(use_cookies=False)

    r, elapsed = timed(
        lambda: client.get("/private", headers={"Cookie": f"remember_token={cookie}"})
    )

    assert r.status_code == 503
    assert elapsed < TIMEOUT + SLACK
    assert "Set-Cookie" not in r.headers


def test_login_is_a_fast_503_without_cookies(dead_app):
    client = dead_app.test_client()

    r, elapsed = timed(lambda: client.post("/login/alice?remember=1"))

    assert r.status_code == 503
    assert elapsed < TIMEOUT + SLACK
    assert "Set-Cookie" not in r.headers


def test_first_write_is_a_fast_503_without_cookies(dead_app):
    client = dead_app.test_client()

    r, elapsed = timed(lambda: client.post("/set/cart", json=["apple"]))

    assert r.status_code == 503
    assert elapsed < TIMEOUT + SLACK
    assert "Set-Cookie" not in r.headers


def test_logout_everywhere_raises_fast(dead_app):
    with dead_app.app_context():
        start = time.monotonic()
        with pytest.raises(SessionStoreUnavailable):
            logout_everywhere("alice")
        assert time.monotonic() - start < TIMEOUT + SLACK


def test_the_503_is_an_http_error_the_app_can_render(dead_app):
    render_503s(dead_app)
    r = get_with_a_session_cookie(dead_app)
    assert (r.status_code, r.text) == (503, "Back soon")


def test_a_client_that_cannot_be_built_is_a_503_and_an_error_in_the_log(caplog):
    # A TLS file missing when the first request needs the database (init_app
    # leaves it: it may be put in place after the app starts).
    app = make_app(
        None,
        SINGLE_SESSION_MONGODB_URI=(
            f"mongodb://127.0.0.1:{closed_port()}/db"
            "?tls=true&tlsCAFile=/nonexistent/single_session_ca.pem"
        ),
        SINGLE_SESSION_TIMEOUT=TIMEOUT,
    )

    render_503s(app)
    r = get_with_a_session_cookie(app)
    assert (r.status_code, r.text) == (503, "Back soon")
    assert "Set-Cookie" not in r.headers
    assert app.test_client().post("/login/alice").status_code == 503
    # Logged once (not once per request), as the 503 hides the cause.
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(errors) == 1 and "tlscafile" in errors[0].getMessage().lower()

    # A command says the cause itself, in one line, and logs nothing.
    caplog.clear()
    result = app.test_cli_runner().invoke(args=["single-session", "list", "alice"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: MongoDB cannot be used: FileNotFoundError")
    assert caplog.records == []


def test_credentials_the_server_refuses_are_a_503_and_an_error_in_the_log(
    raw_collection, caplog
):
    from pymongo.errors import OperationFailure

    from faults import FaultyCollection

    faulty = FaultyCollection(raw_collection)
    app = make_app(faulty)
    client = app.test_client()
    client.post("/login/alice")
    faulty.faults.down = OperationFailure("Authentication failed.", code=18)

    r = client.get("/me")
    assert r.status_code == 503
    assert "Set-Cookie" not in r.headers
    # A login is refused before anything is sent: nothing to take back.
    faulty.faults.calls.clear()
    assert app.test_client().post("/login/bob").status_code == 503
    assert [name for name, _ in faulty.faults.calls] == ["insert_one"]
    assert [rec.levelname for rec in caplog.records] == ["ERROR"]
    assert "Authentication failed" in caplog.records[0].getMessage()
    faulty.faults.down = None
    assert client.get("/me").json["user"] == "alice"


@pytest.fixture
def silent_dns():
    """DNS queries go to a loopback socket that never answers."""
    import socket

    import dns.resolver

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = silent.getsockname()[1]
    default = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    yield
    dns.resolver.default_resolver = default
    silent.close()


def test_a_dns_lookup_that_gets_no_answer_is_a_503_within_the_timeout(silent_dns):
    # A mongodb+srv:// URI's hosts are looked up at the first call, outside
    # pymongo.timeout, for connectTimeoutMS (the driver's default: 20 s).
    app = make_app(
        None,
        SINGLE_SESSION_MONGODB_URI="mongodb+srv://cluster.example.net/app",
        SINGLE_SESSION_TIMEOUT=TIMEOUT,
    )
    r, elapsed = timed(lambda: get_with_a_session_cookie(app))
    assert r.status_code == 503
    assert elapsed < TIMEOUT + SLACK
