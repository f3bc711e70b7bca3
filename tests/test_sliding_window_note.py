"""A 3D table's footer names the sliding-window stride its runs test at: a schedule's
``test_stride`` (the LA smoke schedule's 80 x 112 x 112) where one is set, per row where rows differ,
and the dataset's (or the table's own) otherwise. Config only: seconds."""

from __future__ import annotations

import copy
import functools

from conftest import REPO
from semiseg.config import load_config, run_spec, table_runs, table_spec


@functools.lru_cache(maxsize=None)
def _loaded(schedule: str) -> dict:
    return load_config({"tables": ["la"], "schedule": schedule}, root=REPO)


def _cfg(schedule: str) -> dict:
    """The repository's config under ``schedule`` (a copy: tests change it)."""
    return copy.deepcopy(_loaded(schedule))


def test_the_la_smoke_footer_names_the_smoke_schedule_s_test_stride():
    cfg = _cfg("smoke")
    note = table_spec(cfg, "la")["sliding_window"]
    used = {tuple(run_spec(cfg, *run)["dataset"]["stride"]) for run in table_runs(cfg, "la")}
    assert used == {(80, 112, 112)}  # what every run of the table tests at
    assert note == ("80 x 112 x 112 windows (z, y, x), stride 80 x 112 x 112 "
                    "(the smoke schedule's test_stride; la's: 4 x 18 x 18)")


def test_the_la_paper_footer_names_the_dataset_s_stride():
    assert table_spec(_cfg("paper"), "la")["sliding_window"] == "80 x 112 x 112 windows (z, y, x), stride 4 x 18 x 18"


def test_rows_at_different_strides_are_named_row_by_row():
    cfg = _cfg("smoke")
    cfg["methods"]["mean_teacher"]["schedule"] = {"smoke": {"test_stride": [4, 18, 18]}}  # MT's runs only
    next(r for r in cfg["tables"]["la"]["rows"] if r["method"] == "sassnet")["run"] = False  # a paper-only row
    assert run_spec(cfg, "la", "mean_teacher", 10, 0)["dataset"]["stride"] == [4, 18, 18]
    note = table_spec(cfg, "la")["sliding_window"]
    assert note.endswith(", SGRS-Net, CRLN; the smoke schedule's test_stride), 4 x 18 x 18 (MT; la's)"), note
    assert note.startswith("80 x 112 x 112 windows (z, y, x), stride 80 x 112 x 112 (V-Net (labeled only), "), note
    assert "SASSNet" not in note  # a paper-only row runs nothing


def test_a_stride_variant_at_a_schedule_s_test_stride_names_both():
    cfg = _cfg("smoke")
    cfg["schedules"]["smoke"]["datasets"]["brats"]["test_stride"] = [96, 96, 96]
    assert table_spec(cfg, "brats_stride16")["sliding_window"] == (
        "96 x 96 x 96 windows (z, y, x), stride 96 x 96 x 96 (the smoke schedule's test_stride; "
        "this table's: 16 x 16 x 16; brats's default: 64 x 64 x 64)")
    # without it the table's own stride, as before
    assert table_spec(_cfg("smoke"), "brats_stride16")["sliding_window"] == (
        "96 x 96 x 96 windows (z, y, x), stride 16 x 16 x 16 (this table's; brats's default: 64 x 64 x 64)")
