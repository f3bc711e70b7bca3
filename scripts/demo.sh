#!/usr/bin/env bash
# Set up, then build the default target (results/tables/demo.md) on synthetic data, with the
# environment setup.sh installed into (its scripts directory first on PATH: the rules call `semiseg`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python_env.sh
export PATH="$SEMISEG_BIN:$PATH"
exec "$SEMISEG_PY" -m snakemake --cores "${CORES:-2}" "$@"
