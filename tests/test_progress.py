"""Training progress: one log line per validation, a live train.csv, a bar only on a terminal."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

from semiseg.engine.loop import train
from semiseg.engine.progress import Progress, format_duration
from test_engine import _spec, _tiny_store


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _rows(n, start=0):
    return [{"iteration": i, "lr": 0.01, "total": 1.0 + i, "ce": 0.5 * i, "dice": 2.0} for i in range(start, n)]


def test_one_line_per_validation_with_mean_terms_rate_and_eta(tmp_path):
    out, clock = io.StringIO(), _Clock()
    p = Progress(10, name="mt", csv_path=tmp_path / "train.csv", stream=out, clock=clock)
    p.start(0, [])
    rows = []
    for row in _rows(4):
        rows.append(row)
        p.update(row)
        clock.now += 0.5  # 2 it/s
    rows[-1]["val_dice"] = 0.75
    line = p.validation(rows[-1], 0.75, 4, rows)
    # terms are means over iterations 0..3: total (1+2+3+4)/4 = 2.5, ce (0+.5+1+1.5)/4 = 0.75
    assert "iteration 4/10 (40.0%)" in line
    assert "total 2.5000 ce 0.7500 dice 2.0000" in line and "lr" not in line.split("|")[1]
    assert "val Dice 0.7500 | best 0.7500 @ 4 | 2.00 it/s | ETA 0:00:03" in line
    # the live csv holds every row so far, val_dice where it was measured
    with open(tmp_path / "train.csv") as fh:
        live = list(csv.DictReader(fh))
    assert [r["iteration"] for r in live] == ["0", "1", "2", "3"] and live[3]["val_dice"] == "0.75"
    for row in _rows(10, start=4):  # the next stretch: 6 iterations at 1 it/s
        rows.append(row)
        p.update(row)
        clock.now += 1.0
    rows[-1]["val_dice"] = 0.5
    line = p.validation(rows[-1], 0.75, 4, rows)
    assert "iteration 10/10 (100.0%)" in line and "total 7.5000" in line  # mean of 5..10
    assert "best 0.7500 @ 4 | 1.00 it/s | ETA 0:00:00" in line
    p.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4 and "starting, 10 iterations" in lines[0] and "finished 10 iterations in 0:00:08" in lines[3]
    assert sum(1 for r in csv.DictReader(open(tmp_path / "train.csv"))) == 10


def test_a_bar_only_on_a_terminal():
    for stream, bar in ((io.StringIO(), False), (_Tty(), True)):
        p = Progress(3, name="mt", stream=stream)
        p.start(0, [])
        for row in _rows(3):
            p.update(row)
        p.close()
        assert ("\r" in stream.getvalue()) is bar, stream.getvalue()
    # asked not to draw one, even on a terminal
    tty = _Tty()
    p = Progress(3, name="mt", stream=tty, bar=False)
    p.start(0, [])
    p.update(_rows(1)[0])
    p.close()
    assert "\r" not in tty.getvalue()


def test_resumed_run_says_so_and_counts_from_there():
    out, clock = io.StringIO(), _Clock()
    p = Progress(10, name="mt", stream=out, clock=clock)
    p.start(6, _rows(6))
    for row in _rows(8, start=6):
        p.update(row)
        clock.now += 1.0
    line = p.validation({**_rows(8)[-1], "val_dice": 0.1}, 0.2, 3, _rows(8))
    assert "resuming at iteration 6 of 10 (6 logged rows)" in out.getvalue()
    assert "iteration 8/10" in line and "1.00 it/s | ETA 0:00:02" in line


def test_format_duration():
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(float("nan")) == "?"
    assert format_duration(90000) == "1 day, 1:00:00"


def test_train_csv_is_live_at_each_validation(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    # stopped after 4 iterations, validated at 2 and 4: the run is unfinished, its train.csv is there
    assert train(_spec(iterations=8, val_interval=2), store, split, out, progress=False,
                 stop_after=4) == {"stopped_at": 4}
    assert not (out / "model.pt").exists()
    with open(out / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3]
    assert [r["val_dice"] != "" for r in rows] == [False, True, False, True]


def test_job_log_has_one_line_per_validation_and_no_carriage_return(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    spec = _spec(iterations=9, val_interval=3)
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "semiseg.cli", "train", "--spec", json.dumps(spec), "--store", str(store),
           "--split", str(split), "--out-dir", str(tmp_path / "run"), "--threads", "1"]
    with open(log, "w") as err:  # a file, as the workflow's `--log` (no --no-progress: not a tty)
        subprocess.run(cmd, stderr=err, check=True, timeout=120)
    text = log.read_text()
    assert "\r" not in text
    validations = [ln for ln in text.splitlines() if re.search(r"train mean_teacher: iteration \d+/9 ", ln)]
    assert [re.search(r"iteration (\d+)/9", ln)[1] for ln in validations] == ["3", "6", "9"], text
    assert all("val Dice" in ln and "it/s" in ln and "ETA" in ln and "consistency" in ln for ln in validations)
