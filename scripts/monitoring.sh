#!/usr/bin/env bash
# Make sure promtool, amtool and the Prometheus server are on PATH for the monitoring tests
# (config/prometheus, config/alertmanager; config/grafana's dashboards are checked against a real
# Prometheus scraping a daemon), and a compose that can check docker-compose.yml (the docker CLI's
# compose plugin, or else Debian's `docker-compose`, v1 on Debian 12): install Debian's
# `prometheus`, `prometheus-alertmanager` and `docker-compose` when one is missing and we are
# root. Exits non-zero if one is still not available.
set -uo pipefail

have_compose() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}
have_all() {
    command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 &&
        command -v prometheus >/dev/null 2>&1 && have_compose
}
if have_all; then
    echo "monitoring: promtool, amtool, prometheus and a compose present" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "monitoring: promtool/amtool/prometheus/docker-compose missing and not root: install Debian's prometheus, prometheus-alertmanager and docker-compose yourself" >&2
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager $(have_compose || echo docker-compose) >/dev/null
if ! have_all; then
    echo "monitoring: installing prometheus, prometheus-alertmanager and docker-compose failed" >&2
    exit 1
fi
echo "monitoring: installed promtool, amtool, prometheus and a compose" >&2
