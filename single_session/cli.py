"""``flask single-session``: commands for operators."""

from __future__ import annotations

import functools
import typing as t
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from .config import timeout as config_timeout
from .exceptions import SessionStoreUnavailable
from .exceptions import SingleSessionError
from .extension import _State
from .extension import get_state
from .store import INDEX_BUILD_TIMEOUT
from .store import IndexBuildTimeout
from .store import unusable

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

single_session_cli = AppGroup(
    "single-session",
    help="Inspect and end server-side sessions kept by single_session.",
)


def _clear_errors(command: F) -> F:
    """An operator gets one line saying what went wrong, not a traceback."""

    @functools.wraps(command)
    def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return command(*args, **kwargs)
        except IndexBuildTimeout as e:
            raise click.ClickException(
                f"The index {e.index!r} was not built within {e.seconds:g} s:"
                f" {_first_line(e.__cause__ or e)}"
            ) from e
        except SessionStoreUnavailable as e:
            cause = e.__cause__
            why = f": {type(cause).__name__}: {_first_line(cause)}" if cause else ""
            if cause is not None and unusable(cause):
                raise click.ClickException("MongoDB cannot be used" + why) from e
            timeout = config_timeout(current_app.config)
            raise click.ClickException(
                "MongoDB could not be reached, or did not answer within"
                f" SINGLE_SESSION_TIMEOUT ({timeout} s)" + why
            ) from e
        except SingleSessionError as e:  # (an index in the way, say)
            raise click.ClickException(str(e)) from e

    return t.cast(F, run)


def _state() -> _State:
    try:
        return get_state(current_app)
    except RuntimeError as e:  # the app does not use the extension
        raise click.ClickException(str(e)) from e


@single_session_cli.command("list")
@click.argument("user_id")
@_clear_errors
def list_sessions(user_id: str) -> None:
    """List the live sessions of USER_ID, newest login first."""
    sessions = _state().extension.sessions_of(user_id)
    if not sessions:
        click.echo(f"No live sessions for user {user_id!r}.")
        return
    for info in sessions:
        click.echo(
            f"{info.handle}  login {_when(info.login_at)}  last seen"
            f" {_when(info.last_seen)}  ip {_shown(info.ip)}"
            f"{'  remembered' if info.remembered else ''}  {_shown(info.user_agent)}"
        )


@single_session_cli.command("logout-everywhere")
@click.argument("user_id")
@_clear_errors
def logout_everywhere_command(user_id: str) -> None:
    """End every session of USER_ID, remember-me included."""
    count = _state().extension.logout_everywhere(user_id)
    click.echo(f"Ended {count} session(s) of user {user_id!r}.")


@single_session_cli.command("stats")
@_clear_errors
def stats() -> None:
    """Count sessions: live, bound to a user, anonymous, and tombstones."""
    counts = _state().store.counts()
    for name in ("sessions", "bound", "anonymous", "tombstones"):
        click.echo(f"{name}: {counts[name]}")


@single_session_cli.command("create-indexes")
@_clear_errors
def create_indexes() -> None:
    """Create the indexes single_session needs (safe to run again). The unique
    slot index of SINGLE_SESSION_ON_LIMIT="deny" only when that is configured."""
    store = _state().store
    store.ensure_indexes(
        slots=current_app.config["SINGLE_SESSION_ON_LIMIT"] == "deny",
        # (A build over a large collection takes longer than a request may.)
        build_timeout=max(store.timeout, INDEX_BUILD_TIMEOUT),
    )
    click.echo(f"Indexes ready on {store.collection.full_name}.")


def _first_line(error: BaseException, limit: int = 200) -> str:
    line = str(error).splitlines()[0] if str(error) else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _shown(value: str | None) -> str:
    """What a client sent (its User-Agent), safe for a terminal: control
    characters (escape sequences, line breaks) are shown escaped."""
    if not value:
        return "-"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
