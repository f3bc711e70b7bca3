#!/usr/bin/env bash
# Set up, then run the test suite with the environment setup.sh installed into (its scripts
# directory first on PATH), on one pytest-xdist worker per core, at most four and at most one per
# 8 GiB of memory (SEMISEG_TEST_WORKERS sets the number; 0 runs the suite in this one process).
# Extra arguments go to pytest (e.g. -m "not slurm", or -n 0 to override the workers).
# tests/conftest.py groups the tests so that each workflow build and SLURM cluster is made once,
# on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python_env.sh
export PATH="$SEMISEG_BIN:$PATH"
# One worker per core, at most four, and at most one per 8 GiB of memory (two smoke builds at once
# peak near 15 GB): a quota of the cgroup (cpu.max) counts as the cores it allows.
cores=$(nproc 2>/dev/null || echo 1)
if [ -r /sys/fs/cgroup/cpu.max ]; then
  read -r quota period < /sys/fs/cgroup/cpu.max || true
  if [ -n "${quota:-}" ] && [ "$quota" != max ] && [ "${period:-0}" -gt 0 ]; then
    allowed=$(( (quota + period - 1) / period ))
    if [ "$allowed" -lt "$cores" ]; then cores=$allowed; fi
  fi
fi
memory_gib=$(awk '/^MemTotal:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 8)
by_memory=$(( memory_gib / 8 > 0 ? memory_gib / 8 : 1 ))
workers=$(( cores < 4 ? cores : 4 ))
workers=$(( workers < by_memory ? workers : by_memory ))
workers=${SEMISEG_TEST_WORKERS:-$workers}
exec "$SEMISEG_PY" -m pytest -ra --durations=15 -n "$workers" --dist loadgroup --no-loadscope-reorder "$@"
