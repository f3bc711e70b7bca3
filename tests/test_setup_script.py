"""scripts/setup.sh on a distribution's own Python, which is "externally managed" (PEP 668: pip
refuses to install into it): setup makes the project's environment, .venv/, and installs there; a
second run installs nothing; a Python without its venv module is told which package to install.

Each test works on a copy of the project in a temporary directory, with the system Python of
Debian 12 (/usr/bin/python3, the interpreter a new user meets). What is checked is where setup
installs, so torch is skipped (SEMISEG_TORCH=skip) and pip installs semiseg alone (PIP_NO_DEPS):
a few seconds, not the minutes of the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")
# exit 0 when the interpreter runs outside any environment and its stdlib carries the PEP 668 marker
EXTERNALLY_MANAGED = ("import os, sys, sysconfig; sys.exit(sys.prefix != sys.base_prefix or not os.path.isfile("
                      "os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))")


def system_python() -> Path:
    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} is absent: no distribution Python to set up with")
    if subprocess.run([SYSTEM_PYTHON, "-I", "-c", EXTERNALLY_MANAGED], timeout=60).returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} is not externally managed (no EXTERNALLY-MANAGED in its stdlib)")
    return SYSTEM_PYTHON


def copy_project(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "scripts", dest / "scripts")
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def setup(project: Path, python: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(PYTHON=str(python), SEMISEG_TORCH="skip", PIP_NO_DEPS="1")
    return subprocess.run(["bash", str(project / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=600)


def semiseg_origin(python: Path) -> str:
    """Where `import semiseg` resolves for this interpreter ('None' when it does not)."""
    proc = subprocess.run([python, "-I", "-c", "import importlib.util as u; s = u.find_spec('semiseg'); "
                           "print(s and s.origin)"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    python = system_python()
    if subprocess.run([python, "-c", "import venv, ensurepip"], timeout=60).returncode != 0:
        pytest.skip(f"{python} has no venv module (apt install python3-venv)")
    project = copy_project(tmp_path_factory.mktemp("setup") / "project")
    return project, python, setup(project, python)


def test_an_externally_managed_python_gets_the_project_environment(first_run):
    project, python, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.splitlines()[0]
    assert line.startswith(f"setup.sh: installing into .venv/, the project's environment (Python {'.'.join(map(str, python_version(python)))} ")
    assert line.endswith(", without its packages)")
    venv_python = project / ".venv" / "bin" / "python"
    assert semiseg_origin(venv_python) == str(project / "src" / "semiseg" / "__init__.py")
    assert (project / ".venv" / "bin" / "semiseg").is_file()
    assert not semiseg_origin(python).startswith(str(project))


def test_a_second_run_installs_nothing_until_pyproject_changes(first_run):
    project, python, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = next((project / ".venv" / "lib").glob("python3*/site-packages/semiseg-*.dist-info/RECORD"))
    installed = record.stat().st_mtime_ns

    again = setup(project, python)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines() == [proc.stdout.splitlines()[0].replace("installing into ", "") + " is up to date"]
    assert record.stat().st_mtime_ns == installed

    # the same environment named as the Python to use: installed there already
    active = setup(project, project / ".venv" / "bin" / "python")
    assert active.returncode == 0, active.stderr[-3000:]
    assert active.stdout.startswith(f"setup.sh: the active environment {project / '.venv'} ")
    assert active.stdout.rstrip().endswith(" is up to date")
    assert not (project / ".venv" / ".venv").exists()

    with (project / "pyproject.toml").open("a") as f:
        f.write("# a change\n")
    changed = setup(project, python)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert changed.stdout.startswith("setup.sh: installing into .venv/")
    record = next((project / ".venv" / "lib").glob("python3*/site-packages/semiseg-*.dist-info/RECORD"))
    assert record.stat().st_mtime_ns != installed


def test_a_python_without_venv_is_told_which_package_to_install(tmp_path):
    python = system_python()
    # Debian's python3 without the python3-venv package: `import ensurepip` fails
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\", name='ensurepip')\n")
    wrapper = tmp_path / "python3"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shadow.parent} exec {python} \"$@\"\n")
    wrapper.chmod(0o755)
    project = copy_project(tmp_path / "project")

    proc = setup(project, wrapper)
    assert proc.returncode == 1
    package = "python{}.{}-venv".format(*python_version(python))
    assert f"Install the {package} package (Debian/Ubuntu: sudo apt install {package}" in " ".join(proc.stderr.split())
    assert not (project / ".venv").exists()


def python_version(python: Path) -> tuple[int, int, int]:
    proc = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:3])"], capture_output=True, text=True,
                          timeout=60)
    return tuple(int(part) for part in proc.stdout.split())
