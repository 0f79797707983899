#!/usr/bin/env bash
# Make sure a headless-capable Chromium is on PATH for the browser tests (the HTML backtest
# report is opened in it): install Debian's `chromium` when it is missing and we are root.
# Exits non-zero if chromium is still not available.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "browser: $(command -v chromium) present" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: chromium missing and not root: install Debian's chromium yourself" >&2
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
if ! command -v chromium >/dev/null 2>&1; then
    echo "browser: installing chromium failed" >&2
    exit 1
fi
echo "browser: installed $(command -v chromium)" >&2
