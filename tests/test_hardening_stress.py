"""A stress test: several threads send a few hundred requests mixing every
operation (logins with and without remember-me, logouts, logout_everywhere,
revoking one device, logout_others, writes, reads, browser restarts) to one
app; afterwards the invariants hold: no 5xx, at most N live sessions per user,
no orphaned binding, tombstones that stay tombstones."""

from __future__ import annotations

import json
import random
import threading
import time

from flask import jsonify
from flask_login import current_user

from conftest import make_app
from conftest import run_together
from conftest import stored
from faults import LockedCollection
from single_session.tokens import hash_id

LIMIT = 2
USERS = ("alice", "bob", "carol")
THREADS = 8
REQUESTS_PER_THREAD = 60  # 480 in all


def stress_app(collection):
    app = make_app(collection, SINGLE_SESSION_MAX_SESSIONS=LIMIT)
    ext = app.extensions["test_ext"]

    @app.post("/everywhere")
    def everywhere():
        if not current_user.is_authenticated:
            return jsonify(ended=0)
        return jsonify(ended=ext.logout_everywhere(current_user))

    @app.post("/others")
    def others():
        if not current_user.is_authenticated:
            return jsonify(ended=0)
        return jsonify(ended=ext.logout_others(current_user))

    @app.post("/revoke-oldest")
    def revoke_oldest():
        if not current_user.is_authenticated:
            return jsonify(revoked=False)
        devices = ext.sessions_of(current_user)  # may be none by now: a race
        return jsonify(
            revoked=bool(devices) and ext.revoke(current_user, devices[-1].handle)
        )

    return app


def worker(app, seed):
    rng = random.Random(seed)
    clients = [app.test_client() for _ in range(2)]
    statuses = []
    for i in range(REQUESTS_PER_THREAD):
        client = rng.choice(clients)
        action = rng.choice(
            [
                "login",
                "login",
                "login_remember",
                "logout",
                "everywhere",
                "others",
                "revoke",
                "write",
                "write",
                "read",
                "me",
                "me",
                "restart",
            ]
        )
        user = rng.choice(USERS)
        if action == "login":
            r = client.post(f"/login/{user}")
        elif action == "login_remember":
            r = client.post(f"/login/{user}?remember=1")
        elif action == "logout":
            r = client.post("/logout")
        elif action == "everywhere":
            r = client.post("/everywhere")
        elif action == "others":
            r = client.post("/others")
        elif action == "revoke":
            r = client.post("/revoke-oldest")
        elif action == "write":
            r = client.post("/set/cart", json=[seed, i])
        elif action == "read":
            r = client.get("/get/cart")
        elif action == "me":
            r = client.get("/me")
        else:
            client.delete_cookie("session")
            r = client.get("/me")
        statuses.append((action, r.status_code))
    return statuses, clients


def test_many_threads_many_operations_keep_the_invariants(raw_collection):
    app = stress_app(LockedCollection(raw_collection, threading.Lock()))

    start = time.monotonic()
    results = run_together(
        *[lambda seed=seed: worker(app, seed) for seed in range(THREADS)], timeout=30
    )
    elapsed = time.monotonic() - start

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    statuses = [status for result, _ in results for status in result]
    assert len(statuses) == THREADS * REQUESTS_PER_THREAD
    assert [s for s in statuses if s[1] >= 500] == []
    assert elapsed < 30

    docs = stored(raw_collection)
    for user in USERS:
        live = [d for d in docs if d.get("user_id") == user and "revoked" not in d]
        assert len(live) <= LIMIT, user
    for doc in docs:
        if "user_id" in doc:
            # No orphaned binding: the session's own data names the same user.
            assert json.loads(doc["data"]["_user_id"]) == doc["user_id"]
            assert "revoked" not in doc
        if "revoked" in doc:
            # (A remembered device's tombstone keeps its hashes alone.)
            assert "data" not in doc
            kept = {"series", "token", "previous", "rotated_at"}
            assert set(doc.get("remember", {})) <= kept

    # Every browser agrees with the store: it is logged in exactly when its
    # session cookie names a live session bound to that user.
    by_id = {doc["_id"]: doc for doc in docs}
    for _, clients in results:
        for client in clients:
            cookie = client.get_cookie("session")
            doc = cookie and by_id.get(hash_id(cookie.value.rsplit(".", 1)[0]))
            expected = doc.get("user_id") if doc else None
            if expected is None and client.get_cookie("remember_token"):
                continue  # may be restored from remember-me: not decided here
            assert client.get("/me").json["user"] == expected
