"""A device's name from its User-Agent: browser and operating system, roughly.

Enough to tell "Firefox on Windows" from "Safari on iOS" on the devices page; a
real app would use a maintained parser (ua-parser) or, better, client hints.
"""

from __future__ import annotations

import re

# Order matters: most browsers also claim to be the ones they grew from
# (Edge and Opera say "Chrome", Chrome says "Safari").
_BROWSERS: list[tuple[str, str]] = [
    ("Edge", r"Edg(?:e|A|iOS)?/(\d+)"),
    ("Opera", r"(?:OPR|Opera)/(\d+)"),
    ("Firefox", r"(?:Firefox|FxiOS)/(\d+)"),
    ("Headless Chrome", r"HeadlessChrome/(\d+)"),
    ("Chromium", r"Chromium/(\d+)"),
    ("Chrome", r"(?:Chrome|CriOS)/(\d+)"),
    ("Safari", r"Version/(\d+)[\d.]* (?:Mobile/\S+ )?Safari/"),
    ("curl", r"curl/(\d+)"),
]

_SYSTEMS: list[tuple[str, str]] = [
    ("Windows", r"Windows NT"),
    ("Android", r"Android"),
    ("iPadOS", r"iPad"),
    ("iOS", r"iPhone|iPod"),
    ("ChromeOS", r"CrOS"),
    ("macOS", r"Mac OS X|Macintosh"),
    ("Linux", r"Linux|X11"),
]


def describe(user_agent: str | None) -> tuple[str, str]:
    """``(browser, system)`` for a User-Agent string, such as
    ``("Firefox 128", "Windows")``; ``"Unknown browser"`` and
    ``"unknown system"`` when nothing matches."""
    text = user_agent or ""
    browser = "Unknown browser"
    for name, pattern in _BROWSERS:
        match = re.search(pattern, text)
        if match:
            browser = f"{name} {match.group(1)}"
            break
    system = "unknown system"
    for name, pattern in _SYSTEMS:
        if re.search(pattern, text):
            system = name
            break
    return browser, system
