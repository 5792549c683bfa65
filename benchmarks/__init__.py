"""Benchmarks: database operations and time per request, side by side.

Run ``python -m benchmarks`` (``--help`` for options). One process, one run, the
same Flask + Flask-Login app on three session backends:

- Flask's default cookie session (no database);
- Flask-Session 0.8's MongoDB backend;
- single_session.

Both server-side backends use mongomock unless ``MONGODB_URI`` names a real
server. Results are printed and written to ``benchmarks/results/latest.md`` and
``latest.json``. ``python -m benchmarks.profile`` profiles single_session's hot
path (an ordinary authenticated GET).

Needs ``flask-session>=0.8,<0.9`` and ``mongomock`` besides the library itself.
"""
