"""(slow) The literature's baselines end to end in the workflow: ONE Snakemake call builds a tiny
2D table (tiny2d, U-Net) and a tiny 3D table (tiny3d, V-Net) with a row per baseline method, so
each method goes through training, validation, inference and its table cell.

A method joins by adding its catalogue name to ``BASELINES_2D`` and/or ``BASELINES_3D``: one build
for all of them keeps the suite's cost to one preprocess and one split per dimension. A 3D form
that a Left Atrium table runs is built by the LA-mini smoke build instead (every baseline's is
today: checked below, config only), so ``BASELINES_3D`` lists only those no LA table runs.
"""

from __future__ import annotations

import pytest

from conftest import TINY3D_DATASET, make_workflow, snakemake, write_yaml

BASELINES_2D: list[str] = ["unimatch", "ss_net", "urpc", "mc_net", "mc_net_plus", "mcf", "dtc", "sassnet"]
BASELINES_3D: list[str] = []
#: Baselines without a 3D form, and without a 2D one.
ONLY_2D, ONLY_3D = {"unimatch"}, {"caml"}


def _table(name: str, dataset: str, ratio: int, methods: list[str]) -> dict:
    return {name: {"title": f"Baselines on {dataset}", "dataset": dataset, "seeds": [0],
                   "rows": [{"method": m, "ratios": [ratio]} for m in methods]}}


@pytest.mark.slow
def test_every_baseline_trains_and_is_tabled_in_the_workflow(tmp_path):
    if not (BASELINES_2D or BASELINES_3D):
        pytest.skip("no baseline listed yet")
    tables = {}
    if BASELINES_2D:
        tables |= _table("baselines2d", "tiny2d", 25, BASELINES_2D)
    if BASELINES_3D:
        tables |= _table("baselines3d", "tiny3d", 50, BASELINES_3D)
    root = make_workflow(tmp_path / "wf", tables=tables)
    write_yaml(root / "config" / "datasets" / "tiny3d.yaml", TINY3D_DATASET)
    proc = snakemake(root, *(f"results/tables/{name}.md" for name in tables), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, dataset, ratio, methods in (("baselines2d", "tiny2d", 25, BASELINES_2D),
                                          ("baselines3d", "tiny3d", 50, BASELINES_3D)):
        for method in methods:
            metrics = root / "results" / "runs" / dataset / method / str(ratio) / "seed0" / "metrics.csv"
            assert metrics.is_file(), f"{method} on {dataset}: no metrics.csv"
        if methods:
            text = (root / "results" / "tables" / f"{name}.md").read_text()
            assert "not run" not in text, text


def test_every_baseline_s_3d_form_runs_in_the_la_mini_smoke_build_or_here():
    from conftest import REPO
    from semiseg.config import load_config, table_runs
    from smoke_targets import BASELINES, LA_TABLES

    cfg = load_config(root=REPO)
    in_la_build = {m for t in LA_TABLES for _, m, _, _ in table_runs(cfg, t)}
    assert BASELINES - ONLY_2D <= in_la_build | set(BASELINES_3D)
    assert BASELINES - ONLY_3D <= set(BASELINES_2D)
