"""The Pancreas-CT, BraTS and AbdomenCT-1K tables built end to end with the smoke schedule, on
STAND-INS: tiny synthetic releases written here in the official formats (DICOM series + NIfTI
labels, BraTS case folders, AbdomenCT-1K images + Mask/), not the data. Their numbers are not
results; the test proves that each release goes from its reader to its table, beside the papers'
values.

To keep it to minutes on 2 CPU cores, the copied catalogue shrinks what the stand-ins cannot fill:
patches of 32^3 (64^2 slices) instead of 96^3 (256^2), strides to match, and ratios over the few
stand-in cases; and each table keeps, of its rows that run, the supervised bounds, ALHVR and
SGRS-Net (2 runs, Pancreas-CT's) (a method runs on these datasets as on ACDC and LA, where the
smoke builds run every row; here what is proven is the path from each release to its table). Everything else (readers, networks,
methods, the tables' other rows and the papers' values) is the repository's.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snakemake, write_yaml
from release_files import write_abdomen_release, write_brats_release, write_lists, write_pancreas_release

TABLES = ("pancreas", "brats", "abdomenct1k")
KEPT_RUNS = ("supervised", "alhvr", "sgrs")  # of the rows that run (module docstring)


def stand_in_workflow(root: Path) -> Path:
    data = root / "data"
    brats = [f"BraTS19_STANDIN_{i}_1" for i in range(6)]
    write_brats_release(data / "brats", brats)
    write_lists(data / "brats", train=brats[:4], val=brats[4:5], test=brats[5:])
    write_pancreas_release(data / "pancreas", [1, 2, 3, 4, 5])
    write_lists(data / "pancreas", train=[f"image{n:04d}" for n in (1, 2, 3, 4)], test=["image0005"])
    write_abdomen_release(data / "abdomen", [1, 2, 3, 4])
    write_lists(data / "abdomen", train=["Case_00001", "Case_00002", "Case_00003"], test=["Case_00004"])

    wf = root / "wf"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf / "Snakefile")
    shutil.copytree(REPO / "workflow", wf / "workflow")
    shutil.copytree(REPO / "config", wf / "config")
    for name, shrink in (("brats", {"patch_size": [32, 32, 32], "stride": [16, 16, 16],
                                    "ratios": {"5": 1, "10": 2, "20": 3, "100": 4}}),
                         ("pancreas", {"patch_size": [32, 32, 32], "stride": [16, 16, 16],
                                       "ratios": {"5": 1, "10": 2, "20": 3, "100": 4}}),
                         ("abdomenct1k", {"patch_size": [64, 64], "ratios": {"5": 1, "10": 2, "100": 3}})):
        path = wf / "config" / "datasets" / f"{name}.yaml"
        catalogue = yaml.safe_load(path.read_text())
        catalogue[name].update(shrink, train_patients=max(shrink["ratios"].values()))
        write_yaml(path, catalogue)
    for name in TABLES:
        path = wf / "config" / "tables" / f"{name}.yaml"
        catalogue = yaml.safe_load(path.read_text())
        rows = catalogue[name]["rows"]
        catalogue[name]["rows"] = [r for r in rows if r["method"] in KEPT_RUNS or r.get("run") is False]
        write_yaml(path, catalogue)
    write_yaml(wf / "config" / "config.yaml", {
        "tables": list(TABLES), "schedule": "smoke", "seeds": [0], "device": "cpu", "results": "results",
        "sources": {"brats": {"path": str(data / "brats")}, "pancreas": {"path": str(data / "pancreas")},
                    "abdomenct1k": {"path": str(data / "abdomen")}}})
    return wf


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    wf = stand_in_workflow(tmp_path_factory.mktemp("tables3d"))
    t0 = time.time()
    proc = snakemake(wf, "--set-threads", "train=1", "infer=1", "--", *(f"results/tables/{t}.md" for t in TABLES),
                     timeout=1800)
    print(f"\nthree smoke tables on stand-ins: {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wf / "results"


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


@pytest.mark.slow
def test_the_three_tables_build_on_stand_ins(built):
    check_tables(built)


def check_tables(res: Path) -> None:
    brats = json.loads((res / "preprocessed" / "brats" / "dataset.json").read_text())
    assert brats["patients"]["val"] == ["BraTS19_STANDIN_4_1"] and len(brats["patients"]["train"]) == 4
    pancreas = json.loads((res / "preprocessed" / "pancreas" / "dataset.json").read_text())
    assert pancreas["cases"]["image0005"]["spacing"][0] == 1.0  # resampled to 1 mm
    for name in TABLES:
        table = (res / "tables" / f"{name}.md").read_text(encoding="utf-8")
        rows = _rows(table)
        measured = [row for row in rows if "not run" not in row]
        assert measured and all(re.search(r"\| \d+\.\d\d", row) for row in measured), table
        assert "smoke" in table and "not a result" in table, table
        print(f"\n{table}")
    t = (res / "tables" / "brats.md").read_text(encoding="utf-8")
    assert "(paper: ALHVR T4 79.23)" in t and "(paper: ALHVR T4 85.14)" in t, t
    alhvr = [row for row in _rows(t) if row.startswith("| ALHVR |")]
    assert len(alhvr) == 1 and "not run" not in alhvr[0], t  # ALHVR on V-Net
    assert "Sliding window: 32 x 32 x 32 windows (z, y, x), stride 16 x 16 x 16" in t
    t = (res / "tables" / "pancreas.md").read_text(encoding="utf-8")
    assert "SGRS-Net T3 29.32" in t and "SGRS-Net T3 70.00; CRLN T3 69.44" in t, t  # MC-Net+ at 6, both papers
    sgrs = [row for row in _rows(t) if row.startswith("| SGRS-Net |")]
    assert len(sgrs) == 2 and all("not run" not in row for row in sgrs), t  # the implemented SGRS-Net
    assert "(paper: SGRS-Net T3 77.20)" in sgrs[0] and "(paper: SGRS-Net T3 80.55)" in sgrs[1], t
    t = (res / "tables" / "abdomenct1k.md").read_text(encoding="utf-8")
    assert "(paper: ALHVR T3 84.75)" in t, t
    alhvr = [row for row in _rows(t) if row.startswith("| ALHVR |")]
    assert len(alhvr) == 2 and all("not run" not in row for row in alhvr) and "Sliding window" not in t
