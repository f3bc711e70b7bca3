"""The tables' bootstrap interval over test cases: the pure computation (a hand-worked example, an
independent numpy loop, degenerate cases), its place in a table cell and footer, the table
stage reading per-case values from metrics.csv, and the config's checks of `bootstrap`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from semiseg.metrics.bootstrap import interval_from_draws, resample_indices
from semiseg.reporting.tables import build_table, format_cell

DRAWS = np.array([[0, 0, 0, 0], [0, 1, 2, 3], [3, 3, 3, 3], [0, 0, 1, 1]])


def bootstrap_interval(values, *, resamples, confidence, seed):
    """A cell's interval as the table builds it: the draws of its case count, then the interval."""
    return interval_from_draws(values, resample_indices(np.shape(values)[-1], resamples, seed), confidence)


# ----------------------------------------------------------------------------- the computation
def test_the_worked_example_of_the_module():
    ci = interval_from_draws([1.0, 2.0, 3.0, 4.0], DRAWS, confidence=0.5)
    # resampled means [1, 2.5, 4, 1.5]; sorted [1, 1.5, 2.5, 4]; quantiles 0.25, 0.75 at positions 0.75, 2.25
    assert ci.estimate == 2.5
    assert ci.low == pytest.approx(1.375) and ci.high == pytest.approx(2.875)
    assert ci.std == pytest.approx(math.sqrt(1.75))  # deviations -1.25, 0.25, 1.75, -0.75 over 3
    assert (ci.resamples, ci.confidence) == (4, 0.5)


def test_seeds_are_averaged_case_by_case_under_the_same_draws():
    # seed 1 scores every case 2 higher: the seed-averaged cases are [2, 3, 4, 5], one above the example's
    ci = interval_from_draws([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]], DRAWS, confidence=0.5)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((3.5, 2.375, 3.875))
    assert ci.std == pytest.approx(math.sqrt(1.75))


def _independent(values: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """The interval by a plain loop: one case index at a time from default_rng(seed), each
    seed's mean over the drawn cases, their mean over seeds; the percentile by hand."""
    rng = np.random.default_rng(seed)
    n_seeds, n_cases = values.shape
    stats = []
    for _ in range(resamples):
        drawn = [int(rng.integers(0, n_cases)) for _ in range(n_cases)]
        stats.append(sum(sum(values[s, j] for j in drawn) / n_cases for s in range(n_seeds)) / n_seeds)
    stats.sort()

    def quantile(q):
        position = (resamples - 1) * q
        below = math.floor(position)
        above = min(below + 1, resamples - 1)
        return stats[below] + (position - below) * (stats[above] - stats[below])

    return quantile((1 - confidence) / 2), quantile((1 + confidence) / 2)


@pytest.mark.parametrize("n_seeds, n_cases, resamples, confidence, seed",
                         [(1, 5, 100, 0.95, 0), (3, 4, 250, 0.9, 7), (2, 7, 41, 0.8, 12345)])
def test_a_fixed_seed_gives_the_independent_loops_interval(n_seeds, n_cases, resamples, confidence, seed):
    values = np.random.default_rng(99).uniform(0.5, 0.95, size=(n_seeds, n_cases))
    ci = bootstrap_interval(values, resamples=resamples, confidence=confidence, seed=seed)
    low, high = _independent(values, resamples, confidence, seed)
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.low <= ci.estimate <= ci.high
    # deterministic: the same seed, the same interval; another seed, other draws
    assert bootstrap_interval(values, resamples=resamples, confidence=confidence, seed=seed) == ci
    assert not np.array_equal(resample_indices(n_cases, resamples, seed), resample_indices(n_cases, resamples, seed + 1))


def test_one_case_or_identical_cases_give_a_point():
    one = bootstrap_interval([[0.8], [0.6]], resamples=100, confidence=0.95, seed=0)
    assert (one.estimate, one.low, one.high, one.std) == pytest.approx((0.7, 0.7, 0.7, 0.0))
    same = bootstrap_interval([0.42] * 6, resamples=100, confidence=0.95, seed=3)
    assert (same.low, same.high, same.std) == pytest.approx((0.42, 0.42, 0.0))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1"):
        bootstrap_interval([0.5, 0.6], resamples=100, confidence=95, seed=0)
    with pytest.raises(ValueError, match="resamples must be an int >= 2"):
        bootstrap_interval([0.5, 0.6], resamples=1, confidence=0.95, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        bootstrap_interval([0.5, 0.6], resamples=100, confidence=0.95, seed=-1)
    with pytest.raises(ValueError, match="must all be finite"):
        bootstrap_interval([0.5, float("nan")], resamples=100, confidence=0.95, seed=0)
    with pytest.raises(ValueError, match=r"\(n_seeds, n_cases\)"):
        interval_from_draws([], DRAWS, confidence=0.95)
    with pytest.raises(ValueError, match="draws must be"):
        interval_from_draws([1.0, 2.0, 3.0], DRAWS, confidence=0.5)  # 4 draws of 4 cases for 3 cases


# ----------------------------------------------------------------------------- the table cell
BOOT = {"resamples": 200, "confidence": 0.9, "seed": 5}
SPEC = {"title": "T", "dataset": "d", "seeds": [0, 1],
        "rows": [{"method": "supervised", "ratios": [50]}, {"method": "mean_teacher", "ratios": [50]},
                 {"method": "cps", "ratios": [50]}],
        "reference": {"source": "Paper X", "values": {"supervised": {50: {"dice": 80.1}}}}}
INFO = {"train_patients": 4, "labeled_patients": {50: 2}}
CASES = ["c1", "c2", "c3", "c4", "c5"]
METRICS = ("dice", "jaccard", "hd95", "asd")


def _frame(seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {"dice": rng.uniform(0.6, 0.9, 5) + shift, "jaccard": rng.uniform(0.4, 0.8, 5),
            "hd95": rng.uniform(2, 20, 5), "asd": rng.uniform(0.5, 5, 5)}
    return pd.DataFrame(data, index=pd.Index(CASES, name="case"))


def _inputs():
    frames = {("supervised", 50, 0): _frame(0, 0.0), ("supervised", 50, 1): _frame(1, 0.0),
              ("mean_teacher", 50, 0): _frame(2, 0.05), ("mean_teacher", 50, 1): None}
    results = {key: None if f is None else {m: float(f[m].mean()) for m in METRICS} for key, f in frames.items()}
    results.update({("cps", 50, 0): None, ("cps", 50, 1): None})
    return results, {k: f for k, f in frames.items() if f is not None}


def test_each_value_carries_its_interval_and_the_footer_says_how():
    results, cases = _inputs()
    text = build_table({**SPEC, "bootstrap": BOOT}, dataset_info=INFO, results=results, footer={}, case_values=cases)
    body = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")][2:]
    sup = np.stack([cases[("supervised", 50, s)]["dice"].to_numpy() for s in (0, 1)]) * 100
    low, high = _independent(sup, 200, 0.9, 5)
    mean, std = sup.mean(axis=1).mean(), sup.mean(axis=1).std(ddof=1)
    assert body[0][3] == f"{mean:.2f} ± {std:.2f} (90% CI {low:.2f}–{high:.2f}) (paper 80.10)"
    hd = np.stack([cases[("supervised", 50, s)]["hd95"].to_numpy() for s in (0, 1)])
    low, high = _independent(hd, 200, 0.9, 5)
    assert body[0][5].endswith(f"(90% CI {low:.2f}–{high:.2f})")
    # one seed of two finished: its cases alone; a row not run: no interval
    mt = cases[("mean_teacher", 50, 0)]["dice"].to_numpy()[None] * 100
    low, high = _independent(mt, 200, 0.9, 5)
    assert body[1][0] == "mean_teacher (1/2 seeds)" and body[1][3] == f"{mt.mean():.2f} (90% CI {low:.2f}–{high:.2f})"
    assert body[2][3:] == ["not run"] * 4
    footer = [line for line in text.splitlines() if "% CI low–high" in line]
    assert footer == [
        "- (90% CI low–high): percentile bootstrap confidence interval over the test cases: 200 resamples of "
        "the test cases with replacement (numpy default_rng(5), the same resampled case sets in every cell), "
        "each scored as the mean over the row's seeds of the runs' means over the drawn cases. It shows how a "
        "value depends on which cases were tested; the ± how it depends on training. "
        "See [docs/metrics.md](../../docs/metrics.md)."]
    # without `bootstrap` the table is as before: no interval, no footer line, per-case values unused
    plain = build_table(SPEC, dataset_info=INFO, results=results, footer={})
    assert "CI" not in plain and plain == build_table(SPEC, dataset_info=INFO, results=results, footer={},
                                                     case_values=cases)


def test_the_interval_sits_before_a_smoke_mark_and_the_papers_values():
    assert format_cell([81.0, 82.0], interval=(79.8, 83.054), mark="smoke — not a result", reference=80.1) == (
        "81.50 ± 0.71 (95% CI 79.80–83.05) (smoke — not a result) (paper 80.10)")
    assert format_cell([81.0], interval=(81.0, 81.0), confidence=0.975) == "81.00 (97.5% CI 81.00–81.00)"
    assert format_cell([], interval=(1.0, 2.0)) == "not run"
    # the audit reads the value part of such a cell
    from semiseg.reporting.audit.chain import _value_part

    assert _value_part("81.50 ± 0.71 (95% CI 79.80–83.05) (paper: A 80.10)") == "81.50 ± 0.71"


def test_missing_or_mismatched_case_values_are_named():
    results, cases = _inputs()
    spec = {**SPEC, "bootstrap": BOOT}
    with pytest.raises(KeyError, match=r"no per-case values for the run \('supervised', 50, 1\)"):
        build_table(spec, dataset_info=INFO, results=results, footer={},
                    case_values={k: v for k, v in cases.items() if k != ("supervised", 50, 1)})
    cases[("supervised", 50, 1)] = cases[("supervised", 50, 1)].iloc[:4]
    with pytest.raises(ValueError, match=r"scored on different test cases .*4 cases, the first seed's: 5"):
        build_table(spec, dataset_info=INFO, results=results, footer={}, case_values=cases)
    with pytest.raises(ValueError, match="bootstrap needs resamples, confidence and seed"):
        build_table({**SPEC, "bootstrap": {"resamples": 100}}, dataset_info=INFO, results=results, footer={},
                    case_values=cases)


def test_the_table_stage_resamples_the_cases_of_metrics_csv(tmp_path):
    from semiseg.reporting.build import table_from_runs

    # two classes per case: a case's value is the mean over its classes; case order in the file does not matter
    per_seed = {0: {"p2": (0.9, 0.7), "p3": (0.5, 0.7), "p4": (0.8, 0.8)},
                1: {"p4": (0.9, 1.0), "p2": (0.6, 0.8), "p3": (0.7, 0.5)}}
    paths = []
    for seed, cases in per_seed.items():
        run = tmp_path / "runs" / "d" / "supervised" / "50" / f"seed{seed}"
        run.mkdir(parents=True)
        lines = ["case,class,class_name,dice,jaccard,hd95,asd,pred_empty,gt_empty"]
        for case, dices in cases.items():
            lines += [f"{case},{k + 1},c{k},{d},{d / (2 - d)},2.0,1.0,False,False" for k, d in enumerate(dices)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
        paths.append(run / "metrics.csv")
    descriptor = tmp_path / "dataset.json"
    descriptor.write_text(json.dumps({"patients": {"train": ["p0", "p1"], "val": [], "test": ["p2", "p3", "p4"]}}))
    table = {"title": "T", "dataset": "d", "seeds": [0, 1], "rows": [{"method": "supervised", "ratios": [50]}],
             "bootstrap": {"resamples": 100, "confidence": 0.95, "seed": 0}}
    text = table_from_runs({"table": table, "ratios": {"50": 1}}, descriptor=descriptor, metrics=paths,
                           out=tmp_path / "t.md")
    dice = np.array([[0.8, 0.6, 0.8], [0.7, 0.6, 0.95]]) * 100  # cases p2, p3, p4 (sorted), class means
    low, high = _independent(dice, 100, 0.95, 0)
    row = next(line for line in text.splitlines() if line.startswith("| supervised"))
    # seed means 73.33 and 75.00: 74.17 ± 1.18 (|75.00 - 73.33| / sqrt 2)
    assert f"| 74.17 ± 1.18 (95% CI {low:.2f}–{high:.2f}) |" in row, row
    assert "| 2.00 ± 0.00 (95% CI 2.00–2.00) |" in row  # every case the same: a point


# ----------------------------------------------------------------------------- the config
def _load(tmp_path, bootstrap):
    from conftest import make_workflow, tiny_table
    from semiseg.config import load_config

    tables = tiny_table(methods=("supervised",))
    tables["tiny"]["bootstrap"] = bootstrap
    return load_config(root=make_workflow(tmp_path, tables=tables))


def test_the_config_fills_in_confidence_and_seed(tmp_path):
    cfg = _load(tmp_path, {"resamples": 100})
    assert cfg["tables"]["tiny"]["bootstrap"] == {"resamples": 100, "confidence": 0.95, "seed": 0}


@pytest.mark.parametrize("bootstrap, message", [
    ({"resamples": 10}, r"tiny\.bootstrap\.resamples: 10 resamples leave a tail of a 0\.95 interval empty; "
                        r"allowed: at least 40"),
    ({"resamples": 100, "confidence": 0.99}, r"tiny\.bootstrap\.resamples: 100 .* at least 200"),
    ({"resamples": 100, "confidence": 95}, r"tiny\.bootstrap\.confidence: 95 is greater than or equal to the maximum of 1"),
    ({"resamples": 100, "resample": 5}, r"tiny\.bootstrap\.resample: unknown field; allowed: confidence, resamples, seed"),
    ({"confidence": 0.9}, r"tiny\.bootstrap: 'resamples' is a required property"),
    ({"resamples": 100, "seed": -1}, r"tiny\.bootstrap\.seed: -1 is less than the minimum of 0"),
])
def test_a_bad_bootstrap_is_a_config_error_naming_the_field(tmp_path, bootstrap, message):
    from semiseg.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, bootstrap)
