#!/usr/bin/env bash
# Install semiseg and its dependencies into the current Python (a venv is recommended).
# torch is installed first and pinned: an unpinned `torch` would pull several GB of CUDA
# packages on a CPU machine. On a GPU machine, install the CUDA build of torch first and set
# SEMISEG_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${SEMISEG_TORCH:-}" != skip ]; then
  "$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install -q "torch==${SEMISEG_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q -e ".[test]"
