#!/usr/bin/env bash
# Install semiseg, its dependencies and pytest into the environment scripts/python_env.sh names:
# the virtual or conda environment $PYTHON (default python3) runs in, or else the project's own,
# .venv/, made here on the first run. Prints one line saying which.
#
# .venv/ is made with `python -m venv`, and sees the packages already installed in that Python
# (a torch build, say) unless the Python is externally managed (PEP 668: a distribution's own,
# whose packages belong to its package manager).
#
# torch is installed first, when the environment has none, pinned to one release:
#   SEMISEG_TORCH_VERSION=2.13.0   the release
#   SEMISEG_TORCH_INDEX=URL        the index to take it from: from PyPI the Linux wheel is the CUDA
#                                  build (several GB of nvidia-* packages); the CPU build is at
#                                  https://download.pytorch.org/whl/cpu
#   SEMISEG_TORCH=skip             leave torch alone (install your own build into the environment
#                                  first, e.g. a CUDA one for your driver)
#
# A second run installs nothing while the environment still holds this checkout's semiseg and
# pyproject.toml and the torch request are unchanged (a stamp, semiseg-setup.stamp, in the
# environment's directory records them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh

if [ -n "$SEMISEG_VENV" ]; then
  if [ -e .venv ] && [ ! -x .venv/bin/python ]; then
    echo "setup.sh: .venv/ holds no working Python (was the Python it was made from removed?):" \
         "remove it (rm -rf .venv) and run again" >&2
    exit 1
  fi
  if [ ! -e .venv ]; then
    if ! "$SEMISEG_BASE_PY" -c 'import venv, ensurepip' 2>/dev/null; then
      package=python${SEMISEG_BASE_VERSION%.*}-venv
      echo "setup.sh: $SEMISEG_BASE_PY (Python $SEMISEG_BASE_VERSION) cannot make the project's" \
           "environment .venv/: its venv module or ensurepip is missing. Install the $package" \
           "package (Debian/Ubuntu: sudo apt install $package, or python3-venv for the default" \
           "python3), or activate a virtual or conda environment of your own, and run again." >&2
      exit 1
    fi
    system_site=--system-site-packages
    [ "$SEMISEG_BASE_MANAGED" = 1 ] && system_site=
    trap 'rm -rf .venv; exit 1' INT TERM
    if ! "$SEMISEG_BASE_PY" -m venv $system_site .venv; then
      rm -rf .venv
      echo "setup.sh: '$SEMISEG_BASE_PY -m venv .venv' failed (above); nothing was installed" >&2
      exit 1
    fi
    trap - INT TERM
  fi
  cfg() { [ ! -f .venv/pyvenv.cfg ] || sed -n "s/^$1 *= *//p" .venv/pyvenv.cfg | head -n 1; }
  made=$(cfg version)
  if [ -n "$made" ] && [ "${made%.*}" != "${SEMISEG_BASE_VERSION%.*}" ]; then
    echo "setup.sh: .venv/ was made with Python $made, not with $SEMISEG_BASE_PY (Python" \
         "$SEMISEG_BASE_VERSION): remove it (rm -rf .venv) to remake it, or set PYTHON to a" \
         "Python ${made%.*}" >&2
    exit 1
  fi
  made_from=$(cfg executable)
  packages=without
  [ "$(cfg include-system-site-packages)" = true ] && packages=with
  where=".venv/, the project's environment (Python $made from ${made_from:-$(cfg home)}, $packages its packages)"
else
  where="the active environment $SEMISEG_ENV (Python $SEMISEG_BASE_VERSION, $SEMISEG_PY)"
fi

torch_request=skip
if [ "${SEMISEG_TORCH:-}" != skip ]; then
  torch_request="torch==${SEMISEG_TORCH_VERSION:-2.13.0}${SEMISEG_TORCH_INDEX:+ from $SEMISEG_TORCH_INDEX}"
fi
# pyproject.toml's hash, and whether semiseg resolves to this checkout (and torch is there)
state=$("$SEMISEG_PY" -I -c '
import hashlib, importlib.util, os, sys
root, torch = sys.argv[1:]
spec = importlib.util.find_spec("semiseg")
ours = spec is not None and os.path.realpath(spec.origin).startswith(os.path.join(os.path.realpath(root), "src", ""))
with open(os.path.join(root, "pyproject.toml"), "rb") as f:
    print(hashlib.sha256(f.read()).hexdigest(),
          "installed" if ours and (torch == "skip" or importlib.util.find_spec("torch")) else "missing")
' "$PWD" "$torch_request")
stamp=$SEMISEG_ENV/semiseg-setup.stamp
key="checkout $PWD; pyproject.toml sha256 ${state% *}; $torch_request"
if [ "${state#* }" = installed ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "setup.sh: $where is up to date"
  exit 0
fi

echo "setup.sh: installing into $where"
rm -f "$stamp"
if [ "$torch_request" != skip ] && ! "$SEMISEG_PY" -c 'import torch' 2>/dev/null; then
  "$SEMISEG_PY" -m pip install -q ${SEMISEG_TORCH_INDEX:+--index-url "$SEMISEG_TORCH_INDEX"} \
    "torch==${SEMISEG_TORCH_VERSION:-2.13.0}"
fi
"$SEMISEG_PY" -m pip install -q -e ".[test]"
printf '%s\n' "$key" 2>/dev/null >"$stamp" || true
