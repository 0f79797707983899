#!/usr/bin/env bash
# Set up (first run only) and start the daemon in the foreground. Extra arguments go to
# `quantumtrade run`, e.g. scripts/run.sh --config /path/to/quantumtrade.toml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/quantumtrade run "$@"
