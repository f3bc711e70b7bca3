"""Code fingerprints: each stage's files are its entry module's import closure (semiseg.fingerprint)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from semiseg.fingerprint import PACKAGE, method_files, module_imports, stage_files


def rel(files) -> set[str]:
    return {f.relative_to(PACKAGE).as_posix() for f in files}


def test_imports_are_read_from_the_source_including_function_bodies():
    # cli.py imports every stage inside its command functions; `from semiseg.methods import Step`
    # names the package's __init__, not a submodule called Step
    assert {"semiseg.engine.loop", "semiseg.data.fetch", "semiseg.reporting.audit"} <= module_imports("semiseg.cli")
    assert "semiseg.methods" in module_imports("semiseg.engine.loop")
    assert not any(m.endswith(".Step") for m in module_imports("semiseg.engine.loop"))
    with pytest.raises(ValueError, match="not a module"):
        module_imports("semiseg.no_such_module")


def test_each_stage_depends_on_what_it_imports_and_nothing_it_does_not():
    assert "data/acdc.py" in rel(stage_files("preprocess"))  # the acdc_raw reader
    assert {"data/store.py", "errors.py", "metrics/binary.py", "metrics/csv_io.py"} <= rel(stage_files("evaluate"))
    infer = rel(stage_files("infer"))
    assert {"inference/run.py", "inference/predict.py", "device.py", "nets/unet.py"} <= infer
    assert "engine/loop.py" not in infer  # infer needs the device choice, not the training loop
    # the table writer, the papers' values it prints, the metrics it summarises (and resamples), the paired
    # comparisons, run costs and test-selection oracle of its optional columns, the run layout it reads seeds
    # from, and the package version its footer prints
    assert rel(stage_files("table")) == {"reporting/build.py", "reporting/tables.py", "reporting/notes.py",
                                         "references.py", "metrics/csv_io.py", "metrics/summary.py",
                                         "metrics/bootstrap.py", "metrics/paired.py", "reporting/comparisons.py",
                                         "reporting/cost.py", "reporting/oracle.py", "paths.py", "__init__.py"}
    # the oracle's stages are apart: no honest stage depends on their code
    oracle = {"engine/oracle.py", "metrics/oracle.py"}
    for stage in ("train", "infer", "evaluate", "table"):
        assert not rel(stage_files(stage, "mean_teacher" if stage == "train" else None)) & oracle
    assert {"engine/oracle.py", "engine/loop.py", "methods/mean_teacher.py"} <= rel(stage_files("oracle-train",
                                                                                                 "mean_teacher"))
    assert {"metrics/oracle.py", "inference/run.py", "metrics/evaluate.py"} <= rel(stage_files("oracle-evaluate"))
    # plumbing is not followed: the config loader's result is itself a rule param (the run spec)
    for stage in ("fetch", "train", "table"):
        assert not rel(stage_files(stage)) & {"config.py", "cli.py", "provenance.py", "fingerprint.py"}


def test_a_method_depends_on_its_own_module_and_what_it_imports():
    alhvr, regions = rel(method_files("alhvr")), rel(method_files("cps_regions"))
    assert "methods/common/dual_branch.py" in alhvr & regions  # the shared two-network base
    assert "methods/alhvr.py" not in regions and "methods/cps_regions.py" not in alhvr
    assert "methods/common/ema.py" in rel(method_files("mean_teacher"))
    assert "methods/common/ema.py" not in rel(method_files("supervised"))
    # every train job also has the engine
    assert {"engine/loop.py", "methods/alhvr.py"} <= rel(stage_files("train", "alhvr"))


FINGERPRINTS = """
import json
from semiseg.fingerprint import code_fingerprint
print(json.dumps({a: code_fingerprint("train", a) for a in ("alhvr", "cps_regions", "mean_teacher")}
                 | {"table": code_fingerprint("table"), "infer": code_fingerprint("infer")}))
"""


def _fingerprints(src) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", FINGERPRINTS], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("relative, changed", [
    ("methods/alhvr.py", {"alhvr"}),
    ("methods/common/dual_branch.py", {"alhvr", "cps_regions"}),
    ("methods/common/ema.py", {"mean_teacher"}),
    ("engine/loop.py", {"alhvr", "cps_regions", "mean_teacher"}),
    ("nets/unet.py", {"alhvr", "cps_regions", "mean_teacher", "infer"}),
    ("reporting/tables.py", {"table"}),
    ("config.py", set()),
])
def test_an_edit_changes_exactly_the_fingerprints_that_depend_on_it(tmp_path, relative, changed):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    before = _fingerprints(src)
    (src / "semiseg" / relative).write_text((src / "semiseg" / relative).read_text() + "\n# an edit\n")
    after = _fingerprints(src)
    assert {k for k in before if before[k] != after[k]} == changed
