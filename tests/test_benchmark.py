"""``python -m benchmarks`` keeps working, and what it reports meets the
operation targets (not the times: a benchmark is a script, not a timed test).

A short run (one round of a few requests per kind) on the same store as the rest
of the suite: mongomock, or the server ``SINGLE_SESSION_TEST_MONGODB_URI`` names.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.app import BACKENDS
from conftest import MONGODB_URI


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, t.Any]:
    output = tmp_path_factory.mktemp("benchmark")
    with pytest.MonkeyPatch.context() as mp:
        if MONGODB_URI:
            mp.setenv("MONGODB_URI", MONGODB_URI)
        else:
            mp.delenv("MONGODB_URI", raising=False)
        argv = ["--rounds", "1", "--requests", "3", "--repeats", "1", "--ks", "1,4"]
        assert run.main([*argv, "--output", str(output)]) == 0
    data: dict[str, t.Any] = json.loads((output / "latest.json").read_text())
    data["markdown"] = (output / "latest.md").read_text()
    return data


def _ops(data: dict[str, t.Any], request: str, backend: str) -> list[str]:
    cell = data["per_request"][request][backend]
    # Every request of a kind sent the same calls.
    assert cell["ops_vary"] == [], (request, backend, cell)
    names: list[str] = cell["op_names"]
    return names


def test_every_request_kind_is_measured_on_every_backend(
    report: dict[str, t.Any],
) -> None:
    kinds = [key for key, _, _ in run.REQUEST_TYPES]
    assert list(report["per_request"]) == kinds
    for key in kinds:
        for backend in BACKENDS:
            cell = report["per_request"][key][backend]
            assert cell["samples"] == 3, (key, backend)
            assert 0 < cell["time_us"]["median"], (key, backend)
            assert cell["own_time_us"]["median"] <= cell["time_us"]["max"]
        ratios = report["ratios"][key]
        assert ratios["single_session_vs_flask_session_outside_store"] is not None


def test_the_operation_targets(report: dict[str, t.Any]) -> None:
    for backend in BACKENDS:
        assert _ops(report, "cookieless_get", backend) == []
    for key in report["per_request"]:
        assert _ops(report, key, "cookie") == []
    assert _ops(report, "authenticated_read", "single_session") == ["find_one"]
    assert _ops(report, "authenticated_read", "flask_session") == [
        "find_one",
        "update_one",
    ]
    assert _ops(report, "login", "single_session") == [
        "insert_one",
        "find",
        "update_many",
    ]
    assert _ops(report, "login", "flask_session") == ["update_one"]
    assert _ops(report, "login_new_id", "single_session") == ["insert_one"]
    # Flask-Session's regenerate() deletes the old id (never stored here: a
    # new device) and the save upserts the new one.
    assert _ops(report, "login_new_id", "flask_session") == [
        "delete_one",
        "update_one",
    ]
    assert _ops(report, "logout", "single_session") == [
        "find_one",
        "find_one_and_delete",
    ]


def test_scaling_does_not_grow_with_the_number_of_sessions(
    report: dict[str, t.Any],
) -> None:
    login = report["scaling"]["login"]
    everywhere = report["scaling"]["logout_everywhere"]
    assert list(login) == ["1", "4"]
    for k in login:
        assert login[k]["op_names"] == ["insert_one", "find", "update_many"], k
        # The find returns the K earlier sessions and the new one.
        assert login[k]["documents_returned"] == [int(k) + 1]
        assert everywhere[k]["op_names"] == ["update_many"], k


def test_the_markdown_report(report: dict[str, t.Any]) -> None:
    markdown = report["markdown"]
    for heading in (
        "Database operations per request",
        "Time per request",
        "Time outside the store",
        "Scaling with the number of a user's sessions",
    ):
        assert f"### {heading}" in markdown
    for _, label, _ in run.REQUEST_TYPES:
        assert f"| {label} |" in markdown
    assert report["store"] in markdown


def test_the_readme_shows_the_same_request_kinds() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    performance = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    for _, label, _ in run.REQUEST_TYPES:
        assert f"| {label}" in performance, label
