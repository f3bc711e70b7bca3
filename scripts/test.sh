#!/usr/bin/env bash
# Set up, then run the test suite. Extra arguments go to pytest (e.g. -m "not slurm").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest -ra --durations=15 "$@"
