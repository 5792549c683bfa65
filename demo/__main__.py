"""``python -m demo [--port N]``: serve the demo on http://127.0.0.1:5000 (or N)."""

from __future__ import annotations

import argparse
import sys

from single_session import ConfigurationError

from .app import create_app
from .app import DemoError
from .app import describe_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=(
            "single_session demo: sign in as the same user in two browsers."
            " Environment: MONGODB_URI, SINGLE_SESSION_MAX_SESSIONS (a number or"
            " 'none'), SINGLE_SESSION_ON_LIMIT ('evict' or 'deny')."
        ),
    )
    parser.add_argument(
        "--port", type=int, default=5000, help="port to serve on (default 5000)"
    )
    args = parser.parse_args(argv)
    try:
        app = create_app()
    except (DemoError, ConfigurationError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    policy = describe_policy(app.config)
    print(app.config["DEMO_STORE"])
    print(f"policy: {policy['long']} ({policy['env']})")
    print(
        f"open http://127.0.0.1:{args.port}/ in two browsers (or a normal and a private"
        " window) and sign in as alice, password demo, in both",
        flush=True,
    )
    # Flask's development server: fine for a demo on your own machine, never
    # for anything else. Threaded; see create_app for the in-memory store.
    app.run(host="127.0.0.1", port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
