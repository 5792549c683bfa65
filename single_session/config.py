"""The extension's settings: their defaults, and the checks that turn a bad value
into a :exc:`ConfigurationError` naming the setting, at ``init_app`` rather than
as a 500 (or a silent misbehaviour) on some later request."""

from __future__ import annotations

import math
import numbers
import typing as t
import warnings
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import unquote_plus

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


#: The longest duration setting taken: a hundred years of 365 days (a date
#: that far ahead still fits in a datetime).
LONGEST_DURATION = timedelta(days=36500)


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
    if seconds > 0 and seconds >= least and seconds <= LONGEST_DURATION.total_seconds():
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


def on_limit(value: t.Any) -> str:
    """``SINGLE_SESSION_ON_LIMIT``."""
    if value not in ("evict", "deny"):
        raise ConfigurationError(
            f"SINGLE_SESSION_ON_LIMIT must be 'evict' or 'deny', got {value!r}."
        )
    return t.cast(str, value)


def record_device(value: t.Any) -> bool:
    """``SINGLE_SESSION_RECORD_DEVICE``: a bool, not a string such as
    ``"false"`` read from the environment (which would be true)."""
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"SINGLE_SESSION_RECORD_DEVICE must be True or False, got {value!r}."
        )
    return value


def check(config: Config, reasons: t.Collection[str]) -> None:
    """Check every setting the extension reads (``init_app`` calls it);
    ``reasons`` are the revocation reasons a message may be given for."""
    on_limit(config["SINGLE_SESSION_ON_LIMIT"])
    record_device(config["SINGLE_SESSION_RECORD_DEVICE"])
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
    if isinstance(messages, Mapping):
        unknown = sorted(str(k) for k in messages.keys() - set(reasons))
        if unknown:
            raise ConfigurationError(
                "SINGLE_SESSION_REVOKED_MESSAGE has no such reason:"
                f" {', '.join(unknown)} (the reasons are"
                f" {', '.join(sorted(reasons))})."
            )


#: What MongoDB does not take in a database name.
_NOT_IN_DATABASE_NAME = set('/\\. "$\0')


def location(config: Config) -> None:
    """``SINGLE_SESSION_MONGODB_URI``, ``_DATABASE`` and ``_COLLECTION``, as far
    as they can be checked without a connection (a ``mongodb+srv://`` URI's
    hosts are looked up in the DNS: its form only is checked here)."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    uri = config["SINGLE_SESSION_MONGODB_URI"]
    if not isinstance(uri, str):
        raise ConfigurationError(
            f"SINGLE_SESSION_MONGODB_URI must be a MongoDB URI, got {uri!r}."
        )
    uri_database: str | None = None
    if uri.startswith("mongodb+srv://"):
        # (What MongoClient checks before its DNS lookup: one host, no port.)
        rest = uri[len("mongodb+srv://") :]
        hosts, _, path = rest.partition("/")
        host = hosts.rpartition("@")[2].partition("?")[0]
        if not host or "," in host or ":" in host:
            # (Not the host as read: with an unescaped "/" in the password, it
            # would be part of the password.)
            raise ConfigurationError(
                "SINGLE_SESSION_MONGODB_URI: a mongodb+srv:// URI names one host"
                " and no port (in a user name or password, write '@', ':' and"
                " '/' as %40, %3A and %2F)."
            )
        uri_database = unquote_plus(path.partition("?")[0]) or None
    else:
        try:
            # (warn: an option pymongo does not know is a warning, as it is for
            # MongoClient, not an error.)
            uri_database = parse_uri(uri, warn=True)["database"]
            # What MongoClient checks beyond the URI's form (credentials for
            # the auth mechanism, option values), without connecting. (Its
            # warnings, about the kind of server the hosts' names suggest say,
            # come when the client is made for real.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MongoClient(uri, connect=False).close()
        except (PyMongoError, ValueError, TypeError) as e:
            raise ConfigurationError(
                f"SINGLE_SESSION_MONGODB_URI is not a usable MongoDB URI: {e}"
            ) from None
        except OSError:
            pass  # a TLS file not there yet: left to the first connection
    if uri_database is not None and not _is_database_name(uri_database):
        raise ConfigurationError(
            "SINGLE_SESSION_MONGODB_URI names a database MongoDB refuses:"
            f" {uri_database!r} ({_DATABASE_NAME_RULES})."
        )
    database = config["SINGLE_SESSION_DATABASE"]
    if database is not None and not _is_database_name(database):
        raise ConfigurationError(
            f"SINGLE_SESSION_DATABASE must be a database name ({_DATABASE_NAME_RULES}),"
            f" or None; got {database!r}."
        )
    name = config["SINGLE_SESSION_COLLECTION"]
    if (
        not isinstance(name, str)
        or not name
        or "$" in name
        or "\0" in name
        or name.startswith((".", "system."))
        or name.endswith(".")
    ):
        raise ConfigurationError(
            "SINGLE_SESSION_COLLECTION must be a collection name (not empty,"
            " without $, not starting with 'system.' nor starting or ending with"
            f" a dot); got {name!r}."
        )


_DATABASE_NAME_RULES = 'not empty, under 64 bytes, without any of / \\ . space " $'


def _is_database_name(name: t.Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name.encode("utf-8", "surrogatepass")) < 64
        and not _NOT_IN_DATABASE_NAME & set(name)
    )


def _is_message(value: t.Any) -> bool:
    """A message to flash: a str, or what renders as one (a lazy translation,
    Markup), or None for none."""
    return (
        value is None
        or isinstance(value, str)
        or (hasattr(value, "__html__") and not callable(value))
    )
