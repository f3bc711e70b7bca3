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


def test_a_run_at_a_table_s_own_stride_is_named_by_it_and_read_back():
    at16 = paths.run_file("brats", "crln", 10, 0, "metrics.csv", stride=[16, 16, 16])
    assert at16 == "runs/brats/crln/10/seed0-stride16x16x16/metrics.csv"
    # at the dataset's own stride (None) a run keeps the name it always had
    assert paths.run_file("brats", "crln", 10, 0, "metrics.csv", stride=None) == "runs/brats/crln/10/seed0/metrics.csv"
    assert paths.log("train", paths.run_key("brats", "crln", 10, 0, [16, 16, 16])) == \
        "logs/train/brats/crln/10/seed0-stride16x16x16.log"
    assert paths.figure("alhvr_regions", "brats", 10, [16, 16, 16]) == "figures/alhvr_regions_brats-stride16x16x16_10.png"
    # a rule pattern: the wildcard holds the whole tag (empty at the dataset's own stride)
    assert paths.run_dir("{dataset}", "{method}", "{ratio}", "{seed}", "{stride}") == \
        "runs/{dataset}/{method}/{ratio}/seed{seed}{stride}"
    assert paths.parse_run("out/" + at16) == ("brats", "crln", 10, 0, [16, 16, 16])
    assert paths.parse_run("out/runs/brats/crln/10/seed0/predictions/x.nii.gz") == ("brats", "crln", 10, 0, None)
    assert paths.parse_run_path("out/" + at16) == ("brats", "crln", 10, 0)
    assert paths.parse_stride_tag(paths.stride_tag([4, 18, 18])) == [4, 18, 18]
    with pytest.raises(ValueError, match="not a run's stride tag"):
        paths.parse_stride_tag("-stride16x16")


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
