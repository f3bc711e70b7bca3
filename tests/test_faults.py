"""Faults: killed and preempted training, out of memory, concurrent runs, determinism."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_SCHEDULE, make_workflow, snakemake
from semiseg.device import ResourceError
from semiseg.engine.loop import TrainingError, train
from semiseg.fingerprint import code_fingerprint
from semiseg.inference.run import infer
from semiseg.metrics.evaluate import evaluate
from test_engine import _spec, _tiny_store


def _start_training(tmp_path, spec):
    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "semiseg.cli", "train", "--spec", json.dumps(spec), "--store", str(store),
           "--split", str(split), "--out-dir", str(out), "--no-progress", "--threads", "1"]
    return cmd, out


def _wait_for(path, proc, timeout=120):
    t = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path} appeared: {proc.stderr.read()[-2000:]}")
        if time.time() - t > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def test_sigkill_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
    spec = _spec(iterations=400, checkpoint_interval=3, val_interval=1000)
    cmd, out = _start_training(tmp_path, spec)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints" / "state.pt", proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert not (out / "model.pt").exists()
    saved = torch.load(out / "checkpoints" / "state.pt", weights_only=False)["iteration"]
    assert saved >= 3
    # the same spec and code (the CLI fingerprints the train code): the re-run picks the state up
    summary = train(spec, tmp_path / "store.h5", tmp_path / "split.json", out, progress=False,
                    code_fingerprint=code_fingerprint("train", "mean_teacher"))
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= saved
    assert (out / "model.pt").exists()


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path):
    spec = _spec(iterations=100000, checkpoint_interval=100000, val_interval=100000)
    cmd, out = _start_training(tmp_path, spec)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints", proc)  # created before the loop starts
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    state = torch.load(out / "checkpoints" / "state.pt", weights_only=False)
    assert state["iteration"] >= 0  # 0 when the signal came while the data was still loading
    assert not (out / "model.pt").exists()


def test_out_of_memory_names_the_settings_to_change(tmp_path, monkeypatch):
    store, split = _tiny_store(tmp_path / "store.h5")
    from semiseg.methods.mean_teacher import MeanTeacher

    def oom(self, ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MeanTeacher, "training_step", oom)
    with pytest.raises(TrainingError, match=r"out of cpu memory at iteration 0: .*labeled_batch_size.*patch_size"):
        train(_spec(), store, split, tmp_path / "run", progress=False)


def _raise_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_while_loading_the_training_set_names_the_patch_size(tmp_path, monkeypatch):
    store, split = _tiny_store(tmp_path / "store.h5")
    monkeypatch.setattr("semiseg.engine.loop.load_resident", _raise_oom)
    with pytest.raises(TrainingError, match=r"out of cpu memory while loading the training set .*patch_size"):
        train(_spec(), store, split, tmp_path / "run", progress=False)


def test_out_of_memory_in_inference_is_a_message_and_leaves_no_predictions(tmp_path, monkeypatch):
    store, split = _tiny_store(tmp_path / "store.h5")
    run = tmp_path / "run"
    train(_spec(iterations=1), store, split, run, progress=False)
    monkeypatch.setattr("semiseg.inference.run.predict_volume", _raise_oom)
    with pytest.raises(ResourceError, match=r"out of cpu memory predicting \S+: .*patch_size"):
        infer(run, store, split, run / "predictions", device="cpu")
    assert not (run / "predictions").exists() and not list(run.glob(".predictions*"))


def test_same_seed_on_cpu_gives_bit_identical_metrics(tmp_path):
    store, split = _tiny_store(tmp_path / "store.h5")
    csvs = []
    for name in ("a", "b"):
        run = tmp_path / name
        train(_spec(), store, split, run, progress=False)
        infer(run, store, split, run / "predictions", device="cpu")
        evaluate(run / "predictions", store, run / "metrics.csv")
        csvs.append((run / "metrics.csv").read_bytes())
    assert csvs[0] == csvs[1]


@pytest.mark.slow
def test_a_second_snakemake_on_the_same_directory_refuses(tmp_path):
    # trainings long enough that the first run still holds its lock while the two others start
    schedule = copy.deepcopy(TINY_SCHEDULE)
    schedule["smoke"]["defaults"].update(iterations=200, val_interval=100, checkpoint_interval=100)
    root = make_workflow(tmp_path / "wf", schedule=schedule)
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(root),
                              "--snakefile", str(root / "Snakefile")], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lock_dir = root / ".snakemake" / "locks"
    t = time.time()
    while not (lock_dir.exists() and any(lock_dir.iterdir())):
        assert first.poll() is None, first.stdout.read()[-2000:]
        assert time.time() - t < 120, "the first run never took its lock"
        time.sleep(0.2)
    # Snakemake looks for incomplete outputs before it takes its lock, so a plain second run is
    # refused by whichever it meets first: the running job's incomplete marker, or the lock.
    second = snakemake(root)
    assert second.returncode != 0
    assert any(s in second.stdout + second.stderr for s in ("cannot be locked", "Incomplete files")), \
        second.stderr[-2000:]
    # Following that message's advice (--rerun-incomplete) while the first run holds the lock is
    # still refused, by the lock, and nothing of the first run's is touched.
    third = snakemake(root, "--rerun-incomplete")
    assert third.returncode != 0
    assert "cannot be locked" in third.stdout + third.stderr, third.stderr[-2000:]
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]
    assert (root / "results" / "tables" / "tiny.md").exists()
    again = snakemake(root, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr


# ----------------------------------------------------------------------------- outputs put in place
class _Killed(BaseException):
    """Stands for a SIGKILL at that point: nothing after it runs."""


def test_a_training_killed_between_its_final_outputs_resumes_and_finishes(tmp_path, monkeypatch):
    store, split = _tiny_store(tmp_path / "store.h5")
    spec = _spec(iterations=4, checkpoint_interval=2, val_interval=2)
    reference = tmp_path / "uninterrupted"
    train(spec, store, split, reference, progress=False)
    out = tmp_path / "run"
    real_replace = os.replace

    def killed_before_model_pt(src, dst, *args, **kwargs):
        if Path(dst).name == "model.pt":
            raise _Killed()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed_before_model_pt)
    with pytest.raises(_Killed):
        train(spec, store, split, out, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / "models.pt").exists() and not (out / "model.pt").exists()
    summary = train(spec, store, split, out, progress=False)  # stuck for good before: best_models.pt was gone
    assert summary["resumed_from"] == 4
    assert not (out / "checkpoints").exists()
    for name in ("model.pt", "models.pt"):
        got, want = torch.load(out / name), torch.load(reference / name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


# ----------------------------------------------------------------------------- one trainer per run folder
def test_a_second_trainer_in_a_run_folder_stops_at_once_naming_the_first(tmp_path):
    from semiseg.engine.runlock import RunFolderBusy, run_folder_lock

    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    with run_folder_lock(out / "checkpoints"):
        with pytest.raises(RunFolderBusy, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            train(_spec(), store, split, out, progress=False)
    assert not (out / "model.pt").exists()
    train(_spec(), store, split, out, progress=False)  # released: the next one runs
    assert (out / "model.pt").exists()


def test_the_run_folder_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    spec = _spec(iterations=100000, checkpoint_interval=100000, val_interval=100000)
    cmd, out = _start_training(tmp_path, spec)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "checkpoints", first)
        time.sleep(1)
        t = time.time()
        try:
            second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second trainer ran in the first one's run folder") from None
        assert second.returncode == 3 and time.time() - t < 60
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one goes on
    finally:
        first.kill()  # SIGKILL: the kernel releases the lock
        first.wait()
    assert train(spec, tmp_path / "store.h5", tmp_path / "split.json", out, progress=False,
                 stop_after=2) == {"stopped_at": 2}


# ----------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["022", "002"])
def test_outputs_honour_the_umask(tmp_path, mask):
    from semiseg.data.fetch import fetch
    from semiseg.metrics.csv_io import write_metrics_csv
    from semiseg.provenance import write_record
    from semiseg.reporting.tables import write_table

    old = os.umask(mask)
    try:
        store, _ = _tiny_store(tmp_path / "preprocessed" / "store.h5")
        row = {"case": "p0", "class": 1, "class_name": "a", "dice": 1.0, "jaccard": 1.0, "hd95": 0.0,
               "asd": 0.0, "pred_empty": False, "gt_empty": False}
        write_metrics_csv([row], tmp_path / "run" / "metrics.csv")
        write_table("# t\n", tmp_path / "tables" / "t.md")
        write_record("evaluate", primary_output=tmp_path / "run" / "metrics.csv", inputs=[], outputs=[],
                     args={}, started=time.time())
        fetch("syn", {"layout": "synthetic2d", "seed": 0,
                      "params": {"n_train": 1, "n_val": 0, "n_test": 1, "slices": [2, 2], "size": [32, 32]}},
              tmp_path / "raw" / "syn")
    finally:
        os.umask(old)
    files = [store, tmp_path / "run" / "metrics.csv", tmp_path / "tables" / "t.md",
             tmp_path / "run" / "provenance.evaluate.json", tmp_path / "raw" / "syn" / ".fetched.json",
             tmp_path / "raw" / "syn" / "train.list"]
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f
    for d in (tmp_path / "raw" / "syn", tmp_path / "raw" / "syn" / "data"):
        assert d.stat().st_mode & 0o777 == 0o777 & ~mask, d
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith((".tmp", ".partial"))]


# ----------------------------------------------------------------------------- a full disk
class _SmallDisk:
    """A file system with `free` bytes left, for the writes of semiseg.io: writes beyond it fail
    with ENOSPC after writing what fits, as a full disk does."""

    def __init__(self, free: int):
        self.free = free
        self._open = open

    def __call__(self, file, mode="r", *args, **kwargs):
        fh = self._open(file, mode, *args, **kwargs)
        if "w" not in mode and "a" not in mode:
            return fh
        disk, write = self, fh.write

        def limited(data):
            n = min(len(data), disk.free)
            write(data[:n])
            disk.free -= n
            if n < len(data):
                fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return n

        fh.write = limited
        return fh


def test_a_full_disk_is_one_message_and_the_next_attempt_leaves_no_temporary(tmp_path, monkeypatch):
    import semiseg.io
    from semiseg.io import atomic_write

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / ".state.pt.tmp").write_bytes(b"x" * 1000)  # what a killed attempt left
    state = {"w": torch.zeros(1 << 20)}  # 4 MB
    monkeypatch.setattr(semiseg.io, "open", _SmallDisk(free=1 << 20), raising=False)
    with pytest.raises(OSError) as err:
        atomic_write(ckpt / "state.pt", state)
    assert str(err.value) == (f"no space left on {ckpt}, needed about 5 MB (writing state.pt); free some space "
                              f"and run again")
    assert sorted(p.name for p in ckpt.iterdir()) == []  # neither this attempt's temporary nor the old one
    monkeypatch.undo()
    atomic_write(ckpt / "state.pt", state)
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.pt"]


def test_a_full_disk_during_training_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    import semiseg.io
    from semiseg.cli import main

    store, split = _tiny_store(tmp_path / "store.h5")
    out = tmp_path / "run"
    monkeypatch.setattr(semiseg.io, "open", _SmallDisk(free=100_000), raising=False)
    rc = main(["train", "--spec", json.dumps(_spec()), "--store", str(store), "--split", str(split),
               "--out-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3
    assert re.search(rf"semiseg train: error: no space left on {re.escape(str(out / 'checkpoints'))}, needed "
                     rf"about \d+ MB \(writing state\.pt\)", err), err[-2000:]
    assert "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- list files as editors write them
@pytest.fixture(scope="module")
def slices_layout(tmp_path_factory):
    from semiseg.data.synthetic import write_synthetic2d

    return write_synthetic2d(tmp_path_factory.mktemp("lists") / "src", seed=2, n_train=2, n_val=1, n_test=1,
                             slices=(2, 3), size=(32, 32))


def test_a_list_file_with_a_byte_order_mark_is_read_as_written(slices_layout, tmp_path):
    import shutil

    from semiseg.data.layouts import read_slices_layout

    src = Path(shutil.copytree(slices_layout, tmp_path / "copy"))
    plain = read_slices_layout(slices_layout, "syn")[1]
    (src / "train.list").write_bytes(b"\xef\xbb\xbf" + (src / "train.list").read_bytes())  # as Notepad saves
    assert read_slices_layout(src, "syn")[1] == plain


def test_a_latin1_list_file_is_named_with_its_line(slices_layout, tmp_path):
    import shutil

    from semiseg.errors import DataError
    from semiseg.data.layouts import read_slices_layout

    src = Path(shutil.copytree(slices_layout, tmp_path / "copy"))
    lines = (src / "test.list").read_text().splitlines()
    (src / "test.list").write_bytes("\n".join([*lines, "patient_\u00e8_frame01"]).encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_slices_layout(src, "syn")
    assert str(err.value) == (f"{src / 'test.list'}: line {len(lines) + 1}: byte 0xe8 is not UTF-8 text (is the "
                              f"file in another encoding, such as Latin-1?); save it as UTF-8")


@pytest.mark.slow
def test_two_snakemake_runs_with_disjoint_targets_both_run_as_the_readme_says(tmp_path):
    """What Snakemake's lock does not cover (README, "What is locked"): runs that create no file in
    common run side by side (so two runs may each start a training on one GPU)."""
    root = make_workflow(tmp_path / "wf")
    prep = snakemake(root, "results/splits/tiny2d/25.json")
    assert prep.returncode == 0, prep.stderr[-2000:]
    run = "results/runs/tiny2d/{}/25/seed0/model.pt"
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(root),
                              "--snakefile", str(root / "Snakefile"), run.format("supervised")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock_dir = root / ".snakemake" / "locks"
    t = time.time()
    while not (lock_dir.exists() and any(lock_dir.iterdir())):
        assert first.poll() is None, first.stdout.read()[-2000:]
        assert time.time() - t < 120, "the first run never took its lock"
        time.sleep(0.1)
    assert first.poll() is None
    second = snakemake(root, "results/splits/tiny2d/50.json")  # reads what the first reads, creates its own
    out, _ = first.communicate(timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-2000:]
    assert "cannot be locked" not in second.stdout + second.stderr
    assert first.returncode == 0, out[-2000:]


def _little_free(monkeypatch, free=1 << 20):
    import shutil as _shutil

    real = _shutil.disk_usage
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: real(p)._replace(free=free))


def test_a_store_that_would_not_fit_stops_before_hdf5_fails(tmp_path, monkeypatch):
    """HDF5 crashes the process (segfault in h5py's close) when a write fails on a full disk."""
    _little_free(monkeypatch)
    with pytest.raises(OSError) as err:
        _tiny_store(tmp_path / "preprocessed" / "store.h5")
    assert re.fullmatch(rf"no space left on {re.escape(str(tmp_path / 'preprocessed'))}, needed about \d+ MB "
                        rf"\(writing store\.h5\); free some space and run again", str(err.value))
    assert list((tmp_path / "preprocessed").iterdir()) == []


def test_predictions_on_a_full_disk_are_an_error_not_truncated_files(tmp_path, monkeypatch):
    """SimpleITK writes a truncated or empty NIfTI on a full disk and reports nothing."""
    import SimpleITK as sitk

    store, split = _tiny_store(tmp_path / "store.h5")
    run = tmp_path / "run"
    train(_spec(iterations=2), store, split, run, progress=False)
    real = sitk.WriteImage

    def truncated(image, path, *args, **kwargs):  # what a full disk did to SimpleITK's output
        real(image, path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(100)

    monkeypatch.setattr(sitk, "WriteImage", truncated)
    with pytest.raises(OSError, match=r"does not read back the same"):
        infer(run, store, split, run / "predictions", device="cpu")
    assert not (run / "predictions").exists()
    monkeypatch.setattr(sitk, "WriteImage", real)
    _little_free(monkeypatch)
    with pytest.raises(OSError, match=rf"^no space left on {re.escape(str(run))}, needed about \d+ MB \(writing "
                                      rf"predictions\)"):
        infer(run, store, split, run / "predictions", device="cpu")
    assert not [p for p in run.iterdir() if "predictions" in p.name]


# ----------------------------------------------------------------------------- a damaged model.pt
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing-key"])
def test_a_damaged_model_pt_names_the_file_and_the_job_that_writes_it(tmp_path, damage, capsys):
    from semiseg.cli import main

    store, split = _tiny_store(tmp_path / "store.h5")
    run = tmp_path / "run"
    train(_spec(iterations=1), store, split, run, progress=False)
    model = run / "model.pt"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "garbage":
        model.write_bytes(os.urandom(4096))
    elif damage == "empty":
        model.write_bytes(b"")
    else:
        weights = torch.load(model, weights_only=True)
        weights.pop(next(iter(weights)))
        torch.save(weights, model)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(model))}: not this run's network \(.*\); it is written by "
                                         r"the train job of the run \(dataset \w+, method \w+, ratio \d+, seed \d+"):
        infer(run, store, split, run / "predictions", device="cpu")
    assert not (run / "predictions").exists()
    code = main(["infer", "--run-dir", str(run), "--store", str(store), "--split", str(split), "--out",
                 str(run / "predictions"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"semiseg infer: error: {model}: not this run's network" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- a damaged state.pt
@pytest.mark.parametrize("also_previous", [False, True], ids=["previous-good", "previous-damaged-too"])
def test_a_damaged_state_is_moved_aside_and_the_run_resumes_from_the_one_before(tmp_path, caplog, also_previous):
    """A state.pt truncated by a full disk during a save once stopped every retry (--forcerun
    included) with a raw PytorchStreamReader traceback until removed by hand. Now the state before
    it is resumed (or, when that is damaged too, the run starts over, saying so), bit for bit."""
    from semiseg.engine.state import damaged_path, previous_path

    store, split = _tiny_store(tmp_path / "store.h5")
    spec = _spec(iterations=6, checkpoint_interval=2, val_interval=2)
    reference = tmp_path / "uninterrupted"
    train(spec, store, split, reference, progress=False)
    out = tmp_path / "run"
    assert train(spec, store, split, out, progress=False, stop_after=4) == {"stopped_at": 4}
    state = out / "checkpoints" / "state.pt"
    assert torch.load(previous_path(state), weights_only=False)["iteration"] == 2
    state.write_bytes(state.read_bytes()[:1000])
    if also_previous:
        previous_path(state).write_bytes(b"")
    with caplog.at_level("WARNING", logger="semiseg.train"):
        assert train(spec, store, split, out, progress=False, stop_after=5) == {"stopped_at": 5}
    words = (re.escape(f"{state} cannot be read (") + ".*" + rf"\); moved it aside to {re.escape(str(damaged_path(state)))}"
             + (". No earlier state to resume from: training this run from the start" if also_previous else
                f" and resuming from the state before it, {re.escape(str(previous_path(state)))} \\(iteration 2\\)"))
    assert re.search(words, caplog.text), caplog.text
    assert damaged_path(state).stat().st_size == 1000
    summary = train(spec, store, split, out, progress=False)
    assert summary["resumed_from"] == 5
    for name in ("model.pt", "models.pt"):
        got, want = torch.load(out / name), torch.load(reference / name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


# ----------------------------------------------------------------------------- the job's log
def test_a_second_attempt_leaves_the_log_of_a_training_still_running_alone(tmp_path):
    """After `kill -9` of Snakemake its trainer runs on; the refused second attempt used to empty
    that trainer's log (the rule's `2> {log}` truncated it before the run lock said no). Now the log
    is locked by the process writing it and emptied only by one that holds it."""
    spec = _spec(iterations=100000, checkpoint_interval=100000, val_interval=100000)
    cmd, out = _start_training(tmp_path, spec)
    log = tmp_path / "logs" / "train.log"
    with_log = [cmd[0], "-m", "semiseg.cli", "--log", str(log), *cmd[3:]]
    first = subprocess.Popen(with_log, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t = time.time()
        while "starting" not in (log.read_text() if log.exists() else ""):
            assert first.poll() is None and time.time() - t < 120, first.stderr.read()[-2000:]
            time.sleep(0.2)
        before = log.read_text()
        second = subprocess.run(with_log, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3
        assert f"semiseg train: error: {log}: another process writes this job's log" in second.stderr
        assert log.read_text().startswith(before)  # the first trainer's log is whole
    finally:
        first.kill()
        first.wait()


def test_an_error_reaches_the_console_even_when_the_log_cannot_be_written(tmp_path):
    """With 0 bytes free the job's log (on the same disk) stays empty, and Snakemake only says
    "check log file(s)": the error line goes to the console too (/dev/full: every write fails)."""
    store, split = _tiny_store(tmp_path / "store.h5")
    run = tmp_path / "run"
    train(_spec(iterations=1), store, split, run, progress=False)
    (run / "model.pt").write_bytes(b"")
    infer_cmd = ["infer", "--run-dir", str(run), "--store", str(store), "--split", str(split), "--out",
                 str(run / "predictions"), "--device", "cpu"]
    for log in (tmp_path / "infer.log", Path("/dev/full")):
        proc = subprocess.run([sys.executable, "-m", "semiseg.cli", "--log", str(log), *infer_cmd],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2
        assert f"semiseg infer: error: {run / 'model.pt'}: not this run's network" in proc.stderr
    assert f"semiseg infer: error: {run / 'model.pt'}: not this run's network" in (tmp_path / "infer.log").read_text()
