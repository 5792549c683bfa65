"""The extension's settings: their defaults, and the checks that turn a bad value
into a :exc:`ConfigurationError` naming the setting, at ``init_app`` rather than
as a 500 (or a silent misbehaviour) on some later request."""

from __future__ import annotations

import math
import typing as t
from datetime import timedelta

from .exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from flask import Config

#: The settings and their defaults (``SINGLE_SESSION_REVOKED_MESSAGE``'s is the
#: extension's per-reason messages).
DEFAULTS: dict[str, t.Any] = {
    "SINGLE_SESSION_MONGODB_URI": None,
    "SINGLE_SESSION_DATABASE": None,
    "SINGLE_SESSION_COLLECTION": "sessions",
    "SINGLE_SESSION_MAX_SESSIONS": 1,
    "SINGLE_SESSION_ON_LIMIT": "evict",
    "SINGLE_SESSION_TOUCH_INTERVAL": 60,
    "SINGLE_SESSION_ABSOLUTE_LIFETIME": None,
    "SINGLE_SESSION_TIMEOUT": 3.0,
    "SINGLE_SESSION_MAX_SIZE": 65536,
    "SINGLE_SESSION_RECORD_DEVICE": True,
}


def duration(name: str, value: t.Any, *, zero: bool = False) -> timedelta:
    """A duration setting as a ``timedelta``: a number of seconds or a
    ``timedelta``, positive (or zero, if ``zero``) and finite."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    if (seconds >= 0 if zero else seconds > 0) and seconds < math.inf:
        try:
            return value if isinstance(value, timedelta) else timedelta(seconds=seconds)
        except OverflowError:
            pass
    least = "zero or more" if zero else "more than zero"
    raise ConfigurationError(
        f"{name} must be a number of seconds or a timedelta, {least}; got {value!r}."
    )


def check_limit(value: t.Any) -> int | None:
    """``SINGLE_SESSION_MAX_SESSIONS`` (or what its callable returned)."""
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        return value
    raise ConfigurationError(
        "SINGLE_SESSION_MAX_SESSIONS must be a positive int, None, or a callable"
        f" returning one; got {value!r}."
    )


def check(config: Config) -> None:
    """Check every setting the extension reads (``init_app`` calls it)."""
    on_limit = config["SINGLE_SESSION_ON_LIMIT"]
    if on_limit not in ("evict", "deny"):
        raise ConfigurationError(
            f"SINGLE_SESSION_ON_LIMIT must be 'evict' or 'deny', got {on_limit!r}."
        )
    limit = config["SINGLE_SESSION_MAX_SESSIONS"]
    if not callable(limit):
        check_limit(limit)
    duration(
        "SINGLE_SESSION_TOUCH_INTERVAL",
        config["SINGLE_SESSION_TOUCH_INTERVAL"],
        zero=True,
    )
    if config["SINGLE_SESSION_ABSOLUTE_LIFETIME"] is not None:
        duration(
            "SINGLE_SESSION_ABSOLUTE_LIFETIME",
            config["SINGLE_SESSION_ABSOLUTE_LIFETIME"],
        )
    duration("SINGLE_SESSION_TIMEOUT", config["SINGLE_SESSION_TIMEOUT"])
    size = config["SINGLE_SESSION_MAX_SIZE"]
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or size < 1
    ):
        raise ConfigurationError(
            f"SINGLE_SESSION_MAX_SIZE must be a positive int (bytes) or None; got"
            f" {size!r}."
        )
    messages = config["SINGLE_SESSION_REVOKED_MESSAGE"]
    if not (
        messages is None
        or isinstance(messages, str)
        or (
            isinstance(messages, dict)
            and all(m is None or isinstance(m, str) for m in messages.values())
        )
    ):
        raise ConfigurationError(
            "SINGLE_SESSION_REVOKED_MESSAGE must be a str, a dict of reason to str"
            f" (or None), or None; got {messages!r}."
        )
