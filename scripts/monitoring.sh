#!/usr/bin/env bash
# Make sure promtool and amtool are on PATH for the monitoring-config tests (config/prometheus,
# config/alertmanager): install Debian's `prometheus` and `prometheus-alertmanager` when either
# is missing and we are root. Exits non-zero if either is still not available.
set -uo pipefail

if command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then
    echo "monitoring: $(command -v promtool) and $(command -v amtool) present" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "monitoring: promtool/amtool missing and not root: install Debian's prometheus and prometheus-alertmanager yourself" >&2
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
    echo "monitoring: installing prometheus and prometheus-alertmanager failed" >&2
    exit 1
fi
echo "monitoring: installed $(command -v promtool) and $(command -v amtool)" >&2
