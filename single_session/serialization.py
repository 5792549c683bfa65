"""How session contents are stored: one tagged-JSON string per key.

Flask's :class:`~flask.json.tag.TaggedJSONSerializer` is what the cookie session
uses, so every type that survives Flask's cookie session (dict, list, tuple,
bytes, str, numbers, bool, None, datetime, UUID, Markup) survives here too,
equal and of the same type. Nothing is pickled.

Each top-level key is its own field under ``data``, so a save sends only the
keys that changed (``$set`` / ``$unset``) and two requests that change different
keys of one session do not undo each other's work. Field names are escaped
because MongoDB gives ``.`` and a leading ``$`` a meaning of their own.
"""

from __future__ import annotations

import json
import re
import typing as t
from urllib.parse import quote
from urllib.parse import unquote

from flask.json.tag import TaggedJSONSerializer

from .exceptions import SessionDataError
from .exceptions import SessionTooLarge

_serializer = TaggedJSONSerializer()
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_key(key: str) -> str:
    if key == "":
        return "%"
    escaped = (
        key.replace("%", "%25")
        .replace(".", "%2E")
        .replace("$", "%24")
        .replace("\x00", "%00")
    )
    # A lone surrogate (which Flask's cookie session stores, JSON-escaped)
    # cannot be encoded in BSON: store its UTF-8 "surrogatepass" bytes, %-escaped.
    return _SURROGATE.sub(
        lambda m: quote(m.group().encode("utf-8", "surrogatepass")), escaped
    )


def unescape_key(field: str) -> str:
    if field == "%":
        return ""
    return unquote(field, errors="surrogatepass")


def dump_value(key: str, value: t.Any) -> str:
    try:
        return _serializer.dumps(value)
    # RecursionError: a value nested too deeply (or one that contains itself).
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise SessionDataError(
            f"The session value for key {key!r} cannot be stored: {e}. Store only"
            " the types Flask's session supports (dict, list, tuple, bytes, str,"
            " numbers, bool, None, datetime, UUID, Markup).",
            key=key,
        ) from e


#: Types whose values cannot change in place (exact types, not subclasses).
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
_MISSING = object()


def dump_data(
    data: t.Mapping[str, t.Any],
    max_size: int | None,
    loaded: tuple[t.Mapping[str, t.Any], t.Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The stored form of a whole session. Raises :exc:`SessionDataError` naming
    the first key whose value cannot be stored, or :exc:`SessionTooLarge`.

    :param loaded: the values the session was loaded with and the stored texts
        they were loaded from. A value that is still the very object loaded, of
        a type that cannot change in place, keeps its text: only what may have
        changed is serialised again.
    """
    values, texts = loaded if loaded is not None else ({}, {})
    stored: dict[str, str] = {}
    size = 0
    for key, value in data.items():
        if not isinstance(key, str):
            raise SessionDataError(
                f"Session keys must be strings, got {key!r}.", key=repr(key)
            )
        field = escape_key(key)
        if (
            type(value) in _IMMUTABLE
            and values.get(key, _MISSING) is value
            and field in texts
        ):
            text = texts[field]
        else:
            text = dump_value(key, value)
        stored[field] = text
        size += len(field) + len(text.encode("utf-8", "surrogatepass"))
    if max_size is not None and size > max_size:
        raise SessionTooLarge(size, max_size)
    return stored


def load_data(stored: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The session contents of a stored ``data`` field. Raises ``ValueError`` for
    anything this module did not write."""
    data: dict[str, t.Any] = {}
    for field, text in stored.items():
        if not isinstance(field, str) or not isinstance(text, str):
            raise ValueError("stored session field is not a string")
        # The standard library parses JSON as the app's provider would, minus a
        # lookup of the app per key (a third of a read's CPU); untag restores
        # Flask's tagged types, as the cookie session does.
        data[unescape_key(field)] = json.loads(text, object_hook=_serializer.untag)
    return data
