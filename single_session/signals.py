"""Signals sent by single_session. Connect with ``signal.connect(func, app)``."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent when a request arrives with the cookie of a session that was revoked
#: (by a later login, :func:`~single_session.logout_everywhere` or
#: :meth:`~single_session.SingleSession.revoke`). The sender is the app; the
#: keyword arguments are ``handle`` (the revoked session's handle), ``user_id``
#: (the user it belonged to), ``reason`` (``"signed_in_elsewhere"``,
#: ``"logout_everywhere"``, ``"logout_others"``, ``"revoked"``,
#: ``"remember_token_reused"`` or ``"logged_out"``) and
#: ``at`` (when it was revoked). The request continues with a fresh anonymous
#: session.
session_revoked = _signals.signal("session-revoked")
