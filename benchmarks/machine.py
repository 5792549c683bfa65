"""What the benchmark ran on."""

from __future__ import annotations

import os
import platform
import typing as t
from importlib import metadata

PACKAGES = (
    "single-session",
    "flask",
    "werkzeug",
    "flask-login",
    "flask-session",
    "itsdangerous",
    "pymongo",
    "mongomock",
    "msgspec",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, t.Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        # How busy the machine was: the times are wall-clock times.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
