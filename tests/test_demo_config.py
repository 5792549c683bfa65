"""``python -m demo`` with a bad setting in its environment says so in one line
and exits with status 2, before it serves anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, value, named",
    [
        # Flask's own prefixed settings, read by the library.
        ("FLASK_SINGLE_SESSION_TIMEOUT", "abc", "SINGLE_SESSION_TIMEOUT"),
        ("FLASK_SINGLE_SESSION_MAX_SESSIONS", "0", "SINGLE_SESSION_MAX_SESSIONS"),
        # The demo's own.
        ("SINGLE_SESSION_ON_LIMIT", "first", "SINGLE_SESSION_ON_LIMIT"),
    ],
)
def test_a_bad_setting_stops_the_demo_with_one_line(name, value, named):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASK_", "SINGLE_SESSION_", "MONGODB_URI"))
    }
    env[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "demo", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("demo: ") and named in line
    assert done.stdout == ""
