"""Tests of semiseg.reporting.tables: rows, columns, formatted numbers, references, not-run rows."""

from __future__ import annotations

import copy

import pytest

from semiseg.reporting import COLUMNS, build_table, format_cell, write_table

DATASET_INFO = {"train_patients": 10, "labeled_patients": {"10": 1, "20": 2}}
FOOTER = {
    "schedule": "smoke",
    "code_version": "0.1.0",
    "fingerprint": "deadbeef",
    "generated": "2025-01-02T03:04:05Z",
}
SPEC = {
    "title": "Synthetic 2D demo",
    "dataset": "synthetic2d",
    "seeds": [0, 1],
    "rows": [
        {"method": "supervised", "ratios": [10, 20], "label": "U-Net"},
        {"method": "mean_teacher", "ratios": [10, 20], "label": "MT"},
    ],
    "reference": {
        "source": "Paper X, Table 2",
        "values": {"mean_teacher": {10: {"dice": 80.1, "jaccard": 69.2, "hd95": 5.3, "asd": 1.6}}},
    },
}


def summary(dice: float, jaccard: float, hd95: float, asd: float) -> dict:
    return {"dice": dice, "jaccard": jaccard, "hd95": hd95, "asd": asd, "n_cases": 4}


def full_results() -> dict:
    return {
        ("supervised", 10, 0): summary(0.80, 0.70, 10.0, 3.0),
        ("supervised", 10, 1): summary(0.82, 0.72, 12.0, 2.0),
        ("supervised", 20, 0): summary(0.85, 0.75, 8.0, 2.5),
        ("supervised", 20, 1): summary(0.86, 0.76, 7.0, 2.5),
        ("mean_teacher", 10, 0): summary(0.8143, 0.70, 5.0, 1.50),
        ("mean_teacher", 10, 1): summary(0.8243, 0.71, 6.0, 1.70),
        ("mean_teacher", 20, 0): summary(0.87, 0.77, 6.5, 1.9),
        ("mean_teacher", 20, 1): summary(0.88, 0.79, 5.5, 2.1),
    }


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table line, header and rule included."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_rows_columns_and_values_by_hand():
    text = build_table(SPEC, dataset_info=DATASET_INFO, results=full_results(), footer=FOOTER)
    rows = table_rows(text)

    assert text.startswith("# Synthetic 2D demo\n")
    assert rows[0] == list(COLUMNS)
    assert rows[0] == [
        "Method", "Labeled", "Unlabeled", "Dice↑ (%)", "Jaccard↑ (%)", "95HD↓", "ASD↓"
    ]
    body = rows[2:]
    assert [row[:3] for row in body] == [
        ["U-Net", "1 (10%)", "0"],  # supervised: trained on the labeled patients only
        ["U-Net", "2 (20%)", "0"],
        ["MT", "1 (10%)", "9 (90%)"],
        ["MT", "2 (20%)", "8 (80%)"],
    ]
    # U-Net 10%: dice 0.80, 0.82 -> mean 81.00, sample std sqrt(2 * 0.01**2 / 1) * 100 = 1.41;
    # hd95 10, 12 -> 11.00 ± 1.41; asd 3, 2 -> 2.50 ± 0.71.
    assert body[0][3:] == ["81.00 ± 1.41", "71.00 ± 1.41", "11.00 ± 1.41", "2.50 ± 0.71"]
    # U-Net 20%: dice 0.85, 0.86 -> 85.50 ± 0.71; asd 2.5, 2.5 -> 2.50 ± 0.00.
    assert body[1][3:] == ["85.50 ± 0.71", "75.50 ± 0.71", "7.50 ± 0.71", "2.50 ± 0.00"]
    # MT 10% has the paper's values beside ours: dice 0.8143, 0.8243 -> 81.93 ± 0.71.
    assert body[2][3:] == [
        "81.93 ± 0.71 (paper 80.10)",
        "70.50 ± 0.71 (paper 69.20)",
        "5.50 ± 0.71 (paper 5.30)",
        "1.60 ± 0.14 (paper 1.60)",
    ]
    # MT 20% has no reference: ours alone. jaccard 0.77, 0.79 -> 78.00 ± 1.41.
    assert body[3][3:] == ["87.50 ± 0.71", "78.00 ± 1.41", "6.00 ± 0.71", "2.00 ± 0.14"]


def test_footer_names_provenance_averaging_and_the_empty_mask_convention():
    text = build_table(SPEC, dataset_info=DATASET_INFO, results=full_results(), footer=FOOTER)
    footer = text.split("\n\n")[-1]
    assert "mean ± sample standard deviation (ddof=1) over seeds 0, 1" in footer
    assert "mean over test cases of the mean over foreground classes" in footer
    assert "image diagonal" in footer and "[docs/metrics.md](../../docs/metrics.md)" in footer
    assert "Paper values: Paper X, Table 2." in footer
    for line in ("Schedule: smoke", "Code version: 0.1.0", "Code fingerprint: deadbeef",
                 "Generated: 2025-01-02T03:04:05Z"):
        assert f"- {line}" in footer
    assert "(k/n seeds)" not in footer


def test_one_seed_prints_the_mean_alone_and_says_so():
    spec = {**SPEC, "seeds": [0]}
    results = {key: value for key, value in full_results().items() if key[2] == 0}
    text = build_table(spec, dataset_info=DATASET_INFO, results=results, footer=FOOTER)
    body = table_rows(text)[2:]
    assert body[0][3:] == ["80.00", "70.00", "10.00", "3.00"]
    assert body[2][3:] == ["81.43 (paper 80.10)", "70.00 (paper 69.20)", "5.00 (paper 5.30)",
                           "1.50 (paper 1.60)"]
    assert "One seed (0): each value is that run's mean; no standard deviation is shown." in text
    assert "±" not in "\n".join("|".join(row) for row in body)


def test_rows_not_run_keep_their_place_with_the_paper_values():
    spec = copy.deepcopy(SPEC)
    spec["rows"].append({"method": "ua_mt", "ratios": [10], "label": "UA-MT", "run": False})
    spec["reference"]["values"]["ua_mt"] = {"10": {"dice": 84.25, "hd95": 4.0}}
    results = full_results()
    for seed in (0, 1):  # configured but not made
        results[("mean_teacher", 10, seed)] = None
    text = build_table(spec, dataset_info=DATASET_INFO, results=results, footer=FOOTER)
    body = table_rows(text)[2:]

    assert [row[0] for row in body] == ["U-Net", "U-Net", "MT", "MT", "UA-MT"]
    assert body[2][1:] == [
        "1 (10%)",
        "9 (90%)",
        "not run (paper 80.10)",
        "not run (paper 69.20)",
        "not run (paper 5.30)",
        "not run (paper 1.60)",
    ]
    assert body[4][3:] == ["not run (paper 84.25)", "not run", "not run (paper 4.00)", "not run"]


def test_a_row_with_some_seeds_missing_is_marked():
    results = full_results()
    results[("mean_teacher", 20, 1)] = None
    text = build_table(SPEC, dataset_info=DATASET_INFO, results=results, footer=FOOTER)
    body = table_rows(text)[2:]
    assert body[3][0] == "MT (1/2 seeds)"
    assert body[3][3:] == ["87.00", "77.00", "6.50", "1.90"]
    assert "(k/n seeds)" in text


def test_missing_results_key_is_an_error_not_a_silent_not_run():
    results = full_results()
    del results[("supervised", 20, 1)]
    with pytest.raises(KeyError, match="'supervised', 20, 1"):
        build_table(SPEC, dataset_info=DATASET_INFO, results=results, footer=FOOTER)


def test_bad_summaries_and_dataset_info_are_rejected():
    results = full_results()
    results[("supervised", 10, 0)] = {"dice": 0.8}
    with pytest.raises(ValueError, match="'jaccard'"):
        build_table(SPEC, dataset_info=DATASET_INFO, results=results, footer=FOOTER)
    results[("supervised", 10, 0)] = summary(float("nan"), 0.7, 1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        build_table(SPEC, dataset_info=DATASET_INFO, results=results, footer=FOOTER)
    with pytest.raises(KeyError, match="ratio 20"):
        build_table(SPEC, dataset_info={"train_patients": 10, "labeled_patients": {10: 1}},
                    results=full_results(), footer=FOOTER)


def test_supervised_methods_and_full_ratio_have_no_unlabeled_patients():
    spec = {**SPEC, "rows": [{"method": "sup_vnet", "ratios": [10]},
                             {"method": "mean_teacher", "ratios": [100]}]}
    results = {("sup_vnet", 10, s): summary(0.8, 0.7, 1.0, 1.0) for s in (0, 1)}
    results |= {("mean_teacher", 100, s): summary(0.9, 0.8, 1.0, 1.0) for s in (0, 1)}
    info = {"train_patients": 10, "labeled_patients": {10: 1, 100: 10}}
    text = build_table(spec, dataset_info=info, results=results, footer={},
                       supervised_methods={"sup_vnet"})
    body = table_rows(text)[2:]
    assert body[0][:3] == ["sup_vnet", "1 (10%)", "0"]  # label defaults to the method name
    assert body[1][:3] == ["mean_teacher", "10 (100%)", "0"]


def test_format_cell():
    assert format_cell([81.0, 82.0], reference=80.1) == "81.50 ± 0.71 (paper 80.10)"
    assert format_cell([3.456]) == "3.46"
    assert format_cell([]) == "not run"
    assert format_cell([], reference=2) == "not run (paper 2.00)"


def test_write_table_is_atomic(tmp_path):
    path = tmp_path / "tables" / "demo.md"
    text = build_table(SPEC, dataset_info=DATASET_INFO, results=full_results(), footer=FOOTER)
    write_table(text, path)
    write_table(text, path)  # replaces in place
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["demo.md"]


def test_a_built_table_states_its_code_version_and_distance_unit(tmp_path):
    import json

    from semiseg import __version__
    from semiseg.reporting.build import table_from_runs

    metrics = tmp_path / "runs" / "d" / "supervised" / "50" / "seed0" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("case,class,class_name,dice,jaccard,hd95,asd,pred_empty,gt_empty\n"
                       "c0,1,a,0.8,0.6667,2.0,1.0,False,False\n")
    descriptor = tmp_path / "dataset.json"
    descriptor.write_text(json.dumps({"patients": {"train": ["p0", "p1"], "val": [], "test": ["p2"]}}))
    spec = {"table": {"title": "T", "dataset": "d", "seeds": [0], "rows": [{"method": "supervised", "ratios": [50]}]},
            "ratios": {"50": 1}, "schedule": "smoke", "distance_unit": "voxel", "fingerprint": "f00"}
    text = table_from_runs(spec, descriptor=descriptor, metrics=[metrics], out=tmp_path / "t.md")
    assert f"Code version: {__version__} (git " in text  # this checkout's commit, read when written
    assert "95HD and ASD are in voxels of the native grid" in text
