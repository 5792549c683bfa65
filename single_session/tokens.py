"""Session ids and remember-me tokens: how they are made, signed and hashed."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import typing as t

from itsdangerous import BadSignature
from itsdangerous import Signer
from itsdangerous.signer import SigningAlgorithm

if t.TYPE_CHECKING:
    from flask import Flask

#: 32 random bytes, URL-safe base64 without padding: 43 characters.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
#: A signed value is never longer than this; longer cookies are rejected
#: before any work is done on them.
_MAX_SIGNED_LENGTH = 200
#: How many verified cookie values a signer remembers.
_VERIFIED_MAX = 4096


def new_id() -> str:
    """A new random 256-bit secret, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_id(secret: str) -> str:
    """What the database stores in place of a secret: its SHA-256, hex encoded.

    The ids are 256-bit random values, so an unsalted fast hash is enough: read
    access to the collection does not reveal a usable id.
    """
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class _HMACSHA256(SigningAlgorithm):
    """itsdangerous' HMAC-SHA256 (the same signatures), computed by the standard
    library's one-shot ``hmac.digest`` rather than through an ``hmac.HMAC``
    object: a sixth of the calls."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha256")


class IdSigner:
    """Signs and checks random ids with the app's ``SECRET_KEY`` and
    ``SECRET_KEY_FALLBACKS`` (itsdangerous key rotation: the newest key signs,
    every key verifies)."""

    def __init__(self, keys: list[str | bytes], salt: str, parts: int = 1) -> None:
        self._signer = Signer(
            keys,  # type: ignore[arg-type]
            salt=salt,
            digest_method=hashlib.sha256,
            algorithm=_HMACSHA256(),
        )
        self._parts = parts
        #: Old keys still verify: a cookie may be signed with one of them.
        self.rotating = len(keys) > 1
        # A device sends the same cookie on every request: its signature is
        # checked once (a third of an ordinary request's own CPU), then looked
        # up. Only values this signer made or verified get in; a new set of
        # keys gets a new signer. Emptied when full, which is only a miss.
        self._verified: dict[str, tuple[str, ...]] = {}

    def sign(self, *ids: str) -> str:
        value = self._signer.sign(".".join(ids)).decode("ascii")
        self._remember(value, ids)
        return value

    def unsign(self, value: str) -> tuple[str, ...] | None:
        """The ids in a signed cookie value, or ``None`` if it is not one of ours."""
        ids = self._verified.get(value)
        if ids is not None:
            return ids
        if not value or len(value) > _MAX_SIGNED_LENGTH or not value.isascii():
            return None
        try:
            payload = self._signer.unsign(value).decode("ascii")
        except (BadSignature, UnicodeDecodeError):
            return None
        ids = tuple(payload.split("."))
        if len(ids) != self._parts or not all(_ID_PATTERN.fullmatch(i) for i in ids):
            return None
        self._remember(value, ids)
        return ids

    def _remember(self, value: str, ids: tuple[str, ...]) -> None:
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified = {}
        self._verified[value] = ids


class SignerCache:
    """Keeps one signer per set of keys, so a request does not build a new one."""

    def __init__(self, salt: str, parts: int = 1) -> None:
        self._salt = salt
        self._parts = parts
        self._cached: tuple[tuple[t.Any, ...], IdSigner] | None = None

    def get(self, app: Flask) -> IdSigner | None:
        if not app.secret_key:
            return None
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
        # itsdangerous wants the keys oldest first and the newest (signing) last.
        keys = (*fallbacks, app.secret_key)
        cached = self._cached
        if cached is not None and cached[0] == keys:
            return cached[1]
        signer = IdSigner(list(keys), self._salt, self._parts)
        self._cached = (keys, signer)
        return signer
