#!/usr/bin/env bash
# Problem 2 entry script (see README.md). All logic is in p2_diffusion_acgan/inference.py; extra options pass through.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m p2_diffusion_acgan.inference "$@"
