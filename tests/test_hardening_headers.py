"""Header abuse: a huge User-Agent or a forged X-Forwarded-For neither bloats the
stored document (the device fields have bounded lengths) nor changes the
recorded address, unless the app trusts a proxy with werkzeug's ProxyFix."""

from __future__ import annotations

import bson
import pytest
from werkzeug.middleware.proxy_fix import ProxyFix

from conftest import make_app
from conftest import stored

HUGE = 64 * 1024


def device_of(collection, **query):
    (doc,) = stored(collection, **query)
    return doc["device"], len(bson.encode(doc))


@pytest.mark.parametrize("user_agent", ["A" * HUGE, "é☃" * (HUGE // 2)])
def test_huge_user_agent_is_cut_short(app, collection, user_agent):
    client = app.test_client()
    r = client.post("/login/alice", headers={"User-Agent": user_agent})

    assert r.status_code == 200
    device, size = device_of(collection, user_id="alice")
    assert 0 < len(device["user_agent"]) <= 512
    assert user_agent.startswith(device["user_agent"])
    assert size < 4096


def test_huge_user_agent_on_an_anonymous_session(app, collection):
    client = app.test_client()
    client.post("/set/cart", json=[1], headers={"User-Agent": "B" * HUGE})

    device, size = device_of(collection)
    assert len(device["user_agent"]) <= 512
    assert size < 4096


def test_forged_forwarded_for_is_ignored_without_proxy_fix(app, collection):
    client = app.test_client()
    client.post(
        "/login/alice",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "7.7.7.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
    )

    device, _ = device_of(collection, user_id="alice")
    assert device["ip"] == "10.0.0.5"
    with app.app_context():
        (info,) = app.extensions["test_ext"].sessions_of("alice")
    assert info.ip == "10.0.0.5"


def test_forwarded_for_is_used_behind_proxy_fix(collection):
    app = make_app(collection)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    client = app.test_client()

    client.post(
        "/login/alice",
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
    )

    device, _ = device_of(collection, user_id="alice")
    assert device["ip"] == "203.0.113.9"


def test_huge_forwarded_for_behind_proxy_fix_is_cut_short(collection):
    app = make_app(collection)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    client = app.test_client()

    client.post("/login/alice", headers={"X-Forwarded-For": "9" * HUGE})

    device, size = device_of(collection, user_id="alice")
    assert 0 < len(device["ip"]) <= 64
    assert size < 4096


def test_device_is_not_recorded_when_turned_off(collection):
    app = make_app(collection, SINGLE_SESSION_RECORD_DEVICE=False)
    app.test_client().post("/login/alice", headers={"User-Agent": "A" * HUGE})

    (doc,) = stored(collection, user_id="alice")
    assert "device" not in doc
