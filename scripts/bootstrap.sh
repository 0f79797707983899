#!/usr/bin/env bash
# Create ./.venv (Python 3.11+) and install QuantumTrade into it, with the extras named in $1
# (e.g. "test"). Safe to run again: pip only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "bootstrap: QuantumTrade needs Python 3.11 or newer (apt-get install python3)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv 2>/dev/null; then
        # Debian ships venv/ensurepip separately.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "bootstrap: installing python3-venv" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf .venv
            "$python" -m venv .venv
        else
            echo "bootstrap: '$python -m venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi

spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing QuantumTrade${extras:+ with [$extras]} into .venv (first run takes a minute)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
    # Compile the numba kernels at install, not at the first start (quantumtrade warmup).
    echo "bootstrap: compiling the numba kernels into numba's cache (about a minute on 2 cores)" >&2
    .venv/bin/quantumtrade warmup >&2
    touch "$stamp"
fi
