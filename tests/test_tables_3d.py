"""The Pancreas-CT, BraTS and AbdomenCT-1K tables built end to end with the smoke schedule, on
STAND-INS: tiny synthetic releases written here in the official formats (DICOM series + NIfTI
labels, BraTS case folders, AbdomenCT-1K images + Mask/), not the data. Their numbers are not
results; the test proves that each release goes from its reader to its table, beside the papers'
values.

The tables: the datasets' own (pancreas, brats, abdomenct1k) and SGRS-Net's and CRLN's Pancreas-CT
and BraTS2019 tables (sgrs_pancreas, crln_pancreas, crln_brats: paper values beside ours, CRLN's
with their bootstrap interval). SGRS-Net's BraTS table (sgrs_brats) is left out: its cells are
checked one by one in tests/test_sgrs.py, and its methods run here on its dataset
(brats at stride 16, through crln_brats) at other ratios. To keep it to minutes on 2 CPU cores,
the copied catalogue shrinks what the stand-ins cannot fill: patches of 32^3 (64^2 slices) instead
of 96^3 (256^2), strides to match (16^3, so the tables at the papers' stride 16 share the datasets'
runs), and ratios over the few stand-in cases; and each table keeps, of its rows that run, the
supervised bounds, ALHVR, SGRS-Net and CRLN (a method runs on these datasets as on ACDC and LA,
where the smoke builds run every row; here what is proven is the path from each release to its
table). Everything else (readers, networks, methods with their per-dataset settings, the tables'
other rows and the papers' values) is the repository's.
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
from helpers import table_cells
from smoke_targets import BASELINES
from release_files import write_abdomen_release, write_brats_release, write_lists, write_pancreas_release

TABLES = ("pancreas", "brats", "abdomenct1k", "sgrs_pancreas", "crln_pancreas", "crln_brats")
KEPT_RUNS = ("supervised", "alhvr", "sgrs", "crln")  # of the rows that run (module docstring)


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
        rows = [r for r in catalogue[name]["rows"] if r["method"] in KEPT_RUNS or r.get("run") is False]
        catalogue[name]["rows"] = rows
        kept = {r["method"] for r in rows}
        citations = catalogue[name].get("reference")
        if isinstance(citations, list):  # a citation narrowed to some rows: to those kept
            for citation in citations:
                if "methods" in citation:
                    citation["methods"] = [m for m in citation["methods"] if m in kept]
            catalogue[name]["reference"] = [c for c in citations if c.get("methods", True)]
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
    print(f"\n{len(TABLES)} smoke tables on stand-ins: {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wf / "results"


def _rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


@pytest.mark.slow
def test_the_3d_tables_build_on_stand_ins(built):
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
    assert "SGRS-Net T3 29.32" in t and "CRLN T3 79.10" in t, t  # V-Net at 3 (SGRS-Net), TraCoCo at 6 (CRLN)
    sgrs = [row for row in _rows(t) if row.startswith("| SGRS-Net |")]
    assert len(sgrs) == 2 and all("not run" not in row for row in sgrs), t  # the implemented SGRS-Net
    assert "(paper: SGRS-Net T3 77.20)" in sgrs[0] and "(paper: SGRS-Net T3 80.55)" in sgrs[1], t
    t = (res / "tables" / "abdomenct1k.md").read_text(encoding="utf-8")
    assert "(paper: ALHVR T3 84.75)" in t, t
    alhvr = [row for row in _rows(t) if row.startswith("| ALHVR |")]
    assert len(alhvr) == 2 and all("not run" not in row for row in alhvr) and "Sliding window" not in t
    for name, paper in (("sgrs_pancreas", ("77.20", "80.55")),):
        t = (res / "tables" / f"{name}.md").read_text(encoding="utf-8")
        sgrs = [row for row in _rows(t) if row.startswith("| SGRS-Net |")]
        assert len(sgrs) == 2 and all(f"(paper {v})" in row for row, v in zip(sgrs, paper)), t
        assert all(re.search(r"\| \d+\.\d\d", row) for row in sgrs), t  # ours beside the paper's
    for name, dataset, paper in (("crln_pancreas", "pancreas", ("CRLN T3 79.17; CRLN T3 best 81.24",
                                                                "CRLN T3 82.76; CRLN T3 best 83.52")),
                                 ("crln_brats", "brats", ("CRLN T4 86.73", "CRLN T4 87.17"))):
        t = (res / "tables" / f"{name}.md").read_text(encoding="utf-8")
        crln = [row for row in _rows(t) if row.startswith("| CRLN |")]
        assert len(crln) == 2 and all(f"(paper: {v})" in row for row, v in zip(crln, paper)), t
        assert all(re.search(r"\| \d+\.\d\d \(95% CI ", row) for row in crln) and "100 resamples" in t, t
        # the rows kept as the module docstring says: not UA-MT's or the code's version's runs
        assert "| TraCoCo |" in t and "| UA-MT |" not in t and "| CRLN (code's version) |" not in t, t
        spec = json.loads((res / "runs" / dataset / "crln" / "10" / "seed0" / "config.json").read_text())["spec"]
        assert (spec["method"]["params"]["prototypes"], spec["method"]["params"]["prototype_dim"]) == (4, 4)


# CRLN's Tables 3 and 4 as the paper's text extraction prints them (../shared/papers/004: Dice,
# Jaccard, ASD, 95HD; "*" rows' "mean±std" with the "±" lost, the std dropped here). Table 3's
# two groups per ratio are the last and the best checkpoint ("T3", "T3 best"); "-" = left out
# (CAC4SSL at 12: ASD 7.25 and 95HD 1.25, garbled).
CRLN_T3 = """
6 T3: UA-MT 66.44 52.02 3.03 17.04 | SASSNet 68.97 54.29 1.96 18.83 | URPC 73.53 59.44 7.85 22.57 |
  MCCauSSL 72.89 58.06 4.37 14.19 | CAC4SSL 74.19 59.82 3.01 15.36 | RCPS 76.81 63.07 2.90 15.43 |
  TraCoCo 79.10 65.90 2.58 8.42 | CRLN 79.17 66.32 1.94 7.27
6 T3 best: MC-Net+ 69.44 55.16 3.74 16.72 | MLRPL 75.93 62.12 1.54 9.07 | CRLN 81.24 68.84 3.15 8.38
12 T3: UA-MT 76.10 62.62 2.43 10.84 | SASSNet 76.39 63.17 1.42 11.06 | MCF 75.00 61.27 3.27 11.59 |
  DCR 79.84 67.72 1.56 7.23 | URPC 80.02 67.30 1.98 8.51 | MCCauSSL 80.92 68.26 1.53 8.11 |
  TraCoCo 81.67 69.40 1.47 5.68 | CAC4SSL 80.43 67.85 - - | RCPS 81.62 69.25 2.00 7.20 | CRLN 82.76 70.90 1.35 4.81
12 T3 best: DTC 78.27 64.75 2.25 8.36 | MC-Net+ 78.95 66.37 1.79 8.78 | MLRPL 81.53 69.35 1.33 6.81 |
  BCP 82.91 70.97 2.25 6.43 | TraCoCo 83.31 71.64 1.70 7.02 | CRLN 83.52 71.99 1.46 4.70
"""
CRLN_T4 = """
25 T4: UA-MT 84.64 74.76 2.36 10.47 | SASSNet 84.73 74.89 2.44 9.88 | LG-ER 84.75 74.97 2.21 9.56 |
  URPC 84.53 74.60 2.55 9.79 | MC-Net+ 84.96 75.14 2.36 9.45 | SDC-SSL 84.76 75.11 1.95 11.29 |
  MCCauSSL 83.54 73.46 1.98 12.53 | MLRPL 84.29 74.74 2.55 9.57 | BCP 85.14 76.01 2.88 9.89 |
  TraCoCo 85.79 76.49 1.72 7.03 | CRLN 86.73 77.85 1.67 7.15
50 T4: UA-MT 85.32 75.93 1.98 8.68 | SASSNet 85.64 76.33 2.04 9.17 | LG-ER 85.67 76.36 1.99 8.92 |
  URPC 85.38 76.14 1.87 8.36 | SDC-SSL 85.45 76.23 1.96 7.61 | MLRPL 85.47 76.32 2.00 7.76 |
  MC-Net+ 86.02 76.98 1.98 8.74 | BCP 86.13 77.24 2.06 8.99 | TraCoCo 86.69 77.69 1.93 8.04 |
  CRLN 87.17 78.19 1.62 6.79
"""


def _crln_paper(text: str) -> dict:
    """(row label, labeled count) -> our column order (Dice, Jaccard, 95HD, ASD) -> [(tag, value)]."""
    out: dict = {}
    for block in re.split(r"\n(?=\d+ T)", text.strip()):
        head, body = block.split(":", 1)
        n, tag = head.split(" ", 1)
        for item in body.replace("\n", " ").split("|"):
            label, dice, jac, asd, hd95 = item.split()
            for col, v in enumerate((dice, jac, hd95, asd)):
                if v != "-":
                    out.setdefault((label, int(n)), {}).setdefault(col, []).append((f"CRLN {tag}", v))
    return out


_cells = table_cells


@pytest.mark.parametrize("name, paper, n_train", [("crln_pancreas", CRLN_T3, 62), ("crln_brats", CRLN_T4, 250)],
                         ids=["pancreas", "brats"])
def test_every_cell_of_the_crln_3d_tables_carries_its_paper_values(name, paper, n_train):
    import pandas as pd

    from semiseg.config import load_config
    from semiseg.metrics.summary import case_means
    from semiseg.reporting.tables import build_table

    cfg = load_config(root=REPO)
    table = cfg["tables"][name]
    assert table["bootstrap"] == {"resamples": 100, "confidence": 0.95, "seed": 0}
    ratios = {int(k): v for k, v in cfg["datasets"][table["dataset"]]["ratios"].items()}
    assert ratios[100] == n_train
    results = {(row["method"], int(r), s): None for row in table["rows"] if row.get("run", True)
               for r in row["ratios"] for s in table["seeds"]}
    ours = {"dice": 0.8, "jaccard": 0.7, "hd95": 10.0, "asd": 3.0}
    results[("crln", 10, 0)] = ours
    per_case = case_means(pd.DataFrame([{"case": c, "class_name": "fg", **ours} for c in ("a", "b")]))
    cells = _cells(build_table(table, dataset_info={"train_patients": n_train, "labeled_patients": ratios},
                               results=results, footer={}, case_values={("crln", 10, 0): per_case}))
    expected = _crln_paper(paper)
    labeled = {n: f"{n} ({r}%)" for r, n in ratios.items()}
    for (label, n), columns in expected.items():
        cell = cells[(label, labeled[n])]
        for col in range(4):
            refs = columns.get(col, [])
            want = "(paper: " + "; ".join(f"{t} {v}" for t, v in refs) + ")" if refs else ""
            ours = ["80.00", "70.00", "10.00", "3.00"][col] if (label, n) == ("CRLN", ratios[10]) else "not run"
            assert cell[col].startswith(ours) and cell[col].endswith(want), (label, n, col, cell[col])
            if not refs:
                assert cell[col] == "not run", cell  # the garbled values are left out
    # the rows that run here: ours only where the paper has no value
    runs = {(r["label"], n) for r in table["rows"] if r.get("run", True) for n in (ratios[x] for x in r["ratios"])}
    baselines = {r["label"] for r in table["rows"] if r["method"] in BASELINES and r["method"] in cfg["methods"]}
    assert {"V-Net (labeled only)", "MT", "UA-MT", "BCP", "SGRS-Net", "CRLN", "CRLN (code's version)"} | baselines == \
        {label for label, _ in runs} - {"V-Net (all labeled, upper bound)"}
    for label, n in runs - set(expected):
        assert cells[(label, labeled[n])] == ["not run"] * 4, (label, n)
    assert set(cells) == {(label, labeled[n]) for label, n in set(expected) | runs}


def test_crln_runs_with_its_code_settings_on_pancreas_and_brats():
    from semiseg.config import load_config, method_settings, run_spec, table_runs, table_stride

    cfg = load_config({"schedule": "paper"}, root=REPO)
    assert cfg["tables"]["crln_pancreas"]["dataset"] == "pancreas"  # MC-Net's convention, 62 / 20
    brats = cfg["tables"]["crln_brats"]["dataset"]
    assert brats == "brats" == cfg["tables"]["brats_stride16"]["dataset"]  # shared runs
    assert table_stride(cfg, "crln_brats") == [16, 16, 16] == table_stride(cfg, "brats_stride16")
    assert {d for d, *_ in table_runs(cfg, "crln_pancreas")} == {"pancreas"}
    # the 10 % ratio's values of the code's configs (R = prototypes = representation dimension)
    expect = {("crln", "pancreas"): (4, 4, 0.6, "random", 1.0), ("crln_code", "pancreas"): (4, 4, 0.6, "fixed", 1.0),
              ("crln", "brats"): (4, 4, 0.6, "random", 0.5), ("crln_code", "brats"): (4, 4, 0.1, "fixed", 0.5),
              ("crln", "la"): (16, 16, 0.6, "random", 0.5), ("crln_code", "la"): (16, 16, 0.6, "fixed", 0.5)}
    for dataset, at in (("pancreas", None), ("brats", None), (brats, [16, 16, 16]), ("la", None)):
        for method in cfg["methods"]:
            if not method.startswith("crln"):
                continue
            p = method_settings(cfg, dataset, method)["params"]
            s = run_spec(cfg, dataset, method, 10, 0, stride=at)["schedule"]
            assert (s["iterations"], s["lr"], s["weight_decay"], s["nesterov"], s["labeled_batch_size"]) == \
                (40000, 0.0025, 0.0005, True, 2), (dataset, method)
            key = (method, dataset)
            if key in expect:
                assert (p["prototypes"], p["prototype_dim"], p["xi"], p["xi_draw"], p["contrast_weight"]) == expect[key]
            else:  # the ablation entries keep their own switches on every dataset
                assert p == method_settings(cfg, "la", method)["params"], (dataset, method)
    assert method_settings(cfg, "pancreas", "crln_k1")["params"]["prototypes"] == 1
    assert method_settings(cfg, "pancreas", "crln_baseline")["params"]["contrast_weight"] == 0.0
    assert run_spec(cfg, brats, "crln", 10, 0, stride=[16, 16, 16])["dataset"]["stride"] == [16, 16, 16]



def test_the_papers_3d_tables_are_listed_in_the_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    datasets = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    for name in ("sgrs_pancreas", "sgrs_brats", "crln_pancreas", "crln_brats"):
        assert (REPO / "config" / "tables" / f"{name}.yaml").is_file()
        assert f"{name}.yaml" in readme and f"`{name}`" in datasets, name
