#!/usr/bin/env bash
# make demo: the three entry scripts on the shipped weights, scored, with a summary table (scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py "$@"
