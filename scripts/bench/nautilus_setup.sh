#!/usr/bin/env bash
# Create ./.venv-nautilus (Python >= 3.12) with a pinned NautilusTrader, for the peer benchmark
# scripts/bench/nautilus_ema.py. Safe to run again: when the pinned versions are already in
# place it only checks a stamp file and prints the venv's python.
#
# Prints the venv's python path (last line of stdout) on success. Exits 1 with one line on
# stderr when no Python >= 3.12 exists here, 2 when the install fails.
#
# NautilusTrader 1.231.0 (the newest on PyPI when pinned) needs Python >= 3.12; it installs from
# a manylinux wheel (no Rust build). pandas is pinned to 2.3.3, the oldest NautilusTrader allows
# (>=2.3.3,<4): under pandas 3 the Portfolio's per-closed-position PnL record (a pd.concat onto a
# growing Series, now with an Arrow string index) made engine.run() ~50% slower on
# binance-spot-1h-2024 (65 s against 43 s, same box, same minute); pandas 3 also breaks
# BarDataWrangler ("buffer source array is read-only"), which nautilus_ema.py avoids anyway.
set -euo pipefail
cd "$(dirname "$0")/../.."

NAUTILUS_VERSION="1.231.0"
PANDAS_VERSION="2.3.3"
spec="nautilus_trader==${NAUTILUS_VERSION} pandas==${PANDAS_VERSION}"
venv=".venv-nautilus"
stamp="$venv/.installed-nautilus_trader-${NAUTILUS_VERSION}-pandas-${PANDAS_VERSION}"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ]; then
    echo "$PWD/$venv/bin/python"
    exit 0
fi

is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

python=""
# pyenv's own interpreters first (3.12 before 3.13: NautilusTrader's wheels cover both), then PATH.
if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for minor in 3.12 3.13 3.14; do
        for candidate in $(ls -d "$root"/versions/$minor.*/bin/python 2>/dev/null | sort -V -r); do
            if is_312 "$candidate"; then python="$candidate"; break 2; fi
        done
    done
fi
if [ -z "$python" ]; then
    for candidate in python3.12 python3.13 python3.14 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && is_312 "$candidate"; then
            python="$(command -v "$candidate")"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "nautilus_setup: no Python >= 3.12 found (pyenv versions 3.12.*/3.13.* or python3.12+ on PATH); NautilusTrader ${NAUTILUS_VERSION} needs one" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ] || ! is_312 "$venv/bin/python" ||
    [ "$("$venv/bin/python" -c 'import sys; print(sys.version_info[:2])')" != "$("$python" -c 'import sys; print(sys.version_info[:2])')" ]; then
    rm -rf "$venv"
    echo "nautilus_setup: creating $venv with $python ($("$python" --version 2>&1))" >&2
    "$python" -m venv "$venv"
fi

echo "nautilus_setup: installing $spec into $venv (first run takes a minute or two)" >&2
# --only-binary: a source build needs a Rust toolchain and takes far longer than we accept here.
# shellcheck disable=SC2086  # $spec is two requirements
if ! "$venv/bin/python" -m pip install -q --only-binary=nautilus_trader,pandas $spec >&2; then
    echo "nautilus_setup: pip could not install $spec from a wheel for $("$venv/bin/python" --version 2>&1)" >&2
    exit 2
fi
if ! "$venv/bin/python" -c 'import sys, nautilus_trader, pandas; sys.exit((nautilus_trader.__version__, pandas.__version__) != tuple(sys.argv[1:]))' "$NAUTILUS_VERSION" "$PANDAS_VERSION" >&2; then
    echo "nautilus_setup: $spec installed but does not import as those versions" >&2
    exit 2
fi
rm -f "$venv"/.installed-*
"$venv/bin/python" -m pip freeze >"$stamp"
echo "$PWD/$venv/bin/python"
