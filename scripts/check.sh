#!/usr/bin/env bash
# Static checks, the same locally and in review: lint, formatting, strict typing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test,dev
.venv/bin/ruff check quantumtrade tests scripts
.venv/bin/ruff format --check quantumtrade tests scripts
.venv/bin/mypy quantumtrade
