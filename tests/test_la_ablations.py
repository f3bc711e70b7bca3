"""The Left Atrium ablation tables of SGRS-Net (Tables 5-7, the τ sweep and the public code's
switches) and CRLN (Tables 5-7, the prototype sweep), built on LA-mini with the smoke schedule by
the session fixture `la_ablation_smoke` (tests/conftest.py, tests/smoke_targets.py), on small
patches, one ratio per table and two rows of the τ sweep. Each test reads what the build wrote: the table, and what each run's spec, training log
and checkpoint say of the switch its row names."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from helpers import table_cells

pytestmark = [pytest.mark.slow, pytest.mark.data]

SMOKE = "smoke: 1 of 4 test volumes at stride 32×48×48, 1 iteration — not a result"
MEASURED = re.compile(r"\d+\.\d\d ")


def _cells(res, table):
    """(row label, Labeled) -> the four metric cells of results/tables/<table>.md."""
    text = (res / "tables" / f"{table}.md").read_text()
    return table_cells(text), text


def _run(res, method, ratio):
    return res / "runs" / "la" / method / str(ratio) / "seed0"


def _params(res, method, ratio):
    return json.loads((_run(res, method, ratio) / "config.json").read_text())["spec"]["method"]["params"]


def _logged(res, method, ratio):
    with open(_run(res, method, ratio) / "train.csv") as f:
        return set(next(csv.reader(f)))


def _check_table(res, table, n_rows, not_run=()):
    """Every row that runs has measured cells marked as smoke, with the paper's value where the
    paper has one; the rows in `not_run` have the paper's value alone."""
    cells, text = _cells(res, table)
    assert len(cells) == n_rows, text
    assert SMOKE in text.splitlines()[0], text
    assert "stride 32 x 48 x 48 (the smoke schedule's test_stride" in text, text  # the footer: the stride run
    for (label, _), row in cells.items():
        if label in not_run:
            assert all(c.startswith("not run (paper ") for c in row), (label, row)
        else:
            assert all(MEASURED.match(c) and "(†)" in c for c in row), (label, row)
    return cells, text


def test_sgrs_components_table(la_ablation_smoke):
    res = la_ablation_smoke
    cells, _ = _check_table(res, "sgrs_components", 5)
    assert cells[("Baseline (single-network pseudo-labels)", "4 (5%)")][0].endswith("(paper 75.18)")
    assert cells[("+ MA + MT + SE&RLE (SGRS-Net)", "4 (5%)")][3].endswith("(paper 2.42)")
    # each component reached its run: the mix logs its λ, the regions their fractions, the
    # mean teacher its own parameter
    assert not _logged(res, "sgrs_baseline", 5) & {"mix_lambda", "omega_fraction", "nr_ce"}
    assert {"mix_lambda", "omega_fraction"} <= _logged(res, "sgrs_ma", 5)
    assert not _logged(res, "sgrs_mt", 5) & {"mix_lambda", "nr_ce"}
    assert [_params(res, m, 5)["pseudo_labels"] for m in ("sgrs_baseline", "sgrs_mt")] == ["student", "teacher"]
    assert {"mix_lambda", "nr_ce", "nr_dice", "theta_fraction"} <= _logged(res, "sgrs", 5)


def test_sgrs_regions_table(la_ablation_smoke):
    res = la_ablation_smoke
    cells, _ = _check_table(res, "sgrs_regions", 6)
    assert cells[("Ω L_NR, Θ L_NR, Δ L_NR", "4 (5%)")][0].endswith("(paper 88.61)")
    # which loss each region got, as run, and what the training logged of it
    regions = {m: tuple(_params(res, m, 5)[k] for k in ("omega_loss", "theta_loss", "delta_loss"))
               for m in ("sgrs_con_con", "sgrs_nr_con", "sgrs_nr_nr", "sgrs_nr_nr_nr", "sgrs")}
    assert regions == {"sgrs_con_con": ("con", "con", "none"), "sgrs_nr_con": ("nr", "con", "none"),
                       "sgrs_nr_nr": ("nr", "nr", "none"), "sgrs_nr_nr_nr": ("nr", "nr", "nr"),
                       "sgrs": ("con", "nr", "none")}
    assert "nr_ce" not in _logged(res, "sgrs_con_con", 5) and "con_ce" not in _logged(res, "sgrs_nr_nr", 5)


def test_sgrs_augment_and_tau_tables(la_ablation_smoke):
    res = la_ablation_smoke
    cells, _ = _check_table(res, "sgrs_augment", 3)
    assert cells[("Flip.V", "4 (5%)")][0].endswith("(paper 88.96)")
    for flip in ("sgrs_flip_h", "sgrs_flip_v"):  # a flipped second view, no mix
        assert "mix_lambda" not in _logged(res, flip, 5) and "omega_fraction" in _logged(res, flip, 5)
    assert [_params(res, m, 5)["augment"] for m in ("sgrs_flip_h", "sgrs_flip_v", "sgrs")] == ["flip_h", "flip_v", "mix"]

    # of the sweep the build keeps two rows (tests/smoke_targets.py, LA_ABLATION_ROWS)
    cells, _ = _check_table(res, "sgrs_tau", 2)
    assert not any("(paper" in c for row in cells.values() for c in row)  # a figure in the paper: ours alone
    assert {label for label, _ in cells} == {"τ = 0.2442 (Δ: p in (0.25, 0.75))",
                                             "τ = 0.296 (Δ: p in (0.425, 0.575), SGRS-Net)"}
    assert [_params(res, m, 5)["tau"] for m in ("sgrs_tau_0244", "sgrs")] == [0.2442, 0.296]


def test_sgrs_switches_table(la_ablation_smoke):
    res = la_ablation_smoke
    cells, _ = _check_table(res, "sgrs_switches", 4)
    assert "T5 75.18" in cells[("Baseline (single-network pseudo-labels, no MA)", "4 (5%)")][0]
    assert "T7 88.69" in cells[("Flip.H in place of MA", "4 (5%)")][0]
    code = json.loads((_run(res, "sgrs_code", 5) / "config.json").read_text())["spec"]
    assert code["schedule"]["lr_policy"] == "constant"
    assert {k: code["method"]["params"][k] for k in ("delta_rule", "mix_lambda", "noise_std", "rampup_block")} == {
        "delta_rule": "background_band", "mix_lambda": "sample", "noise_std": 0.1, "rampup_block": 150}
    full = {"con_ce", "con_dice", "nr_ce", "nr_dice", "mix_lambda", "omega_fraction", "theta_fraction"}
    assert full <= _logged(res, "sgrs_code", 5)


def test_crln_components_table(la_ablation_smoke):
    res = la_ablation_smoke
    cells, text = _check_table(res, "crln_components", 6)
    assert "(95% CI " in cells[("+ CRLN + DIM", "8 (10%)")][0] and "100 resamples" in text
    assert cells[("+ CPS positive: class mean (MR)", "8 (10%)")][0].endswith("(paper 91.63)")
    # the strong view, the DIM's rectification and CPS each reached their runs
    assert not _logged(res, "crln_baseline", 10) & {"cps", "a_loss", "ce_map"}
    assert not _logged(res, "crln_strong", 10) & {"cps", "a_loss"}
    # the map's own supervision (DIM on); `a` learns after the main step (a_step: after), not as a term
    assert {"ce_map", "dice_map", "a"} <= _logged(res, "crln_strong_dim", 10)
    assert not _logged(res, "crln_strong_dim", 10) & {"cps", "a_loss"}
    for m in ("crln_mr", "crln_lp", "crln"):
        assert "cps" in _logged(res, m, 10)
    assert [_params(res, m, 10)["positive"] for m in ("crln_mr", "crln_lp", "crln")] == ["mean", "prototypes", "mixed"]
    assert (_params(res, "crln_baseline", 10)["strong_augmentation"], _params(res, "crln_strong", 10)["strong_augmentation"]) \
        == (False, True)


def test_crln_dim_rectify_and_prototype_tables(la_ablation_smoke):
    res = la_ablation_smoke
    _check_table(res, "crln_dim", 4, not_run=("SA + CI, no CR",))
    assert [(_params(res, m, 10)["dim_spatial"], _params(res, m, 10)["dim_cross"])
            for m in ("crln_dim_none", "crln_dim_sa", "crln")] == [(False, False), (True, False), (True, True)]
    _check_table(res, "crln_rectify", 3)
    assert [_params(res, m, 10)["rectification"] for m in ("crln_r_fixed_v1", "crln_r_learnable_v2", "crln")] == \
        ["fixed_v1", "learnable_v2", "learnable_v3"]

    _check_table(res, "crln_prototypes", 4)
    # the prototype count is in each checkpoint: (classes, prototypes per class, dimension)
    for m, k in (("crln_k1", 1), ("crln_k4", 4), ("crln_k8", 8), ("crln", 16)):
        state = torch.load(_run(res, m, 10) / "models.pt", map_location="cpu", weights_only=True)
        assert tuple(state["0.prototypes"].shape) == (2, k, 16), m
