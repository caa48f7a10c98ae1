"""Debian's Chromium, headless under Playwright, as the page tests and the overview check launch it."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# No sandbox: the tests run as root in a container; nothing reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
