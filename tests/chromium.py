"""Headless Chromium (Debian's ``chromium``) for tests that check what a person would see."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# No network, no first-run or background services: this machine has no internet.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SKIP_REASON = "chromium is not installed (Debian: apt-get install chromium); cannot check the HTML renders"


def chromium_command(profile: Path) -> list[str]:
    assert CHROMIUM is not None
    return [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM Chromium builds for ``page`` (after parsing and layout)."""
    done = subprocess.run([*chromium_command(profile), "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout
