from conftest import stored


def test_login_and_read(app, collection):
    c = app.test_client()
    assert c.post("/login/alice").json == {"user": "alice"}
    assert c.get("/me").json["user"] == "alice"
    docs = stored(collection)
    assert len(docs) == 1 and docs[0]["user_id"] == "alice"


def test_newest_wins(app, collection):
    a, b = app.test_client(), app.test_client()
    a.post("/login/alice")
    b.post("/login/alice")
    assert b.get("/me").json["user"] == "alice"
    r = a.get("/me")
    assert r.json["user"] is None
