"""A demo of single_session: one account, two browsers.

Run it with ``python -m demo`` (see ``python -m demo --help``) and sign in as
the same user in two browsers. ``flask --app demo run`` works too.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
