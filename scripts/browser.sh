#!/usr/bin/env bash
# Makes a headless Chromium available for the status-view tests, where this machine allows
# it: as root on Debian it installs the `chromium` package. Elsewhere it only reports; the
# browser tests then skip with a reason (or fail when LANWORKER_REQUIRE_BROWSER=1, as in CI).
set -u
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: no chromium and cannot install it here; browser tests will skip" >&2
    exit 0
fi
echo "browser: installing chromium" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "browser: chromium did not install" >&2
exit 0
