# Sourced by setup.sh, demo.sh and test.sh (from the project root): which Python semiseg is
# installed into and run with.
#
# $PYTHON (default python3) itself when it runs inside a virtual environment or a conda env (an
# activated one, or one named by its path); otherwise the project's own virtual environment,
# .venv/, made from it by setup.sh. A distribution's Python (Debian 12, Ubuntu 23.04 and later, among
# others) is "externally managed" (PEP 668): pip refuses to install into it.
#
# Sets SEMISEG_PY (the interpreter to install into and run), SEMISEG_BIN (its scripts directory:
# `semiseg`, `snakemake`), SEMISEG_ENV (the environment's directory), SEMISEG_VENV (1 when that is
# .venv/), SEMISEG_BASE_PY and SEMISEG_BASE_VERSION ($PYTHON, default python3, and its version) and
# SEMISEG_BASE_MANAGED (1 when that Python is externally managed).

SEMISEG_BASE_PY=${PYTHON:-python3}
if ! command -v "$SEMISEG_BASE_PY" >/dev/null; then
  echo "semiseg: no Python: '$SEMISEG_BASE_PY' is not a command (install Python 3.10 or later, or set PYTHON=/path/to/python3)" >&2
  exit 1
fi
# one line each: in an environment (1/0), externally managed (1/0), the interpreter, its version,
# its scripts directory, its environment's prefix
_semiseg_probe=$("$SEMISEG_BASE_PY" -c '
import os, sys, sysconfig
in_env = sys.prefix != sys.base_prefix or os.path.isdir(os.path.join(sys.prefix, "conda-meta"))
managed = not in_env and os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
print(int(in_env), int(managed), sys.executable, "%d.%d.%d" % sys.version_info[:3],
      sysconfig.get_path("scripts"), sys.prefix, sep="\n")
') || { echo "semiseg: $SEMISEG_BASE_PY does not run (set PYTHON=/path/to/python3)" >&2; exit 1; }
_semiseg_line() { sed -n "$1p" <<<"$_semiseg_probe"; }

SEMISEG_BASE_VERSION=$(_semiseg_line 4)
SEMISEG_BASE_MANAGED=$(_semiseg_line 2)
if [ "$(_semiseg_line 1)" = 1 ]; then
  SEMISEG_VENV=
  SEMISEG_PY=$(_semiseg_line 3)
  SEMISEG_BIN=$(_semiseg_line 5)
  SEMISEG_ENV=$(_semiseg_line 6)
else
  SEMISEG_VENV=1
  SEMISEG_PY=$PWD/.venv/bin/python
  SEMISEG_BIN=$PWD/.venv/bin
  SEMISEG_ENV=$PWD/.venv
fi
unset -f _semiseg_line
unset _semiseg_probe
