"""The benchmark app, the same on every backend, and the stores it runs on."""

from __future__ import annotations

import os
import typing as t
import uuid
from dataclasses import dataclass
from unittest import mock

from flask import Flask
from flask import jsonify
from flask import request
from flask import session
from flask_login import current_user
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin

from .counting import CountingCollection
from .counting import Ledger

SECRET_KEY = "benchmark secret key, not for production"

#: The backends, in the order the tables show them.
BACKENDS = ("cookie", "flask_session", "single_session")
LABELS = {
    "cookie": "Cookie session",
    "flask_session": "Flask-Session 0.8",
    "single_session": "single_session",
}


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


USERS = {name: User(name) for name in ("alice", "bob")}


def create_app(backend: str, store: Store | None) -> tuple[Flask, Ledger | None, t.Any]:
    """The app on ``backend``; returns it, the ledger that counts its database
    calls, and the raw collection (for uncounted set-up), both ``None`` for
    the cookie session."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET_KEY, TESTING=True)
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return USERS.get(user_id)

    ledger: Ledger | None = None
    raw: t.Any = None
    if backend == "flask_session":
        assert store is not None
        raw = store.new_collection("flask_session")
        ledger = Ledger()
        _init_flask_session(app, store, raw)
        # Flask-Session keeps its collection on the interface (``store``):
        # count from there on. The index it creates in its constructor is set-up.
        iface = app.session_interface
        iface.store = CountingCollection(iface.store, ledger)  # type: ignore[attr-defined]
    elif backend == "single_session":
        assert store is not None
        from single_session import SingleSession

        raw = store.new_collection("single_session")
        ledger = Ledger()
        SingleSession(app, collection=CountingCollection(raw, ledger))  # type: ignore[arg-type]
    elif backend != "cookie":
        raise ValueError(f"unknown backend {backend!r}")

    @app.post("/login/<name>")
    def login(name: str) -> t.Any:
        login_user(USERS[name])
        if request.args.get("new_id") and backend == "flask_session":
            # Flask-Session keeps the session id across a login unless the app
            # asks for a new one (single_session always gives one; Flask's
            # cookie session has no id).
            app.session_interface.regenerate(session)  # type: ignore[attr-defined]
        return jsonify(user=current_user.get_id())

    @app.post("/logout")
    def logout() -> t.Any:
        logout_user()
        return jsonify(user=None)

    @app.get("/me")
    def me() -> t.Any:
        return jsonify(
            user=current_user.get_id() if current_user.is_authenticated else None
        )

    @app.post("/set/<key>")
    def set_value(key: str) -> t.Any:
        session[key] = request.get_json()
        return jsonify(ok=True)

    return app, ledger, raw


def _init_flask_session(app: Flask, store: Store, raw: t.Any) -> None:
    try:
        from flask_session import Session
    except ImportError:
        raise SystemExit(
            "The benchmark compares with Flask-Session: pip install"
            " 'flask-session>=0.8,<0.9' (and mongomock, unless MONGODB_URI is set)."
        ) from None

    app.config.update(
        SESSION_TYPE="mongodb",
        SESSION_MONGODB=store.client,
        SESSION_MONGODB_DB=raw.database.name,
        SESSION_MONGODB_COLLECT=raw.name,
    )
    if store.kind == "mongomock":
        # Flask-Session 0.8 checks ``isinstance(client, pymongo.MongoClient)``;
        # a mongomock client fails that check, and Flask-Session would then
        # warn, build its own MongoClient() on localhost and block on
        # create_index for the driver's 30 s server selection timeout. Let the
        # check accept mongomock's client, for construction only.
        import mongomock

        with mock.patch(
            "flask_session.mongodb.mongodb.MongoClient", mongomock.MongoClient
        ):
            Session(app)
    else:
        Session(app)


@dataclass
class Store:
    """Where the server-side backends keep their sessions: mongomock, or the
    server ``MONGODB_URI`` names (each collection dropped afterwards)."""

    kind: str
    client: t.Any
    database: t.Any
    version: str
    created: list[t.Any]

    @classmethod
    def from_environment(cls) -> Store:
        uri = os.environ.get("MONGODB_URI")
        if uri:
            import pymongo

            client: t.Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
            database = client.get_default_database("single_session_bench")
            version = "MongoDB " + client.server_info()["version"]
            return cls("mongodb", client, database, version, [])
        import mongomock

        client = mongomock.MongoClient()
        return cls(
            "mongomock",
            client,
            client.single_session_bench,
            "mongomock " + mongomock.__version__,
            [],
        )

    def new_collection(self, prefix: str) -> t.Any:
        collection = self.database[f"bench_{prefix}_{uuid.uuid4().hex[:8]}"]
        self.created.append(collection)
        return collection

    def close(self) -> None:
        for collection in self.created:
            collection.drop()
        self.client.close()
