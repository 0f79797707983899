#!/usr/bin/env bash
# Set up (first run only), compile the numba kernels into numba's cache (once per install or
# kernel change: about a minute on 2 cores; a second when cached) and start the daemon in the
# foreground. Extra arguments go to `quantumtrade run`, e.g.
# scripts/run.sh --config /path/to/quantumtrade.toml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "run: warming up the numba kernels (quantumtrade warmup; NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-unset})" >&2
.venv/bin/quantumtrade warmup >&2
exec .venv/bin/quantumtrade run "$@"
