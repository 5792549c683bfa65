"""The extension's settings: their defaults, and the checks that turn a bad value
into a :exc:`ConfigurationError` naming the setting, at ``init_app`` rather than
as a 500 (or a silent misbehaviour) on some later request."""

from __future__ import annotations

import math
import numbers
import typing as t
from collections.abc import Mapping
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


#: The longest duration setting taken: a hundred years (a date that far ahead
#: still fits in a datetime).
_LONGEST = timedelta(days=36500)


def duration(
    name: str, value: t.Any, *, zero: bool = False, least: float = 0.0
) -> timedelta:
    """A duration setting as a ``timedelta``: a number of seconds (anything
    ``float()`` takes, numpy's and ``Decimal`` included) or a ``timedelta``,
    above zero (or zero, if ``zero``), at least ``least`` seconds, and at most a
    hundred years."""
    seconds = math.nan
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif not isinstance(value, bool):
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    if seconds == 0 and zero:
        return timedelta(0)
    if seconds > 0 and seconds >= least and seconds <= _LONGEST.total_seconds():
        return timedelta(seconds=seconds)
    lower = "zero or more" if zero else f"more than {least or 'zero'} s"
    raise ConfigurationError(
        f"{name} must be a number of seconds or a timedelta, {lower} and at most"
        f" a hundred years; got {value!r}."
    )


def check_limit(value: t.Any) -> int | None:
    """``SINGLE_SESSION_MAX_SESSIONS`` (or what its callable returned)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if int(value) >= 1:
            return int(value)
    raise ConfigurationError(
        "SINGLE_SESSION_MAX_SESSIONS must be a positive int, None, or a callable"
        f" returning one; got {value!r}."
    )


def timeout(config: Config) -> float:
    """``SINGLE_SESSION_TIMEOUT`` in seconds (a millisecond at least)."""
    value = config["SINGLE_SESSION_TIMEOUT"]
    return duration("SINGLE_SESSION_TIMEOUT", value, least=0.001).total_seconds()


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
    timeout(config)
    size = config["SINGLE_SESSION_MAX_SIZE"]
    if size is not None and (
        not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1
    ):
        raise ConfigurationError(
            f"SINGLE_SESSION_MAX_SIZE must be a positive int (bytes) or None; got"
            f" {size!r}."
        )
    messages = config["SINGLE_SESSION_REVOKED_MESSAGE"]
    if not (
        _is_message(messages)
        or (
            isinstance(messages, Mapping)
            and all(_is_message(m) for m in messages.values())
        )
    ):
        raise ConfigurationError(
            "SINGLE_SESSION_REVOKED_MESSAGE must be a message (a str, or a lazy"
            " translation such as flask_babel's lazy_gettext), a dict of reason to"
            f" message (or None), or None; got {messages!r}."
        )


def _is_message(value: t.Any) -> bool:
    """A message to flash: a str, or what renders as one (a lazy translation,
    Markup), or None for none."""
    return (
        value is None
        or isinstance(value, str)
        or (hasattr(value, "__html__") and not callable(value))
    )
