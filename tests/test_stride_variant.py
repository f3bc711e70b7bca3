"""A table's own test stride (``stride:`` in config/tables/; its runs are runs of their own,
``runs/<dataset>/<method>/<ratio>/seed<seed>-stride<z>x<y>x<x>/``): they read the dataset's store and
splits, so a build of both tables fetches, preprocesses and splits the source once; `semiseg audit`
follows a cell at that stride back to that shared store and source.

The dry run on the repository's BraTS tables takes seconds; the tiny 3D build (two tables over one
synthetic source; the variant's table is built: one 4-iteration run) about a minute on 2 cores.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import REPO, make_workflow, repo_workflow, snakemake, write_yaml


def _jobs(out: str) -> dict[str, list[str]]:
    """rule -> the wildcards of each job a dry run lists."""
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(m.group(1), []).append(w.group(1).strip() if w else "")
    return jobs


def _inputs(out: str, rule: str, field: str = "input") -> list[str]:
    return [m.group(1) for block in re.split(r"\n(?=(?:local)?rule \w+:)", out)
            if block.strip().startswith(f"rule {rule}:") for m in [re.search(rf"{field}: (.*)", block)] if m]


def _outputs(out: str, rule: str) -> list[str]:
    return _inputs(out, rule, "output")


def test_brats_and_its_stride16_variant_fetch_preprocess_and_split_once(tmp_path):
    root = repo_workflow(tmp_path / "wf", ["brats", "brats_stride16"], {})
    proc = snakemake(root, "--dry-run", "--printshellcmds", "results/tables/brats.md", "results/tables/brats_stride16.md",
                     timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    jobs = _jobs(out)
    assert jobs["fetch"] == ["dataset=brats"] and jobs["preprocess"] == ["dataset=brats"], out[-4000:]
    # brats_stride16 runs 5, 10, 20 and 100 %, brats the same ratios: one split each, of brats
    assert sorted(jobs["split"]) == [f"dataset=brats, ratio={r}" for r in (10, 100, 20, 5)]
    variant = [w for w in jobs["train"] if w.startswith("dataset=brats,") and w.endswith("stride=-stride16x16x16")]
    assert variant and len(variant) < len(jobs["train"])  # the variant's runs are still its own
    for rule in ("train", "infer", "evaluate"):
        for line in _inputs(out, rule):
            assert "preprocessed/brats/store.h5" in line and re.findall(r"preprocessed/([^/]+)/", line) == ["brats"], line
            assert re.findall(r"splits/([^/]+)/", line) in ([], ["brats"]), line
    assert all(line.startswith("results/preprocessed/brats/dataset.json,") for line in _inputs(out, "table"))
    # the runs at brats' own stride keep their folders and their jobs' parameters (the wildcards
    # recorded by `semiseg --wildcards` name no stride), so none of them runs again
    outputs = _outputs(out, "train")
    assert sum("/seed0/model.pt" in line for line in outputs) == len(jobs["train"]) - len(variant), outputs
    assert all(re.search(r"results/runs/brats/\w+/\d+/seed0-stride16x16x16/model\.pt", line)
               for line in outputs if "/seed0/model.pt" not in line), outputs
    recorded = [json.loads(w) for w in re.findall(r"--rule train --wildcards '([^']*)'", out)]
    assert len(recorded) == len(jobs["train"])
    at_own = [w for w in recorded if w.get("stride") != "-stride16x16x16"]
    assert len(at_own) == len(recorded) - len(variant) > 0
    assert all(sorted(w) == ["dataset", "method", "ratio", "seed"] for w in at_own), at_own[:2]


def test_a_stride_variant_s_own_store_is_no_target(tmp_path):
    root = repo_workflow(tmp_path / "wf", ["brats_stride16"], {})
    proc = snakemake(root, "--dry-run", "results/preprocessed/brats-stride16x16x16/store.h5", timeout=300)
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stdout + proc.stderr or "No rule to produce" in proc.stdout + proc.stderr


# A 3D dataset small enough that one table of it builds in seconds, and two tables of it: one at
# the dataset's stride, one at its own (runs seed<seed>-stride8x8x8 of tiny3d).
TINY3D = {"tiny3d": {
    "description": "A very small synthetic3d for the stride-variant test.",
    "source": {"layout": "synthetic3d", "seed": 1, "params": {"n_train": 3, "n_test": 1, "shape": [16, 16, 16]}},
    "dims": 3, "network": "vnet", "labels": {"background": 0, "atrium": 1},
    "ratios": {"50": 1}, "patch_size": [16, 16, 16], "stride": [16, 16, 16], "schedule": "smoke"}}
TABLES3D = {
    "t3": {"title": "Tiny 3D", "dataset": "tiny3d", "seeds": [0], "rows": [{"method": "supervised", "ratios": [50]}]},
    "t3_stride8": {"title": "Tiny 3D at stride 8", "dataset": "tiny3d", "stride": [8, 8, 8], "seeds": [0],
                   "rows": [{"method": "supervised", "ratios": [50]}]},
}


@pytest.mark.slow
def test_a_variant_cell_is_audited_back_to_the_shared_store_and_source(tmp_path):
    from semiseg.provenance import record_path
    from semiseg.reporting.audit import OK, audit

    root = make_workflow(tmp_path / "wf", tables=TABLES3D)
    write_yaml(root / "config" / "datasets" / "tiny3d.yaml", TINY3D)
    proc = snakemake(root, "results/tables/t3_stride8.md", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = root / "results"
    assert sorted(p.name for p in (res / "preprocessed").iterdir()) == ["tiny3d"]
    assert sorted(p.name for p in (res / "raw").iterdir() if not p.name.startswith(".")) == ["tiny3d"]
    assert sorted(p.name for p in (res / "runs").iterdir()) == ["tiny3d"]
    assert "stride 8 x 8 x 8" in (res / "tables" / "t3_stride8.md").read_text()

    result = audit(res / "tables" / "t3_stride8.md", row="supervised", ratio=50, root=root)
    assert result["status"] == OK, result
    data = {lk["name"]: lk["path"] for lk in result["data"]}
    assert data == {"split": "results/splits/tiny3d/50.json", "store": "results/preprocessed/tiny3d/store.h5",
                    "descriptor": "results/preprocessed/tiny3d/dataset.json", "source": "results/raw/tiny3d"}
    assert result["stale"] == [], result["stale"]
    assert result["runs"][0]["run_dir"] == "results/runs/tiny3d/supervised/50/seed0-stride8x8x8"

    # a run whose train and infer records are lost: its data is still looked for where the
    # workflow puts it, the base dataset's
    run_dir = res / "runs" / "tiny3d" / "supervised" / "50" / "seed0-stride8x8x8"
    for stage, primary in (("train", run_dir), ("infer", run_dir / "predictions")):
        record_path(stage, primary).unlink()
    lost = audit(res / "tables" / "t3_stride8.md", row="supervised", ratio=50, root=root)
    assert {lk["name"]: (lk["path"], lk["status"]) for lk in lost["data"]} == {
        name: (path, OK) for name, path in data.items()}

    # a new source of the base dataset (config.sources) is the variant's: its cells' fetch is stale
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    write_yaml(root / "config" / "config.yaml", {**cfg, "sources": {"tiny3d": {"path": "/elsewhere"}}})
    moved = audit(res / "tables" / "t3_stride8.md", row="supervised", ratio=50, root=root)
    assert [(s["stage"], s["reason"]) for s in moved["stale"]] == [("fetch", "stale: config changed")]
    assert "source.path" in moved["stale"][0]["detail"]
