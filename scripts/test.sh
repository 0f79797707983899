#!/usr/bin/env bash
# Set up (first run only), make sure PostgreSQL and Redis are up, and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k bus -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
scripts/services.sh || echo "test: services.sh could not start every service; tests that need one will say so" >&2
scripts/browser.sh || echo "test: browser.sh could not install chromium; the browser tests will say so" >&2
scripts/monitoring.sh || echo "test: monitoring.sh could not install promtool, amtool, prometheus or docker-compose; the monitoring, dashboard and compose tests will say so" >&2
export QT_DATA_DIR="${QT_DATA_DIR:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/python -m pytest "$@"
