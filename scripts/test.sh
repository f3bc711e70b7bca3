#!/usr/bin/env bash
# Set up, then run the test suite with the environment setup.sh installed into (its scripts
# directory first on PATH), on one pytest-xdist worker per core, at most four (SEMISEG_TEST_WORKERS
# sets the number; 0 runs the suite in this one process). Extra arguments go to pytest (e.g.
# -m "not slurm", or -n 0 to override the workers). tests/conftest.py groups the tests so that each
# workflow build and SLURM cluster is made once, on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python_env.sh
export PATH="$SEMISEG_BIN:$PATH"
cores=$(nproc 2>/dev/null || echo 1)
workers=${SEMISEG_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec "$SEMISEG_PY" -m pytest -ra --durations=15 -n "$workers" --dist loadgroup --no-loadscope-reorder "$@"
