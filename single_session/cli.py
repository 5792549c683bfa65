"""``flask single-session``: commands for operators."""

from __future__ import annotations

from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from .extension import get_state

single_session_cli = AppGroup(
    "single-session",
    help="Inspect and end server-side sessions kept by single_session.",
)


@single_session_cli.command("list")
@click.argument("user_id")
def list_sessions(user_id: str) -> None:
    """List the live sessions of USER_ID, newest login first."""
    sessions = get_state(current_app).extension.sessions_of(user_id)
    if not sessions:
        click.echo(f"No live sessions for user {user_id!r}.")
        return
    for info in sessions:
        click.echo(
            f"{info.handle}  login {_when(info.login_at)}  last seen"
            f" {_when(info.last_seen)}  ip {info.ip or '-'}"
            f"{'  remembered' if info.remembered else ''}  {info.user_agent or '-'}"
        )


@single_session_cli.command("logout-everywhere")
@click.argument("user_id")
def logout_everywhere_command(user_id: str) -> None:
    """End every session of USER_ID, remember-me included."""
    count = get_state(current_app).extension.logout_everywhere(user_id)
    click.echo(f"Ended {count} session(s) of user {user_id!r}.")


@single_session_cli.command("stats")
def stats() -> None:
    """Count sessions: live, bound to a user, anonymous, and tombstones."""
    counts = get_state(current_app).store.counts()
    for name in ("sessions", "bound", "anonymous", "tombstones"):
        click.echo(f"{name}: {counts[name]}")


@single_session_cli.command("create-indexes")
def create_indexes() -> None:
    """Create the indexes single_session needs (safe to run again). The unique
    slot index of SINGLE_SESSION_ON_LIMIT="deny" only when that is configured."""
    store = get_state(current_app).store
    store.ensure_indexes(slots=current_app.config["SINGLE_SESSION_ON_LIMIT"] == "deny")
    click.echo(f"Indexes ready on {store.collection.full_name}.")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
