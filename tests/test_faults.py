"""Faults: killed and preempted training, out of memory, concurrent runs, determinism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_workflow, snakemake
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

    def oom(self, batch, step):
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
    root = make_workflow(tmp_path / "wf")
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
