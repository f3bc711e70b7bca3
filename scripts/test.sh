#!/usr/bin/env bash
# Set up, then run the test suite with the environment setup.sh installed into (its scripts
# directory first on PATH). Extra arguments go to pytest (e.g. -m "not slurm").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python_env.sh
export PATH="$SEMISEG_BIN:$PATH"
exec "$SEMISEG_PY" -m pytest -ra --durations=15 "$@"
