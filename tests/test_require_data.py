"""A data test without its data: skipped on a workstation, failed where SEMISEG_REQUIRE_DATA=1
(.ci/run) says the data must be there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, missing_data

# one test of each kind: a needs_file mark, the shared_data_dir fixture, real_dataset's fixture
DATA_TESTS = ["tests/test_splits.py::test_acdc_seven_patient_split",
              "tests/test_metrics_box.py::test_equals_medpy_exactly_on_real_left_atrium_masks",
              "tests/test_acdc.py::test_the_shipped_split_is_the_common_layouts"]


def test_missing_data_skips_or_fails_as_the_environment_says(monkeypatch):
    monkeypatch.delenv("SEMISEG_REQUIRE_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no LA here"):
        missing_data("no LA here")
    monkeypatch.setenv("SEMISEG_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="SEMISEG_REQUIRE_DATA=1 but no LA here"):
        missing_data("no LA here")


@pytest.mark.parametrize("required", [False, True])
def test_data_tests_against_an_empty_data_folder(tmp_path, required):
    env = {k: v for k, v in os.environ.items() if k != "SEMISEG_REQUIRE_DATA"}
    env["SEMISEG_SHARED_DATA"] = str(tmp_path)  # present, but holds neither ACDC nor LA-mini
    if required:
        env["SEMISEG_REQUIRE_DATA"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *DATA_TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if required:
        # the fixtures' refusals are errors at set-up, the test's own a failure: none skipped
        assert proc.returncode == 1 and "1 failed, 2 errors" in out and "skipped" not in out, out[-3000:]
        assert out.count("SEMISEG_REQUIRE_DATA=1 but ") >= 3, out[-3000:]
    else:
        assert proc.returncode == 0 and "3 skipped" in out, out[-3000:]


def test_ci_requires_the_data():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert "export SEMISEG_REQUIRE_DATA=1" in lines
    assert lines.index("export SEMISEG_REQUIRE_DATA=1") < lines.index("exec bash scripts/test.sh")
