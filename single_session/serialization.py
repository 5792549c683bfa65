"""How session contents are stored: one tagged-JSON string per key.

Flask's :class:`~flask.json.tag.TaggedJSONSerializer` is what the cookie session
uses, so every type that survives Flask's cookie session (dict, list, tuple,
bytes, str, numbers, bool, None, datetime, UUID, Markup) survives here too,
equal and of the same type. The stored text is the very text Flask's serializer
writes (a test checks this), made with less work per value. Nothing is pickled.

Each top-level key is its own field under ``data``, so a save sends only the
keys that changed (``$set`` / ``$unset``) and two requests that change different
keys of one session do not undo each other's work (see :func:`update_fits` for
the one exception). Field names are escaped
because MongoDB gives ``.`` and a leading ``$`` a meaning of their own.
"""

from __future__ import annotations

import json
import re
import typing as t
from urllib.parse import quote
from urllib.parse import unquote

from flask import current_app
from flask import has_app_context
from flask.json.provider import DefaultJSONProvider
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import session_json_serializer

from .exceptions import SessionDataError
from .exceptions import SessionTooLarge

#: Flask's session serializer, the cookie session's: the tags an app registers
#: on it (``app.session_interface.serializer.register(...)``, as Flask
#: documents) apply here too.
_serializer = session_json_serializer
_FLASK_TAG_COUNT = len(TaggedJSONSerializer.default_tags)
#: Types Flask's tagger passes through as they are (exact types: a subclass
#: such as Markup may be tagged).
_UNTAGGED = frozenset({str, int, float, bool, type(None)})


def _default(value: t.Any) -> t.Any:
    """The JSON form of a value JSON has none for, as the app's JSON provider
    makes it for the cookie session (Flask's: dates, decimals, dataclasses)."""
    provider = current_app.json if has_app_context() else None
    default = getattr(provider, "default", DefaultJSONProvider.default)
    return default(value)


# The text Flask's default JSON provider writes for the cookie session (sorted
# keys, ASCII only, compact); built once.
_encoder = json.JSONEncoder(
    ensure_ascii=True,
    sort_keys=True,
    separators=(",", ":"),
    default=_default,
)
_decoder = json.JSONDecoder(object_hook=_serializer.untag)
_plain_decoder = json.JSONDecoder()
_NEEDS_ESCAPE = re.compile("[%.$\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_key(key: str) -> str:
    if key == "":
        return "%"
    if _NEEDS_ESCAPE.search(key) is None:
        return key
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
    if "%" not in field:
        return field
    if field == "%":
        return ""
    return unquote(field, errors="surrogatepass")


def _flask_tags_only() -> bool:
    """Whether the serializer has Flask's own tags alone (an app that
    registers its own, at any place in the order, gets them tried on every
    value, as Flask's cookie session tries them)."""
    return len(_serializer.order) == _FLASK_TAG_COUNT


def _tag(value: t.Any) -> t.Any:
    """What Flask's ``TaggedJSONSerializer.tag`` returns, without trying each of
    its eight tags on every string and number (most of the cost of a write):
    plain dicts, lists and scalars are handled here, anything else by Flask."""
    cls = type(value)
    if cls in _UNTAGGED:
        return value
    if cls is dict and not (len(value) == 1 and next(iter(value)) in _serializer.tags):
        return {k: _tag(v) for k, v in value.items()}
    if cls is list:
        return [_tag(v) for v in value]
    return _serializer.tag(value)


def dump_value(key: str, value: t.Any) -> str:
    try:
        tagged = _tag(value) if _flask_tags_only() else _serializer.tag(value)
        return _encoder.encode(tagged)
    # RecursionError: a value nested too deeply (or one that contains itself).
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise SessionDataError(
            f"The session value for key {key!r} cannot be stored: {e}. Store only"
            " the types Flask's session supports (dict, list, tuple, bytes, str,"
            " numbers, bool, None, datetime, UUID, Markup).",
            key=key,
        ) from e


#: Types whose values cannot change in place (exact types, not subclasses).
_IMMUTABLE = _UNTAGGED | {bytes}


def may_change_in_place(values: t.Iterable[t.Any]) -> bool:
    """Whether one of ``values`` could have been changed in place since it was
    serialised (a list, a dict, ...), so that only serialising it again tells."""
    return any(type(value) not in _IMMUTABLE for value in values)


#: For each key of a session: a value, and its field name and text.
Entries = dict[str, tuple[t.Any, str, str]]

#: The most a session's contents may take whatever ``SINGLE_SESSION_MAX_SIZE``
#: says (``None`` included): MongoDB refuses a document over 16 MiB (with an
#: error that is no database failure), and the document holds more than the
#: contents. The 1 MiB left covers its other fields and BSON's bytes per key.
MONGODB_MAX_DATA = 15 * 1024 * 1024
#: BSON's bytes around each stored key: type, the name's end, the string's
#: length and end.
_PER_FIELD = 7


class Dumped(t.NamedTuple):
    """A session's stored form (field name to text), its entries, and its
    size as :data:`SINGLE_SESSION_MAX_SIZE` counts it."""

    stored: dict[str, str]
    entries: Entries
    size: int


def dump_data(
    data: t.Mapping[str, t.Any],
    max_size: int | None,
    known: Entries | None = None,
) -> Dumped:
    """The stored form of a whole session, its entries and size. Raises
    :exc:`SessionDataError` naming the first key whose value cannot be
    stored, or :exc:`SessionTooLarge`.

    :param known: entries from :func:`load_data` or an earlier
        :func:`dump_data`. A value that is still the very object of an entry,
        of a type that cannot change in place, keeps that entry's text: only
        what may have changed is serialised again.
    """
    known = known or {}
    stored: dict[str, str] = {}
    entries: Entries = {}
    size = 0
    for key, value in data.items():
        entry = known.get(key)
        if entry is None or entry[0] is not value or type(value) not in _IMMUTABLE:
            if not isinstance(key, str):
                raise SessionDataError(
                    f"Session keys must be strings, got {key!r}.", key=repr(key)
                )
            entry = (value, escape_key(key), dump_value(key, value))
        entries[key] = entry
        field = entry[1]
        stored[field] = entry[2]
        # The texts are ASCII (load_data accepts no others); a field may not be.
        size += (len(field) if field.isascii() else len(field.encode())) + len(entry[2])
    _check_size(size, len(stored), max_size)
    return Dumped(stored, entries, size)


def check_size(dumped: Dumped, max_size: int | None) -> None:
    """Raise :exc:`SessionTooLarge` if a session :func:`dump_data` dumped
    without a limit is over ``max_size``."""
    _check_size(dumped.size, len(dumped.stored), max_size)


def _check_size(size: int, fields: int, max_size: int | None) -> None:
    if max_size is not None and size > max_size:
        raise SessionTooLarge(size, max_size)
    size += _PER_FIELD * fields
    if size > MONGODB_MAX_DATA:
        raise SessionTooLarge(size, MONGODB_MAX_DATA, setting=False)


def same_value(old: str | None, new: str | None) -> bool:
    """Whether two stored texts (``None``: no such key) hold the same value. A
    text need not be the one its value, loaded, gives again: a dict with int
    keys is stored with them as strings, whose order differs. Such a text is
    no change."""
    if old == new:
        return True
    if old is None or new is None or len(old) != len(new) or "{" not in old:
        return False  # (only an object's keys come back in another order)
    try:
        (value,) = load_data({"": old})[0].values()
        return dump_value("", value) == new
    except (ValueError, TypeError, RecursionError, SessionDataError):
        return False


def update_fits(set_: t.Mapping[str, str], unset: t.Mapping[str, t.Any]) -> bool:
    """Whether an update of the stored keys one by one (``"data.<field>"``,
    five bytes longer than the field) stays within what MongoDB takes in one
    update. A session within :data:`MONGODB_MAX_DATA` may not, when many keys
    change at once: then its whole contents are written instead."""
    size = sum(map(len, set_.values()))
    for fields in (set_, unset):
        for field in fields:
            size += len(field) if field.isascii() else len(field.encode())
    return size + _PER_FIELD * (len(set_) + len(unset)) <= MONGODB_MAX_DATA


def load_data(stored: t.Mapping[str, t.Any]) -> tuple[dict[str, t.Any], Entries]:
    """The session contents of a stored ``data`` field, and their entries (for
    :func:`dump_data`). Raises ``ValueError`` (or ``TypeError``) for anything
    this module did not write."""
    fields = list(stored)
    texts = list(stored.values())
    # One parse for the whole session rather than one per key: the texts, each
    # a JSON value, joined into one array (join raises TypeError for a text
    # that is not a string). The standard library parses JSON as the app's
    # provider would; untag restores Flask's tagged types, as the cookie
    # session does. Every key of Flask's tags starts with a space, so without
    # a quote followed by a space there is no tagged value to look at.
    text = "[" + ",".join(texts) + "]"
    if not text.isascii():
        raise ValueError("a stored session value is not ASCII JSON")
    tagged = '" ' in text or not _flask_tags_only()
    try:
        values = (_decoder if tagged else _plain_decoder).decode(text)
    except (ValueError, RecursionError):
        raise
    except Exception as e:
        # Flask's tags take what they wrote: another value inside one fails
        # in its own way (an int for a date: AttributeError).
        raise ValueError(f"a stored value is not what its tag holds: {e}") from e
    if len(values) != len(fields):
        raise ValueError("a stored session value is not one JSON value")
    data: dict[str, t.Any] = {}
    entries: Entries = {}
    for field, text, value in zip(fields, texts, values):
        key = unescape_key(field)
        data[key] = value
        entries[key] = (value, field, text)
    return data, entries
