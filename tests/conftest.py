"""Shared fixtures: a tiny copy of the workflow in a temporary directory, and the real data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """../shared/data beside the checkout (or $SEMISEG_SHARED_DATA), if present."""
    env = os.environ.get("SEMISEG_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one thread avoids oversubscribing a shared 2-core machine."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = shared_data()
    if d is None:
        pytest.skip("real data not found: ../shared/data is absent beside the checkout (set SEMISEG_SHARED_DATA)")
    return d


# A dataset small enough that a whole workflow runs in about a minute on 2 CPU cores.
TINY_DATASET = {
    "tiny2d": {
        "description": "A very small synthetic2d for workflow tests.",
        "source": {"layout": "synthetic2d", "seed": 3,
                   "params": {"n_train": 4, "n_val": 1, "n_test": 2, "slices": [3, 4], "size": [48, 48]}},
        "dims": 2,
        "network": "unet",
        "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3},
        "ratios": {"25": 1, "50": 2},
        "patch_size": [48, 48],
        "schedule": "smoke",
    }
}
TINY_SCHEDULE = {
    "smoke": {
        "description": "A few iterations: tests that the stages connect.",
        "defaults": {"iterations": 4, "labeled_batch_size": 2, "unlabeled_batch_size": 2, "lr": 0.01,
                     "momentum": 0.9, "weight_decay": 0.0001, "lr_policy": "poly", "val_interval": 2,
                     "checkpoint_interval": 2, "amp": False, "runtime": 10, "mem_mb": 2000},
    },
    # present so that method entries with `schedule: {paper: ...}` overrides validate
    "paper": {
        "description": "Unused by the tiny dataset (it pins smoke).",
        "defaults": {"iterations": 30000, "labeled_batch_size": 12, "unlabeled_batch_size": 12},
    },
}


def tiny_table(methods=("supervised", "mean_teacher"), ratios=(25,), seeds=(0,), name="tiny"):
    return {name: {"title": f"Tiny table {name}", "dataset": "tiny2d", "seeds": list(seeds),
                   "rows": [{"method": m, "ratios": list(ratios)} for m in methods]}}


def write_yaml(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_workflow(root: Path, *, tables: dict | None = None, methods_extra: dict | None = None,
                  schedule: dict | None = None) -> Path:
    """Copy the workflow into `root` with a tiny config: dataset tiny2d, the repo's methods."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow", dirs_exist_ok=True)
    shutil.copytree(REPO / "config" / "methods", root / "config" / "methods", dirs_exist_ok=True)
    tables = tables or tiny_table()
    write_yaml(root / "config" / "datasets" / "tiny.yaml", TINY_DATASET)
    write_yaml(root / "config" / "tables" / "tiny.yaml", tables)
    write_yaml(root / "config" / "schedules.yaml", schedule or TINY_SCHEDULE)
    if methods_extra:
        write_yaml(root / "config" / "methods" / "extra.yaml", methods_extra)
    write_yaml(root / "config" / "config.yaml", {"tables": list(tables), "schedule": None, "device": "cpu",
                                                  "results": "results", "sources": {}})
    return root


def snakemake(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake on the workflow copy at `root`; returns the completed process (text)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(root),
           "--snakefile", str(root / "Snakefile"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)


@pytest.fixture
def tiny_workflow(tmp_path) -> Path:
    return make_workflow(tmp_path / "wf")
