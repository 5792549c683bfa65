"""The demo app: two users, a login form, this device's session, and a devices page.

Configuration comes from the environment:

- ``MONGODB_URI``: keep sessions in that MongoDB (database from the URI, else
  ``single_session``; collection ``sessions``). Without it, an in-process
  mongomock collection that vanishes on restart.
- ``SINGLE_SESSION_MAX_SESSIONS``: sessions per user, a number or ``none``
  (default 1).
- ``SINGLE_SESSION_ON_LIMIT``: ``evict`` (the newest sign-in wins, default) or
  ``deny`` (further sign-ins are refused).
- ``FLASK_SECRET_KEY`` (and any other ``FLASK_*`` config key): without it, a
  fixed development key that is public, so fine for this demo only.
"""

from __future__ import annotations

import hmac
import os
import threading
import typing as t
from datetime import datetime
from datetime import timezone

from flask import abort
from flask import flash
from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_fresh
from flask_login import login_required
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin

from single_session import LoginDenied
from single_session import logout_everywhere
from single_session import SessionInfo
from single_session import SingleSession

from .useragent import describe

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

#: The demo's only password, for every user. Shown on the login page.
PASSWORD = "demo"

#: Written down in the repository, so it protects nothing: set FLASK_SECRET_KEY
#: for anything but trying the demo on your own machine.
DEV_SECRET_KEY = "single_session demo: a public development key, not a secret"

IN_MEMORY_NOTICE = (
    "in-memory store: sessions vanish on restart; set MONGODB_URI to use MongoDB"
)


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


USERS = {name: User(name) for name in ("alice", "bob")}


class DemoError(RuntimeError):
    """The demo is configured in a way it cannot run with."""


def create_app(config: dict[str, t.Any] | None = None) -> Flask:
    """The demo app, configured from the environment (and ``config``, which wins)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=DEV_SECRET_KEY,
        # SameSite=Lax: a form posted from another site carries neither cookie,
        # which is all the CSRF defence this demo has. A real app adds CSRF
        # tokens too (Flask-WTF).
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SAMESITE="Lax",
        # Write "last seen" at most every 10 s rather than every 60 s, so that
        # the devices page visibly moves while you try it.
        SINGLE_SESSION_TOUCH_INTERVAL=10,
        **policy_from_env(os.environ),
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return USERS.get(user_id)

    @login_manager.unauthorized_handler
    def unauthorized() -> Response:
        return redirect(url_for("login"))

    uri = os.environ.get("MONGODB_URI")
    if uri:
        app.config["SINGLE_SESSION_MONGODB_URI"] = uri
        single = SingleSession(app)
        app.config["DEMO_STORE"] = (
            "MongoDB store: MONGODB_URI, collection"
            f" {app.config['SINGLE_SESSION_COLLECTION']!r}"
        )
    else:
        single = SingleSession(app, collection=_in_memory_collection())
        # mongomock is not thread-safe, and the development server must run
        # threaded: browsers open spare connections ahead of time, and a
        # single-threaded server waits on such an idle connection while the
        # real request queues behind it. So requests take turns here, one at a
        # time, which costs nothing at demo traffic. (pymongo is thread-safe:
        # with MONGODB_URI, requests run in parallel.)
        app.wsgi_app = _one_at_a_time(app.wsgi_app)  # type: ignore[method-assign]
        app.config["DEMO_STORE"] = IN_MEMORY_NOTICE

    @app.context_processor
    def policy_context() -> dict[str, t.Any]:
        return {"policy": describe_policy(app.config)}

    app.add_template_filter(_ago, "ago")
    app.add_template_filter(_utc, "utc")

    # -- signing in and out ------------------------------------------------

    @app.get("/login")
    def login() -> t.Any:
        if current_user.is_authenticated:
            return redirect(url_for("home"))
        return render_template("login.html", users=sorted(USERS), password=PASSWORD)

    @app.post("/login")
    def login_post() -> t.Any:
        username = request.form.get("username", "").strip().lower()
        password = request.form.get("password", "")
        remember = bool(request.form.get("remember"))
        user = USERS.get(username)

        def again(error: str, status: int) -> tuple[str, int]:
            page = render_template(
                "login.html",
                users=sorted(USERS),
                password=PASSWORD,
                error=error,
                username=username,
                remember=remember,
            )
            return page, status

        if user is None or not hmac.compare_digest(
            password.encode(), PASSWORD.encode()
        ):
            return again("Unknown user or wrong password.", 401)

        same_user = current_user.is_authenticated and current_user.get_id() == user.id
        before = len(single.sessions_of(user))
        try:
            login_user(user, remember=remember)
        except LoginDenied as e:
            return again(
                f"Sign-in refused: {user.id} is already signed in on another device"
                f" ({_count(e.limit, 'device')} per user, new sign-ins refused)."
                " Sign out on the other device first.",
                409,
            )
        # Only to tell the user; the library has already applied the policy.
        ended = before + (0 if same_user else 1) - len(single.sessions_of(user))
        if ended > 0:
            were = "device was" if ended == 1 else "devices were"
            limit = _count(app.config["SINGLE_SESSION_MAX_SESSIONS"], "device")
            flash(
                f"{ended} other {were} signed out: this demo allows {limit} per user.",
                "info",
            )
        return redirect(url_for("home"))

    @app.post("/logout")
    @login_required
    def logout() -> Response:
        logout_user()
        flash("You signed out on this device.", "info")
        return redirect(url_for("login"))

    @app.post("/logout/everywhere")
    @login_required
    def logout_all() -> Response:
        count = logout_everywhere(current_user)
        # The session of this request was among them. Ending the login here as
        # well keeps this request from writing to it (and lets the flash
        # message below survive into a fresh anonymous session).
        logout_user()
        flash(f"You signed out everywhere: {_count(count, 'session')} ended.", "info")
        return redirect(url_for("login"))

    @app.post("/logout/others")
    @login_required
    def logout_others() -> Response:
        count = single.logout_others(current_user)
        if count:
            flash(f"Signed out {_count(count, 'other device')}.", "success")
        else:
            flash("No other device was signed in.", "info")
        return redirect(_back())

    # -- pages -------------------------------------------------------------

    @app.get("/")
    @login_required
    def home() -> str:
        sessions = single.sessions_of(current_user)
        this = next((s for s in sessions if s.current), None)
        return render_template(
            "home.html",
            this=this and _device(this),
            others=len(sessions) - (1 if this else 0),
            fresh=login_fresh(),
        )

    @app.get("/devices")
    @login_required
    def devices() -> str:
        sessions = [_device(s) for s in single.sessions_of(current_user)]
        return render_template("devices.html", devices=sessions)

    @app.post("/devices/<handle>/sign-out")
    @login_required
    def sign_out_device(handle: str) -> Response:
        device = next(
            (
                _device(s)
                for s in single.sessions_of(current_user)
                if s.handle == handle
            ),
            None,
        )
        if device is None:
            flash("That device is no longer signed in.", "info")
        elif device["current"]:
            abort(400, "Use “Sign out” to sign out this device.")
        elif single.revoke(current_user, handle):
            flash(f"Signed out {device['name']} ({device['ip']}).", "success")
        else:
            flash("That device is no longer signed in.", "info")
        return redirect(url_for("devices"))

    return app


# -- configuration ---------------------------------------------------------------


def policy_from_env(environ: t.Mapping[str, str]) -> dict[str, t.Any]:
    """``SINGLE_SESSION_MAX_SESSIONS`` and ``SINGLE_SESSION_ON_LIMIT`` from the
    environment, as config values; absent ones keep the library's defaults."""
    config: dict[str, t.Any] = {}
    raw = environ.get("SINGLE_SESSION_MAX_SESSIONS", "").strip()
    if raw.lower() == "none":
        config["SINGLE_SESSION_MAX_SESSIONS"] = None
    elif raw:
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if limit < 1:
            raise DemoError(
                "SINGLE_SESSION_MAX_SESSIONS must be a positive number or 'none',"
                f" got {raw!r}."
            )
        config["SINGLE_SESSION_MAX_SESSIONS"] = limit
    on_limit = environ.get("SINGLE_SESSION_ON_LIMIT", "").strip().lower()
    if on_limit:
        if on_limit not in ("evict", "deny"):
            raise DemoError(
                f"SINGLE_SESSION_ON_LIMIT must be 'evict' or 'deny', got {on_limit!r}."
            )
        config["SINGLE_SESSION_ON_LIMIT"] = on_limit
    return config


def describe_policy(config: t.Mapping[str, t.Any]) -> dict[str, str]:
    """The policy in a few words (``short``) and in a sentence (``long``)."""
    limit = config["SINGLE_SESSION_MAX_SESSIONS"]
    on_limit = config["SINGLE_SESSION_ON_LIMIT"]
    env = f"SINGLE_SESSION_MAX_SESSIONS={'none' if limit is None else limit}"
    if limit is None:
        return {
            "short": "No limit on devices",
            "long": "Any number of devices may be signed in at once.",
            "env": env,
        }
    devices = _count(limit, "device")
    env += f" · SINGLE_SESSION_ON_LIMIT={on_limit}"
    if on_limit == "deny":
        return {
            "short": f"{devices} per user · further sign-ins refused",
            "long": f"At most {devices} per user; a sign-in beyond that is refused.",
            "env": env,
        }
    return {
        "short": f"{devices} per user · newest sign-in wins",
        "long": (
            f"At most {devices} per user; a new sign-in signs out the device"
            " that signed in longest ago."
        ),
        "env": env,
    }


def _in_memory_collection() -> t.Any:
    try:
        import mongomock
    except ImportError:
        raise DemoError(
            "The demo's in-memory store needs mongomock: pip install -e '.[demo]'"
            " (or set MONGODB_URI to use MongoDB)."
        ) from None
    return mongomock.MongoClient().single_session_demo.sessions


def _one_at_a_time(wsgi_app: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """``wsgi_app``, with one request at a time (see where it is used)."""
    lock = threading.Lock()

    def app(environ: t.Any, start_response: t.Any) -> t.Any:
        with lock:
            return wsgi_app(environ, start_response)

    return app


# -- presentation --------------------------------------------------------------


def _device(info: SessionInfo) -> dict[str, t.Any]:
    browser, system = describe(info.user_agent)
    return {
        "handle": info.handle,
        "name": f"{browser} on {system}",
        "browser": browser,
        "system": system,
        "ip": info.ip or "unknown address",
        "created_at": info.created_at,
        "login_at": info.login_at or info.created_at,
        "last_seen": info.last_seen,
        "current": info.current,
        "remembered": info.remembered,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _back() -> str:
    target = request.form.get("next")
    return url_for(target if target in ("home", "devices") else "home")


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _utc(when: datetime) -> str:
    """``2024-05-01 14:03:22 UTC``."""
    return _aware(when).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(when: datetime) -> str:
    """``just now``, ``5 minutes ago``, ..."""
    seconds = int((datetime.now(timezone.utc) - _aware(when)).total_seconds())
    if seconds < 10:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            return f"{_count(seconds // size, unit)} ago"
    return "just now"
