#!/usr/bin/env bash
# Set up, then build the default target (results/tables/demo.md) on synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m snakemake --cores "${CORES:-2}" "$@"
