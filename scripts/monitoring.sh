#!/usr/bin/env bash
# Make sure promtool, amtool and the Prometheus server are on PATH for the monitoring tests
# (config/prometheus, config/alertmanager; config/grafana's dashboards are checked against a real
# Prometheus scraping a daemon): install Debian's `prometheus` and `prometheus-alertmanager` when
# one is missing and we are root. Exits non-zero if one is still not available.
set -uo pipefail

have_all() {
    command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 &&
        command -v prometheus >/dev/null 2>&1
}
if have_all; then
    echo "monitoring: $(command -v promtool), $(command -v amtool) and $(command -v prometheus) present" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "monitoring: promtool/amtool/prometheus missing and not root: install Debian's prometheus and prometheus-alertmanager yourself" >&2
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
if ! have_all; then
    echo "monitoring: installing prometheus and prometheus-alertmanager failed" >&2
    exit 1
fi
echo "monitoring: installed $(command -v promtool), $(command -v amtool) and $(command -v prometheus)" >&2
