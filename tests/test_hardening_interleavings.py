"""Random interleavings of logins, logouts, logout_everywhere, browser restarts,
writes and reads across several clients, checked against a model after every
step (hypothesis stateful testing):

- a user never has more than N live sessions, and exactly the N newest logins
  survive;
- a revoked session never comes back (its tombstone stays a tombstone, its
  device stays signed out, remember-me included);
- a write to a live session is never lost; data moves with a login and stays
  with a logout;
- logout_everywhere reports exactly how many sessions it ended.
"""

from __future__ import annotations

import itertools
import json
import typing as t

from flask.testing import FlaskClient
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import rule
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import run_state_machine_as_test

from conftest import make_app
from conftest import stored
from single_session import logout_everywhere

#: Sessions allowed per user: one for alice, two for bob.
LIMITS = {"alice": 1, "bob": 2}
USERS = tuple(LIMITS)
CLIENTS = 3
KEYS = ("cart", "theme")

#: How often each action is drawn.
ACTIONS = (
    ["login"] * 3
    + ["visit"] * 3
    + ["write"] * 2
    + [
        "logout",
        "restart_browser",
        "end_everywhere",
    ]
)

json_values = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)


class Device:
    """What the model expects of one browser."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        #: The login session this browser holds, if any (a model token).
        self.token: int | None = None
        self.remembered = False
        self.fresh = False
        #: Restarted with a remembered login not restored yet: the login comes
        #: back on the first request that asks for the user; until then the
        #: device's session is an anonymous one of its own.
        self.pending = False
        self.data: dict[str, t.Any] = {}


class Interleavings(RuleBasedStateMachine):
    #: Returns the collection to use (set by the test).
    source: t.Callable[[], t.Any]

    @initialize()
    def start(self) -> None:
        self.collection = type(self).source()
        self.collection.delete_many({})
        self.app = make_app(
            self.collection, SINGLE_SESSION_MAX_SESSIONS=lambda user: LIMITS[user.id]
        )
        self.clock = self.app.extensions["single_session"].clock
        self.devices = [Device(self.app.test_client()) for _ in range(CLIENTS)]
        #: Each user's live login sessions, oldest login first.
        self.live: dict[str, list[int]] = {u: [] for u in USERS}
        self.owner: dict[int, tuple[str, int]] = {}  # token -> (user, device)
        self.tokens = itertools.count()
        self.tombstones: set[str] = set()

    def user_of(self, device: Device) -> str | None:
        return None if device.token is None else self.owner[device.token][0]

    def revoke(self, token: int) -> None:
        user, index = self.owner[token]
        device = self.devices[index]
        if device.token == token:
            if not device.pending:
                device.data = {}  # they were in the revoked session
            device.token = None
            device.remembered = False
            device.fresh = False
            device.pending = False

    # -- actions -------------------------------------------------------------------

    @rule(
        action=st.sampled_from(ACTIONS),
        d=st.integers(0, CLIENTS - 1),
        user=st.sampled_from(USERS),
        remember=st.booleans(),
        key=st.sampled_from(KEYS),
        value=json_values,
    )
    def act(
        self, action: str, d: int, user: str, remember: bool, key: str, value: t.Any
    ) -> None:
        # Logins one after another never share a login time.
        self.clock.advance(seconds=1)
        if action == "login":
            self.login(d, user, remember)
        elif action == "logout":
            self.logout(d)
        elif action == "end_everywhere":
            self.end_everywhere(user)
        elif action == "restart_browser":
            self.restart_browser(d)
        elif action == "write":
            self.write(d, key, value)
        else:
            self.visit(d)

    def login(self, d: int, user: str, remember: bool) -> None:
        device = self.devices[d]
        r = device.client.post(f"/login/{user}" + ("?remember=1" if remember else ""))
        assert r.status_code == 200, r.data
        assert r.json["user"] == user
        old = self.user_of(device)
        if old is not None:
            self.live[old].remove(device.token)  # type: ignore[arg-type]
        token = next(self.tokens)
        self.owner[token] = (user, d)
        device.token, device.remembered, device.fresh = token, remember, True
        device.pending = False  # a remembered login not restored yet ends too
        self.live[user].append(token)
        limit = LIMITS[user]
        for victim in self.live[user][:-limit]:
            self.revoke(victim)
        self.live[user] = self.live[user][-limit:]

    def logout(self, d: int) -> None:
        device = self.devices[d]
        assert device.client.post("/logout").status_code == 200
        user = self.user_of(device)
        if user is not None:
            # (logout_user() asks for the user: a pending login is restored,
            # then ended.)
            self.live[user].remove(device.token)  # type: ignore[arg-type]
        device.token, device.remembered, device.fresh = None, False, False
        device.pending = False

    def end_everywhere(self, user: str) -> None:
        with self.app.app_context():
            ended = logout_everywhere(user)
        assert ended == len(self.live[user])
        for token in self.live[user]:
            self.revoke(token)
        self.live[user] = []

    def restart_browser(self, d: int) -> None:
        """The browser drops its session cookie (and keeps its remember-me)."""
        device = self.devices[d]
        device.client.delete_cookie("session")
        device.data = {}
        if device.token is not None and device.remembered:
            device.fresh = False  # restored from remember-me when asked for
            device.pending = True
        else:
            # A login session left behind still counts until it is evicted.
            device.token, device.remembered, device.fresh = None, False, False

    def write(self, d: int, key: str, value: t.Any) -> None:
        device = self.devices[d]
        body = json.dumps(value)
        r = device.client.post(
            f"/set/{key}", data=body, content_type="application/json"
        )
        assert r.status_code == 200
        device.data[key] = value

    def visit(self, d: int) -> None:
        """An ordinary request: who am I, and what is in my session?"""
        device = self.devices[d]
        r = device.client.get("/me")
        assert r.status_code == 200
        assert r.json == {"user": self.user_of(device), "fresh": device.fresh}
        # Restored if pending, with the data the device gathered meanwhile.
        device.pending = False
        for key in KEYS:
            r = device.client.get(f"/get/{key}")
            assert r.status_code == 200
            assert r.json["value"] == device.data.get(key, None)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def at_most_n_and_exactly_the_model(self) -> None:
        for user in USERS:
            bound = stored(self.collection, user_id=user, revoked={"$exists": False})
            assert len(bound) == len(self.live[user]) <= LIMITS[user]
            for doc in bound:
                assert json.loads(doc["data"]["_user_id"]) == user

    @invariant()
    def tombstones_stay_tombstones(self) -> None:
        docs = {doc["_id"]: doc for doc in stored(self.collection)}
        for key in self.tombstones:
            doc = docs.get(key)
            assert doc is None or (
                "revoked" in doc and "data" not in doc and "user_id" not in doc
            )
        self.tombstones |= {key for key, doc in docs.items() if "revoked" in doc}


def test_random_interleavings_keep_the_promises(collection):
    class Machine(Interleavings):
        source = staticmethod(lambda: collection)

    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None),
    )
