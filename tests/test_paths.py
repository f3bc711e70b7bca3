"""The results layout (semiseg.paths), spelled once: by example, and nowhere else in the rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from semiseg import paths


def test_the_layout_by_example():
    assert paths.store("acdc") == "preprocessed/acdc/store.h5"
    assert paths.descriptor("acdc") == "preprocessed/acdc/dataset.json"
    assert paths.split("acdc", 10) == "splits/acdc/10.json"
    assert paths.run_file("acdc", "cps", 10, 1, "metrics.csv") == "runs/acdc/cps/10/seed1/metrics.csv"
    assert paths.figure("alhvr_regions", "acdc", 10) == "figures/alhvr_regions_acdc_10.png"
    assert paths.report_page("acdc") == "report/acdc.html"
    assert paths.log("train", paths.run_key("acdc", "cps", 10, 1)) == "logs/train/acdc/cps/10/seed1.log"
    # a rule pattern: wildcards as values
    assert paths.run_dir("{dataset}", "{method}", "{ratio}", "{seed}") == "runs/{dataset}/{method}/{ratio}/seed{seed}"
    assert paths.parse_run_path("out/" + paths.run_file("la", "mt", 5, 2, "model.pt")) == ("la", "mt", 5, 2)


@pytest.mark.parametrize("path, relative, root", [
    ("out/splits/acdc/10.json", paths.split("acdc", 10), "out"),
    ("/a/b/results/preprocessed/la/store.h5", paths.store("la"), "/a/b/results"),
    # only the depth counts: a recorded store of another dataset name sits in the same results folder
    ("results/preprocessed/other/store.h5", paths.store("la"), "results"),
])
def test_the_results_folder_of_a_laid_out_file(path, relative, root):
    assert paths.results_root(Path(path), relative) == Path(root)


def test_no_rule_spells_the_layout_itself():
    # a string naming a results folder belongs in semiseg.paths; the rules call it
    folders = r"(?:raw|preprocessed|splits|runs|tables|figures|report|logs)/"
    found = [f"{smk.name}:{n}: {line.strip()}"
             for smk in sorted((REPO / "workflow").rglob("*.smk"))
             for n, line in enumerate(smk.read_text().splitlines(), 1)
             if re.search(rf"[\"']{folders}", line) and not line.lstrip().startswith("#")]
    assert found == []
