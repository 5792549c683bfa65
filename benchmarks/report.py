"""The Markdown report, and the ratios the JSON carries too."""

from __future__ import annotations

import typing as t

from .app import BACKENDS
from .app import LABELS

MONGOMOCK_NOTE = """\
**What the times mean.** mongomock is an in-process imitation of MongoDB written
in Python. It has no indexes: every query scans every document of the
collection, deep-copies it and evaluates the filter in Python, so its times grow
with the collection and with the complexity of the filter, and say little about
a real server, where a query on an indexed field costs one network round trip
and an index lookup. What carries over to MongoDB unchanged is the first table:
the number and kind of operations per request (each one is a round trip) and
their shape (every filter single_session sends has an equality on an indexed
field; the test suite checks this after every test, on every call the library
made). The "outside the store" table leaves mongomock out: it is the cost of each
library's own code plus Flask and Flask-Login (the same for every backend).
Set `MONGODB_URI` to run the same benchmark against a real server."""

NOTES = """\
Notes on the comparison. Flask-Session 0.8 runs with its defaults: its cookie
holds the raw session id, unsigned; it finds a session by a field (`id`) that has
no index, upserts on every save, and keeps the id across a login unless the app
calls its `regenerate()` (Flask-Login does not; the "new session id" login
does). single_session signs its
cookie, stores only a hash of the id, finds sessions by `_id`, never upserts,
and gives the session a new id at login (the `insert_one`; the `find` and
`update_many` apply the one-device policy). Its session data is Flask's tagged
JSON, one field per key, so that every type Flask's cookie session keeps comes
back as it went in; Flask-Session uses msgpack."""


def ratios(results: dict[str, dict[str, t.Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for key, row in results.items():
        cookie = row["cookie"]["time_us"]["median"]
        fs = row["flask_session"]["time_us"]["median"]
        ss = row["single_session"]["time_us"]["median"]
        fs_own = row["flask_session"]["own_time_us"]["median"]
        ss_own = row["single_session"]["own_time_us"]["median"]
        out[key] = {
            "single_session_vs_cookie": _ratio(ss, cookie),
            "single_session_vs_flask_session": _ratio(ss, fs),
            "flask_session_vs_cookie": _ratio(fs, cookie),
            "single_session_vs_flask_session_outside_store": _ratio(ss_own, fs_own),
        }
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _ops(cell: dict[str, t.Any]) -> str:
    text = str(cell["ops"])
    if cell["op_names"]:
        text += " (" + ", ".join(f"`{name}`" for name in cell["op_names"]) + ")"
    if cell["ops_vary"]:
        text += " *varies*"
    return text


def _time(q: dict[str, float]) -> str:
    return f"{q['median']:,.0f} ({q['p25']:,.0f}–{q['p75']:,.0f})"


def _difference(us: float) -> str:
    return f"{us:+,.0f}".replace("-", "−")


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(data: dict[str, t.Any]) -> str:
    m = data["machine"]
    versions = ", ".join(
        f"{name} {version}" for name, version in m["packages"].items() if version
    )
    load = m.get("load_average")
    busy = f" Load average at the start: {load:.2f}." if load is not None else ""
    return (
        f"{m['cpu']} ({m['cpus']} CPUs), {m['platform']}, {m['python']}."
        f" Store: {data['store']}. Packages: {versions}.{busy}"
    )


def markdown(data: dict[str, t.Any], level: int = 2) -> str:
    """The report, a fragment of a page: its title is a heading of ``level``
    (``##`` by default, as the documentation includes it under its own title),
    its sections one level below."""
    h = "#" * level
    results = data["per_request"]
    r = data["ratios"]
    s = data["settings"]
    out: list[str] = [f"{h} Benchmark results", ""]
    out += [
        f"Machine: {machine_line(data)}",
        "",
        "One process, one run (`python -m benchmarks`): the same Flask + Flask-Login"
        " app on each backend, driven through Flask's test client;"
        f" {s['rounds']} rounds of {s['requests_per_round']} requests of each kind,"
        " the backends interleaved. Times are µs per request: median"
        " (25th–75th percentile), timed around the app's WSGI callable (Flask,"
        " Flask-Login and the session layer), without the test client's own work"
        " (building the request, reading the response and its cookies), which a"
        " browser does in production.",
        "",
    ]

    out += [f"{h}# Database operations per request", ""]
    out.append(
        table(
            ["Request", *(LABELS[b] for b in BACKENDS)],
            [
                [row["label"], *(_ops(row[b]) for b in BACKENDS)]
                for row in results.values()
            ],
        )
    )
    touch = s["single_session_touch_interval_s"]
    out += [
        "",
        "Counted at the collection API, calls made by the library under test only"
        " (the benchmark's own set-up is not counted, nor is the one-off index"
        " creation). Flask-Session writes on every request because"
        " `SESSION_REFRESH_EACH_REQUEST` (Flask's default) is on. single_session"
        " writes an unchanged session back only when its last write is older than"
        f" `SINGLE_SESSION_TOUCH_INTERVAL` ({touch} s by default): then an"
        " authenticated read costs 2 operations, once a minute per active session."
        ' "Login, new session id, no session limit" is single_session with'
        " `SINGLE_SESSION_MAX_SESSIONS = None` (the new session id without the"
        " one-device policy) and Flask-Session with its `regenerate()` called"
        " after `login_user()` (the same protection against session fixation);"
        " Flask's cookie session has no id to change, so for it this is the same"
        " login.",
        "",
    ]

    out += [f"{h}# Time per request", ""]
    out.append(
        table(
            [
                "Request",
                *(LABELS[b] for b in BACKENDS),
                "single_session ÷ cookie",
                "single_session ÷ Flask-Session",
            ],
            [
                [
                    row["label"],
                    *(_time(row[b]["time_us"]) for b in BACKENDS),
                    _x(r[key]["single_session_vs_cookie"]),
                    _x(r[key]["single_session_vs_flask_session"]),
                ]
                for key, row in results.items()
            ],
        )
    )

    out += ["", f"{h}# Time outside the store", ""]
    out.append(
        table(
            [
                "Request",
                "Flask-Session: in store",
                "outside",
                "single_session: in store",
                "outside",
                "single_session ÷ Flask-Session, outside",
                "single_session − Flask-Session, outside (µs)",
            ],
            [
                [
                    row["label"],
                    f"{row['flask_session']['store_time_us']['median']:,.0f}",
                    _time(row["flask_session"]["own_time_us"]),
                    f"{row['single_session']['store_time_us']['median']:,.0f}",
                    _time(row["single_session"]["own_time_us"]),
                    _x(r[key]["single_session_vs_flask_session_outside_store"]),
                    _difference(
                        row["single_session"]["own_time_us"]["median"]
                        - row["flask_session"]["own_time_us"]["median"]
                    ),
                ]
                for key, row in results.items()
            ],
        )
    )
    out += [
        "",
        '"In store": median µs inside the collection calls (reading cursors'
        ' included). "Outside": the rest of the handling of the request by the'
        " app, i.e. the session library's own code plus Flask and Flask-Login.",
        "",
    ]

    scale = data["scaling"]
    out += [f"{h}# Scaling with the number of a user's sessions", ""]
    out += [
        "single_session only: the user already has K live sessions (made with"
        " `SINGLE_SESSION_MAX_SESSIONS=None`); then the limit is set to 1 and the"
        " user logs in once more, which revokes all K, or `logout_everywhere`"
        " ends all K. Flask-Session cannot do either: its documents hold a blob"
        " and no user field.",
        "",
    ]
    rows = []
    for k in scale["login"]:
        login = scale["login"][k]
        everywhere = scale["logout_everywhere"][k]
        rows.append(
            [
                k,
                _ops(login),
                ", ".join(str(n) for n in login["documents_returned"]),
                _time(login["time_us"]),
                _ops(everywhere),
                _time(everywhere["time_us"]),
            ]
        )
    out.append(
        table(
            [
                "K",
                "Login: operations",
                "documents returned",
                "µs",
                "`logout_everywhere`: operations",
                "µs",
            ],
            rows,
        )
    )
    out += [
        "",
        "The number of operations does not depend on K. The login's `find`"
        " reads the user's live sessions through the `(user_id, login_at)` index"
        " and returns K + 1 documents; the revocation is one `update_many`, as is"
        " `logout_everywhere`. The times grow with K on mongomock, which scans and"
        " copies every document.",
        "",
    ]
    out += [f"{h}# About these numbers", ""]
    if data["store"].startswith("mongomock"):
        out += [MONGOMOCK_NOTE, ""]
    else:
        out += [f"Store: {data['store']}, a real server.", ""]
    out += [NOTES, "", f"Whole run: {data['duration_s']} s."]
    return "\n".join(out) + "\n"
