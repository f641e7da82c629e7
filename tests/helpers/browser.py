"""Debian's Chromium, headless: found, or the test skipped (failed where CI requires it)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_BROWSER = os.environ.get("LANWORKER_REQUIRE_BROWSER") == "1"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if REQUIRE_BROWSER:
            pytest.fail("LANWORKER_REQUIRE_BROWSER=1 but chromium is not installed (scripts/browser.sh)")
        pytest.skip("chromium is not installed; run scripts/browser.sh as root")
    return found
