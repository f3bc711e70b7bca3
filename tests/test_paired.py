"""Paired comparisons of a table row with its comparator: the pure statistics (hand-worked
examples: the permutation test, Holm's correction, the bootstrap interval of the differences),
the choice of comparator, and a table of two rows of one method at two ratios whose every
statistic is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from semiseg.metrics.bootstrap import resample_indices
from semiseg.metrics.paired import EXACT_CASES, compare, holm, paired_differences, sign_flip_p_value
from semiseg.reporting.comparisons import comparators, table_comparisons


# ----------------------------------------------------------------------------- the statistics
def test_the_permutation_test_counts_sign_patterns():
    # the module's example: |sum| of the 8 patterns of [0.1, 0.2, -0.05] is >= 0.25 for 4 of them
    assert sign_flip_p_value([0.1, 0.2, -0.05]) == (0.5, 8, True)
    # all of one sign: only the observed pattern and its mirror reach it, 2 of 2**n
    assert sign_flip_p_value([3.0, 1.0, 2.0, 5.0]) == (2 / 16, 16, True)
    # magnitudes 1..: [1, 1, 1, 1, 1, -1] sums to 4; |#plus - #minus| >= 4 for 0, 1, 5 or 6 plus signs:
    # 1 + 6 + 6 + 1 = 14 of 64
    assert sign_flip_p_value([1.0] * 5 + [-1.0]) == (14 / 64, 64, True)
    # no difference at all: every pattern is as extreme
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == (1.0, 8, True)


def test_the_permutation_test_draws_patterns_beyond_the_exact_limit():
    e = np.full(EXACT_CASES + 4, 0.5)  # all positive: only the all-plus / all-minus patterns reach it
    p, n, exact = sign_flip_p_value(e, draws=999, seed=3)
    assert (n, exact) == (999, False)
    assert p == pytest.approx(1 / 1000)  # (1 + hits) / (1 + draws), hits 0 with overwhelming probability
    assert sign_flip_p_value(e, draws=999, seed=3) == (p, n, exact)


def test_holm_adjusts_in_order_with_a_running_maximum():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5]) == [0.5]
    assert holm([0.6, 0.2]) == [0.6, 0.4]  # 0.2 x 2 = 0.4, 0.6 x 1
    assert holm([0.4, 0.3, 0.9]) == [0.9, 0.9, 0.9]  # 0.9, 0.8 -> 0.9 (running max), 0.9
    with pytest.raises(ValueError, match=r"p-values must be .* in \[0, 1\]"):
        holm([0.1, 1.5])


def test_compare_pairs_seeds_and_cases():
    # seed 0's differences [2, 6, 1], seed 1's [0, 2, 1]: per seed 3 and 1, per case [1, 4, 1]
    row = [[72.0, 66.0, 51.0], [80.0, 72.0, 61.0]]
    base = [[70.0, 60.0, 50.0], [80.0, 70.0, 60.0]]
    draws = np.array([[0, 0, 0], [0, 1, 2], [1, 1, 1], [0, 2, 2]])
    c = compare(row, base, draws=draws, confidence=0.5, seed=0)
    assert c.estimate == pytest.approx(2.0) and c.per_seed == pytest.approx((3.0, 1.0))
    # resampled means of [1, 4, 1]: 1, 2, 4, 1; sorted [1, 1, 2, 4]; quantiles 0.25, 0.75 at 0.75, 2.25
    assert (c.low, c.high) == pytest.approx((1.0, 2.5))
    # [1, 4, 1] sums to 6: patterns reaching |6|: (+++) and (---) = 6, (+,+,-) and (-,-,+) = 4: no; p = 2 / 8
    assert (c.p_value, c.permutations, c.exact) == (0.25, 8, True)
    with pytest.raises(ValueError, match=r"same \(seeds, cases\) on both sides, got \(2, 3\) and \(1, 3\)"):
        paired_differences(row, base[:1])


# ----------------------------------------------------------------------------- comparators
def _spec(**extra):
    return {"title": "T", "dataset": "d", "seeds": [0, 1], "bootstrap": {"resamples": 20, "confidence": 0.9, "seed": 4},
            "rows": [{"method": "supervised", "ratios": [10, 20], "label": "U-Net"},
                     {"method": "mean_teacher", "ratios": [10, 20], "label": "MT"},
                     {"method": "supervised", "ratios": [100], "label": "upper bound"}], **extra}


def test_each_row_is_compared_with_the_labeled_only_row_or_the_one_it_names():
    assert comparators(_spec(), ["supervised"]) == {("mean_teacher", 10): ("supervised", 10),
                                                     ("mean_teacher", 20): ("supervised", 20)}
    spec = _spec()
    spec["rows"] = [*spec["rows"], {"method": "cps", "ratios": [10], "compare_to": "mean_teacher"},
                    {"method": "ua_mt", "ratios": [10], "run": False}]
    assert comparators(spec, ["supervised"])[("cps", 10)] == ("mean_teacher", 10)
    assert ("ua_mt", 10) not in comparators(spec, ["supervised"])
    spec["rows"][3]["ratios"] = [10, 100]
    with pytest.raises(ValueError, match=r"rows\.3\.compare_to: 'mean_teacher' is no other row of the table run "
                                         r"at ratio 100"):
        comparators(spec, ["supervised"])


# ----------------------------------------------------------------------------- a table, by hand
CASES = [f"c{i}" for i in range(1, 7)]
# Dice differences in percent, mean_teacher - supervised, per seed and case
DIFF = {10: {0: [2, 6, 2, 6, 2, 6], 1: [2, 2, 2, 2, 2, 2]},
        20: {0: [2, 0, 1, 1, 1, -1], 1: [0, 2, 1, 1, 1, -1]}}


def _frame(dice) -> pd.DataFrame:
    dice = np.asarray(dice, dtype=float)
    return pd.DataFrame({"dice": dice, "jaccard": dice / (2 - dice), "hd95": 3.0, "asd": 1.0},
                        index=pd.Index(CASES, name="case"))


def _case_values():
    values = {}
    for ratio, seeds in DIFF.items():
        for seed, diff in seeds.items():
            base = 0.5 + 0.1 * seed + 0.01 * np.arange(6)
            values[("supervised", ratio, seed)] = _frame(base)
            values[("mean_teacher", ratio, seed)] = _frame(base + np.asarray(diff) / 100)
    return values


def test_two_rows_of_one_method_at_two_ratios_by_hand():
    out = table_comparisons(_spec(), _case_values(), ["supervised"])
    assert list(out) == [("mean_teacher", 10), ("mean_teacher", 20)]
    at10, at20 = out[("mean_teacher", 10)], out[("mean_teacher", 20)]
    assert (at10.comparator, at10.comparator_label, at10.seeds) == (("supervised", 10), "U-Net", (0, 1))
    # 10 %: per seed 4 and 2 -> 3 ± sqrt(2); per case [2, 4, 2, 4, 2, 4], all positive: p = 2 / 64
    assert at10.stats.estimate == pytest.approx(3.0) and at10.stats.per_seed == pytest.approx((4.0, 2.0))
    assert np.std(at10.stats.per_seed, ddof=1) == pytest.approx(math.sqrt(2))
    assert at10.stats.p_value == pytest.approx(2 / 64) and at10.stats.exact
    # 20 %: per seed 4/6 and 4/6; per case [1, 1, 1, 1, 1, -1]: p = 14 / 64
    assert at20.stats.estimate == pytest.approx(4 / 6) and at20.stats.per_seed == pytest.approx((4 / 6, 4 / 6))
    assert at20.stats.p_value == pytest.approx(14 / 64)
    # Holm over the table's two: 2/64 x 2 = 0.0625, then max(14/64 x 1, 0.0625) = 0.21875
    assert (at10.holm_p, at20.holm_p) == pytest.approx((0.0625, 0.21875))
    # at the table's 90 %: 0.0625 < 0.1 is distinguishable, 0.21875 is not
    assert (at10.distinguishable, at20.distinguishable) == (True, False)
    # the intervals: the table's 20 draws of 6 cases (default_rng(4)), each the mean of the drawn
    # per-case differences; the 5 % and 95 % quantiles by hand (positions 0.95 and 18.05 of 19)
    draws = resample_indices(6, 20, 4)
    for stats, per_case in ((at10.stats, [2, 4, 2, 4, 2, 4]), (at20.stats, [1, 1, 1, 1, 1, -1])):
        means = sorted(sum(per_case[j] for j in draw) / 6 for draw in draws)
        low = means[0] + 0.95 * (means[1] - means[0])
        high = means[18] + 0.05 * (means[19] - means[18])
        assert (stats.low, stats.high) == pytest.approx((low, high))
        assert stats.low <= stats.estimate <= stats.high


def test_a_seed_missing_on_either_side_is_left_out_of_the_pairs():
    values = _case_values()
    values[("supervised", 10, 1)] = None
    out = table_comparisons(_spec(), values, ["supervised"])
    assert out[("mean_teacher", 10)].seeds == (0,)
    assert out[("mean_teacher", 10)].stats.estimate == pytest.approx(4.0)
    # both comparisons kept, Holm over two: 10 % still the smaller p (2 / 64, doubled), 20 % at its own 14 / 64
    assert (out[("mean_teacher", 10)].holm_p, out[("mean_teacher", 20)].holm_p) == pytest.approx((0.0625, 14 / 64))


def test_different_cases_or_no_bootstrap_settings_are_refused():
    values = _case_values()
    values[("supervised", 20, 0)] = values[("supervised", 20, 0)].rename(index={"c1": "c9"})
    with pytest.raises(ValueError, match=r"mean_teacher and supervised at ratio 20, seed 0: scored on different"):
        table_comparisons(_spec(), values, ["supervised"])
    with pytest.raises(ValueError, match="paired comparisons need bootstrap's resamples"):
        table_comparisons({**_spec(), "bootstrap": None}, _case_values(), ["supervised"])


# ----------------------------------------------------------------------------- in the table
def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_the_difference_column_prints_the_hand_worked_statistics():
    from semiseg.reporting.tables import build_table

    values = _case_values()
    results = {key: {m: float(f[m].mean()) for m in ("dice", "jaccard", "hd95", "asd")} for key, f in values.items()}
    results.update({("supervised", 100, 0): None, ("supervised", 100, 1): None})
    info = {"train_patients": 10, "labeled_patients": {10: 1, 20: 2, 100: 10}}
    text = build_table(_spec(columns=["dice", "difference"]), dataset_info=info, results=results, footer={},
                       case_values=values)
    rows = _rows(text)
    assert rows[0] == ["Method", "Labeled", "Unlabeled", "Dice↑ (%)", "ΔDice vs comparator (%)"]
    draws = resample_indices(6, 20, 4)

    def interval(per_case):
        means = sorted(sum(per_case[j] for j in draw) / 6 for draw in draws)
        return means[0] + 0.95 * (means[1] - means[0]), means[18] + 0.05 * (means[19] - means[18])

    low, high = interval([2, 4, 2, 4, 2, 4])
    # 3 ± sqrt(2) = 1.41; p 2/64 = 0.03125 -> 0.031; Holm 0.0625 -> 0.062 (below 0.1: distinguishable)
    assert rows[4][4] == f"+3.00 ± 1.41 vs U-Net (90% CI {low:.2f}–{high:.2f}; p 0.031, Holm 0.062)"
    low, high = interval([1, 1, 1, 1, 1, -1])
    assert rows[5][4] == (f"+0.67 ± 0.00 vs U-Net (90% CI {low:.2f}–{high:.2f}; p 0.22, Holm 0.22; "
                          "not distinguishable)")
    # the labeled-only rows and the upper bound are compared with nothing
    assert [rows[i][4] for i in (2, 3, 6)] == ["—", "—", "—"]
    assert any("Holm-adjusted over the table's 2 comparisons" in line and "adjusted p of 0.1 or more" in line
               for line in text.splitlines())


def test_a_difference_column_without_bootstrap_or_a_bad_compare_to_is_a_config_error():
    from semiseg.table_config import comparison_problems

    spec = _spec(columns=["dice", "difference"])
    assert comparison_problems(spec) == []
    assert comparison_problems({**spec, "bootstrap": None}) == [
        "columns: 'difference' needs bootstrap (its interval's resamples, confidence, seed), "
        "e.g. bootstrap: {resamples: 1000}"]
    spec["rows"][1]["compare_to"] = "cps"
    assert comparison_problems(spec) == ["rows.1.compare_to: 'cps' is no other row of the table run at ratio 10"]


def test_the_audit_reads_the_metric_cells_of_a_table_with_more_columns():
    from semiseg.reporting.audit.chain import _parse_table
    from semiseg.reporting.tables import build_table

    values = _case_values()
    results = {key: {m: float(f[m].mean()) for m in ("dice", "jaccard", "hd95", "asd")} for key, f in values.items()}
    results.update({("supervised", 100, 0): None, ("supervised", 100, 1): None})
    info = {"train_patients": 10, "labeled_patients": {10: 1, 20: 2, 100: 10}}
    text = build_table(_spec(columns=["difference", "dice", "asd"]), dataset_info=info, results=results,
                       footer={}, case_values=values)
    rows, _ = _parse_table(text)
    assert [(r["name"], r["ratio"]) for r in rows] == [("U-Net", 10), ("U-Net", 20), ("MT", 10), ("MT", 20),
                                                       ("upper bound", 100)]
    # seed 0: 0.525 + 0.04 = 0.565, seed 1: 0.625 + 0.02 = 0.645; sample std 0.08 / sqrt(2)
    assert rows[2]["cells"]["Dice↑ (%)"].startswith("60.50 ± 5.66 (90% CI")
    assert rows[2]["cells"]["ASD↓"] == "1.00 ± 0.00 (90% CI 1.00–1.00)" and "95HD↓" not in rows[2]["cells"]


def test_the_demos_consistency_is_at_full_weight_for_most_of_its_training():
    # the demo's Mean Teacher (config/tables/demo.yaml on synthetic2d) once reached 29 % of its
    # consistency weight by its last iteration (a staircase of 150 over all 300 iterations)
    from conftest import REPO
    from semiseg.config import load_config, run_spec
    from semiseg.methods import Step, build_method
    from semiseg.nets import network_for

    cfg = load_config(root=REPO)
    demo = cfg["tables"]["demo"]
    assert "difference" in demo["columns"] and demo["bootstrap"]["confidence"] == 0.95
    spec = run_spec(cfg, "synthetic2d", "mean_teacher", 10, 0)
    total = int(spec["schedule"]["iterations"])
    method = build_method(spec, lambda: network_for(spec))
    weights = [method.consistency_weight(Step(iteration=it, total=total)) for it in range(total)]
    full = float(spec["method"]["params"]["consistency"])
    assert weights[0] > 0  # on from the first iteration
    assert sum(w == pytest.approx(full) for w in weights) >= 0.7 * total  # full for the last 70 %


def test_the_report_page_draws_the_forest_plot_and_the_cost_plot(tmp_path):
    import base64
    import json

    from semiseg.metrics.summary import summarise
    from semiseg.reporting.comparison_figures import comparison_sections

    runs = {}
    for (method, ratio, seed), frame in _case_values().items():
        d = tmp_path / "runs" / "d" / method / str(ratio) / f"seed{seed}"
        (d / "predictions").mkdir(parents=True)
        lines = ["case,class,class_name,dice,jaccard,hd95,asd,pred_empty,gt_empty"]
        lines += [f"{case},1,A,{float(row.dice)!r},{float(row.jaccard)!r},3.0,1.0,False,False" for case, row in frame.iterrows()]
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
        algorithm = "supervised" if method == "supervised" else "mean_teacher"
        config = {"spec": {"method": {"algorithm": algorithm}},
                  "summary": {"wall_seconds": 60.0 * (1 + (method != "supervised")), "device": "cpu",
                              "device_name": "CPU X", "peak_memory_mb": 400.0, "peak_memory_kind": "process max RSS"}}
        (d / "config.json").write_text(json.dumps(config))
        runs[(method, ratio, seed)] = {"dir": d, "config": config, "summary": summarise(read_csv(d / "metrics.csv"))}
    html_parts = comparison_sections(_spec(columns=["dice", "difference", "cost"]), runs)
    assert [p for p in html_parts if p.startswith("<h2>")] == ["<h2>Paired differences</h2>", "<h2>Dice against cost</h2>"]
    images = [p.split('src="data:image/png;base64,')[1].rstrip('">') for p in html_parts if "<img" in p]
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    # without the columns, nothing
    assert comparison_sections(_spec(), runs) == []


def read_csv(path):
    from semiseg.metrics.csv_io import read_metrics_csv

    return read_metrics_csv(path)
