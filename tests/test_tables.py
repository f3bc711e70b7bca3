"""Tests of semiseg.reporting.tables: rows, columns, formatted numbers, references, not-run rows."""

from __future__ import annotations

import copy

import pytest

from smoke_targets import BASELINES
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


# ----------------------------------------------------------------------------- several sources
TWO_SOURCES = [
    {"tag": "BUARL T1", "source": "BUARL, Table 1",
     "values": {"mean_teacher": {10: {"dice": 79.65, "jaccard": 68.06}}, "supervised": {10: {"dice": 79.41}}}},
    {"tag": "ALHVR T2", "source": "ALHVR, Table 2",
     "values": {"mean_teacher": {"10": {"dice": 83.65}}, "supervised": {10: {"dice": 79.41}}}},
]


def test_each_source_of_a_cell_is_shown_with_its_tag():
    spec = {**SPEC, "reference": TWO_SOURCES}
    body = table_rows(build_table(spec, dataset_info=DATASET_INFO, results=full_results(), footer=FOOTER))[2:]
    # two papers disagree on MT at 10 %: both values, each tagged, in the sources' order
    assert body[2][3] == "81.93 ± 0.71 (paper: BUARL T1 79.65; ALHVR T2 83.65)"
    assert body[2][4] == "70.50 ± 0.71 (paper: BUARL T1 68.06)"
    # two papers agree on U-Net at 10 %: the value once, with both tags
    assert body[0][3] == "81.00 ± 1.41 (paper: BUARL T1, ALHVR T2 79.41)"
    text = build_table(spec, dataset_info=DATASET_INFO, results=full_results(), footer=FOOTER)
    assert "Paper values (each cell names its source): BUARL T1: BUARL, Table 1; ALHVR T2: ALHVR, Table 2." in text


def test_the_sources_of_a_table_are_checked():
    from semiseg.references import check_references, reference_values

    untagged = [{**src, "tag": None} for src in TWO_SOURCES]
    assert any("reference.0.tag" in p for p in check_references({"reference": untagged}))
    twice = [TWO_SOURCES[0], {**TWO_SOURCES[1], "tag": "BUARL T1"}]
    assert any("reference.1.tag: 'BUARL T1' is also" in p for p in check_references({"reference": twice}))
    assert check_references({"reference": TWO_SOURCES}) == []
    assert check_references(SPEC) == []  # one untagged source
    values = reference_values({"reference": TWO_SOURCES})
    assert values["mean_teacher"][10] == [("BUARL T1", {"dice": 79.65, "jaccard": 68.06}),
                                          ("ALHVR T2", {"dice": 83.65})]  # "10" (JSON) is 10


def test_a_table_with_several_untagged_sources_is_a_config_error(tmp_path):
    from conftest import make_workflow, tiny_table
    from semiseg.config import ConfigError, load_config

    tables = tiny_table(methods=("supervised",))
    tables["tiny"]["reference"] = [{"source": "A", "values": {"supervised": {25: {"dice": 80.0}}}},
                                   {"source": "B", "values": {"supervised": {25: {"dice": 81.0}}}}]
    root = make_workflow(tmp_path, tables=tables)
    with pytest.raises(ConfigError, match=r"tiny\.reference\.0\.tag: a table with 2 sources needs a tag"):
        load_config(root=root)


# ----------------------------------------------------------------------------- smoke runs
def _smoke_info(test_cases):
    return {key: {"schedule": "smoke", "iterations": 4, "test_cases": test_cases} for key in full_results()}


def test_a_smoke_run_on_a_benchmark_is_named_once_and_every_cell_carries_its_footnote_mark():
    info = {**DATASET_INFO, "test_cases": 40, "own_schedule": "paper"}
    text = build_table(SPEC, dataset_info=info, results=full_results(), footer=FOOTER, run_info=_smoke_info(2))
    mark = "smoke: 2 of 40 test volumes, 4 iterations — not a result"
    assert text.splitlines()[0] == f"# Synthetic 2D demo — {mark}"
    body = table_rows(text)[2:]
    for row in body:
        for cell in row[3:]:
            assert cell.count("(†)") == 1 and "smoke" not in cell, cell  # the mark, not the words again
    assert body[2][3] == "81.93 ± 0.71 (†) (paper 80.10)"
    assert f"- Not a result: † {mark}." in text
    assert text.count(mark) == 2  # the title and the note that explains the mark


def test_smoke_on_a_dataset_whose_schedule_is_smoke_is_a_result_named_in_the_title():
    info = {**DATASET_INFO, "test_cases": 8, "own_schedule": "smoke"}
    text = build_table(SPEC, dataset_info=info, results=full_results(), footer=FOOTER, run_info=_smoke_info(8))
    assert text.splitlines()[0] == "# Synthetic 2D demo (smoke schedule, 4 iterations)"
    assert "not a result" not in text
    # on part of its test set it is no result, whatever the schedule
    text = build_table(SPEC, dataset_info=info, results=full_results(), footer=FOOTER, run_info=_smoke_info(3))
    assert "smoke: 3 of 8 test volumes, 4 iterations — not a result" in text.splitlines()[0]


def test_the_table_stage_reads_each_runs_schedule_and_scored_volumes(tmp_path):
    import json

    from semiseg.reporting.build import table_from_runs

    run = tmp_path / "runs" / "d" / "supervised" / "50" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("case,class,class_name,dice,jaccard,hd95,asd,pred_empty,gt_empty\n"
                                     "p2_frame01,1,a,0.8,0.6667,2.0,1.0,False,False\n"
                                     "p2_frame02,1,a,0.8,0.6667,2.0,1.0,False,False\n")
    (run / "config.json").write_text(json.dumps({"spec": {"schedule": {"name": "smoke", "iterations": 4}}}))
    descriptor = tmp_path / "dataset.json"
    cases = {f"p{p}_frame0{f}": {"patient": f"p{p}"} for p in range(5) for f in (1, 2)}
    descriptor.write_text(json.dumps({"patients": {"train": ["p0", "p1"], "val": [], "test": ["p2", "p3", "p4"]},
                                      "cases": cases}))
    spec = {"table": {"title": "T", "dataset": "d", "seeds": [0], "rows": [{"method": "supervised", "ratios": [50]}]},
            "ratios": {"50": 1}, "schedule": "smoke", "own_schedule": "paper", "distance_unit": "voxel"}
    text = table_from_runs(spec, descriptor=descriptor, metrics=[run / "metrics.csv"], out=tmp_path / "t.md")
    assert text.splitlines()[0] == "# T — smoke: 2 of 6 test volumes, 4 iterations — not a result"


# ----------------------------------------------------------------------------- the catalogue's paper values
def _catalogue():
    from conftest import REPO
    from semiseg.config import load_config

    return load_config(root=REPO)


def test_the_acdc_table_shows_each_papers_value_with_its_source():
    from semiseg.references import reference_values

    cfg = _catalogue()
    table = cfg["tables"]["acdc"]
    assert table["seeds"] == [0, 1, 2]
    values = reference_values(table)
    dice = {m: {r: [(tag, v["dice"]) for tag, v in cells] for r, cells in by_r.items()} for m, by_r in values.items()}
    assert dice["mean_teacher"][10] == [("ALHVR T2", 83.65), ("BUARL T1", 79.65)]
    assert dice["supervised"][10] == [("ALHVR T2", 81.59), ("BUARL T1", 79.41)]
    assert dice["alhvr"][10] == [("ALHVR T2", 90.56)]
    assert dice["bcp"][5] == [("BUARL T1", 87.59), ("TraCoCo", 87.59)]
    implemented = {r["method"]: r["ratios"] for r in table["rows"]
                   if r.get("run", True) and r["method"] != "supervised" and r["method"] not in BASELINES}
    # the literature's baselines run wherever the catalogue has them
    assert all(r.get("run", True) == (r["method"] in cfg["methods"]) for r in table["rows"] if r["method"] in BASELINES)
    assert implemented == {**{m: [5, 10, 20] for m in ("mean_teacher", "ua_mt", "cps", "bcp", "alhvr")},
                           "buarl_mt": [5, 10], "buarl_bcp": [5, 10]}
    assert [r["ratios"] for r in table["rows"] if r["method"] == "supervised"] == [[5, 10, 20], [100]]
    # every row not run here has a value for each of its ratios
    for row in table["rows"]:
        if not row.get("run", True):
            assert set(row["ratios"]) <= set(values[row["method"]]), row


def test_the_alhvr_tables_carry_every_value_of_their_paper_tables():
    from semiseg.references import reference_values

    cfg = _catalogue()
    full = {"dice", "jaccard", "hd95", "asd"}

    def cells(name):
        values = reference_values(cfg["tables"][name])
        return {(row["method"], r): values.get(row["method"], {}).get(r) for row in cfg["tables"][name]["rows"]
                for r in row["ratios"]}

    table2 = cells("alhvr_acdc")  # 3 U-Net rows + 10 methods at 7 and 14 labeled; the code's ALHVR at 7
    assert len(table2) == 24 and table2.pop(("alhvr_code", 10)) is None
    assert all(v and set(v[0][1]) == full for v in table2.values())
    assert table2[("alhvr", 10)][0][1]["dice"] == 90.56 and table2[("supervised", 100)][0][1]["dice"] == 91.10
    table5 = cells("alhvr_ablation")
    assert len(table5) == 4 and all(set(v[0][1]) == full for v in table5.values())
    assert table5[("alhvr_baseline", 10)][0][1] == {"dice": 86.61, "jaccard": 77.14, "hd95": 7.30, "asd": 2.15}
    table6 = {m: v[0][1]["dice"] for (m, _), v in cells("alhvr_beta").items()}
    assert table6 == {"alhvr_beta_05": 89.88, "alhvr_beta_06": 89.94, "alhvr_beta_07": 90.26, "alhvr": 90.56,
                      "alhvr_beta_09": 89.85}
    table1 = {m: v[0][1]["dice"] for (m, _), v in cells("alhvr_regions").items()}
    assert table1 == {"cps_regions_drop_none": 85.34, "cps_regions_drop_r2r3": 87.13, "cps_regions_drop_r1r3": 88.46,
                      "cps_regions_drop_r1r2": 88.20, "cps_regions_drop_r3": 87.41, "cps_regions_drop_r2": 82.51,
                      "cps_regions_drop_r1": 88.58}


def test_runs_that_are_no_result_in_different_ways_are_all_named_in_the_title():
    info = {**DATASET_INFO, "test_cases": 40, "own_schedule": "paper"}
    run_info = _smoke_info(2)
    run_info[("mean_teacher", 20, 0)] = {"schedule": "smoke", "iterations": 6, "test_cases": 2}
    text = build_table(SPEC, dataset_info=info, results=full_results(), footer=FOOTER, run_info=run_info)
    assert text.splitlines()[0] == ("# Synthetic 2D demo — not a result: † smoke: 2 of 40 test volumes, 4 iterations"
                                    " — not a result; ‡ smoke: 2 of 40 test volumes, 6 iterations — not a result")
    rows = table_rows(text)[2:]
    assert rows[3][3].startswith("87.50 ± 0.71 (†, ‡)")  # MT at 20 %: seed 0 ran 6 iterations, seed 1 4
    assert rows[0][3].startswith("81.00 ± 1.41 (†)")


def test_the_smoke_mark_counts_iterations_in_words():
    from semiseg.reporting.notes import smoke_mark

    ds = {"test_cases": 20, "own_schedule": "paper"}
    assert smoke_mark({"schedule": "smoke", "iterations": 1, "test_cases": 1}, ds) == (
        "smoke: 1 of 20 test volumes, 1 iteration — not a result")
    assert smoke_mark({"schedule": "smoke", "iterations": 2, "test_cases": 20}, ds) == (
        "smoke: 20 of 20 test volumes, 2 iterations — not a result")
    assert smoke_mark({"schedule": "paper", "iterations": 2, "test_cases": 20}, ds) == ""


# ----------------------------------------------------------------------------- values no evaluation writes
_HEADER = "case,class,class_name,dice,jaccard,hd95,asd,pred_empty,gt_empty\n"


@pytest.mark.parametrize("line, fragment", [
    ("c1,1,a,2.0,0.6667,2.0,1.0,False,False", "line 3 (case 'c1', class 1): dice must be in [0, 1]"),
    ("c1,1,a,0.8,-0.1,2.0,1.0,False,False", "line 3 (case 'c1', class 1): jaccard must be in [0, 1]"),
    ("c1,1,a,0.8,0.6667,-2.0,1.0,False,False", "line 3 (case 'c1', class 1): hd95 must be >= 0"),
    ("c1,1,a,0.8,0.6667,2.0,-1.0,False,False", "line 3 (case 'c1', class 1): asd must be >= 0"),
    ("c1,1,a,0.0,0.0,0.0,0.0,True,True", "both empty, so dice and jaccard must be 1 and hd95 and asd 0"),
    ("c1,1,a,0.5,0.3333,40.0,40.0,True,False", "one of prediction and reference is empty, so dice and jaccard must be 0"),
    ("c1,1,a,0.0,0.0,0.0,0.0,False,True", "so hd95 and asd must both be the image's diagonal"),
], ids=["dice-2", "jaccard-negative", "hd95-negative", "asd-negative", "both-empty", "one-empty-dice",
        "one-empty-distance"])
def test_the_table_stage_refuses_a_value_no_evaluation_writes(tmp_path, line, fragment):
    """A metrics.csv with Dice 2.0 once gave a cell of 16.67 and exit 0: every value read is
    checked against what an evaluation can write (docs/metrics.md), naming the file and line."""
    import json

    from semiseg.reporting.build import table_from_runs

    metrics = tmp_path / "runs" / "d" / "supervised" / "50" / "seed0" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(_HEADER + "c0,1,a,0.8,0.6667,2.0,1.0,False,False\n" + line + "\n")
    descriptor = tmp_path / "dataset.json"
    descriptor.write_text(json.dumps({"patients": {"train": ["p0", "p1"], "val": [], "test": ["p2"]}}))
    spec = {"table": {"title": "T", "dataset": "d", "seeds": [0], "rows": [{"method": "supervised", "ratios": [50]}]},
            "ratios": {"50": 1}, "schedule": "smoke", "distance_unit": "voxel", "fingerprint": "f00"}
    with pytest.raises(ValueError) as exc:
        table_from_runs(spec, descriptor=descriptor, metrics=[metrics], out=tmp_path / "t.md")
    assert str(exc.value).startswith(f"{metrics}: ") and fragment in str(exc.value)
    assert not (tmp_path / "t.md").exists()
    # the documented values of an empty structure are accepted
    metrics.write_text(_HEADER + "c0,1,a,1.0,1.0,0.0,0.0,True,True\nc1,1,a,0.0,0.0,54.8,54.8,False,True\n")
    table_from_runs(spec, descriptor=descriptor, metrics=[metrics], out=tmp_path / "t.md")


def test_an_empty_metrics_file_is_named(tmp_path):
    from semiseg.metrics.csv_io import read_metrics_csv

    (tmp_path / "metrics.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'metrics.csv'}: the file is empty"):
        read_metrics_csv(tmp_path / "metrics.csv")
