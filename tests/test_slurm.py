"""The SLURM profile, proven against a real SLURM.

tests/slurm/cluster.sh installs Debian's SLURM and starts a one-node cluster on localhost (munge,
slurmctld, slurmd; one fake GPU of type `fake`; partitions `cpu` and `gpu`). A copy of the
workflow with a tiny config then runs through the unedited `profiles/slurm` (and, as Snakemake
always does, `profiles/default` on top), pointed at that cluster by its environment variables:

- test_table_through_slurm: the table is built, every job went through sbatch, train and infer
  jobs asked for the GPU (`--gpus=fake:1`) on the GPU partition, CPU jobs asked for none;
- test_sigterm_resumes_training: `scancel --signal=TERM` on a running training job (what SLURM
  does before a time limit or a preemption) makes the engine checkpoint and exit; Snakemake's
  retry resumes it in a new SLURM job, and the workflow still completes.

Both share one workflow run (about 2 minutes on 2 cores), started by the module fixture; the
cluster is stopped at the end by its pidfiles. Needs root and apt-get (or SLURM installed);
SEMISEG_SKIP_SLURM=1 skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The run the SIGTERM test interrupts: long enough to be caught mid-run (about 25 s on 2 cores),
# with a checkpoint every 10 iterations.
LONG_METHOD = "mean_teacher"
SHORT_METHOD = "supervised"
RUN_WILDCARDS = "tiny2d_{method}_25_0"  # the plugin's job comment: rule_<rule>_wildcards_<these>

DATASETS = {
    "tiny2d": {
        "description": "A very small synthetic2d: the workflow through SLURM in about two minutes.",
        "source": {"layout": "synthetic2d", "seed": 3,
                   "params": {"n_train": 4, "n_val": 1, "n_test": 2, "slices": [3, 4], "size": [48, 48]}},
        "dims": 2,
        "network": "unet",
        "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3},
        "ratios": {"25": 1},
        "patch_size": [48, 48],
        "schedule": "smoke",
    }
}
SCHEDULES = {
    "smoke": {
        "description": "A few iterations; memory small enough for any CI machine.",
        "defaults": {"iterations": 6, "labeled_batch_size": 2, "unlabeled_batch_size": 2, "lr": 0.01,
                     "momentum": 0.9, "weight_decay": 0.0001, "lr_policy": "poly", "val_interval": 3,
                     "checkpoint_interval": 3, "amp": False, "runtime": 10, "mem_mb": 1500},
    }
}
TABLES = {
    "slurm": {"title": "Through SLURM", "dataset": "tiny2d", "seeds": [0],
              "rows": [{"method": SHORT_METHOD, "ratios": [25]}, {"method": LONG_METHOD, "ratios": [25]}]}
}


def _skip_reason() -> str | None:
    if os.environ.get("SEMISEG_SKIP_SLURM") == "1":
        return "SEMISEG_SKIP_SLURM=1"
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux: it installs SLURM with apt-get and starts its daemons"
    if not all(shutil.which(b) for b in SLURM_BINARIES) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    if not shutil.which("semiseg"):
        return "the `semiseg` command is not on PATH (pip install -e .)"
    return None


if _skip_reason():
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))


def _run(cmd, *, env=None, timeout: int, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` under `timeout -k 10` (snakemake and the daemons must never hang the suite)."""
    return subprocess.run(["timeout", "-k", "10", str(timeout), *map(str, cmd)], env=env,
                          capture_output=True, text=True, **kw)


def _methods() -> dict:
    """The repo's supervised and mean_teacher entries; mean_teacher trains longer here."""
    entries = {}
    for f in sorted((REPO / "config" / "methods").glob("*.yaml")):
        entries.update(yaml.safe_load(f.read_text()) or {})
    methods = {m: dict(entries[m]) for m in (SHORT_METHOD, LONG_METHOD)}
    methods[LONG_METHOD]["schedule"] = {
        "smoke": {"iterations": 400, "val_interval": 100, "checkpoint_interval": 10}}
    return methods


def make_slurm_workflow(root: Path) -> Path:
    """A copy of the workflow and its profiles, with a tiny config of its own catalogues."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    for d in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / d, root / d)
    cat = root / "config" / "slurm_test"
    cat.mkdir()
    for name, data in (("datasets", DATASETS), ("methods", _methods()), ("tables", TABLES),
                       ("schedules", SCHEDULES)):
        (cat / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    config = {"tables": list(TABLES), "schedule": None, "device": "cpu", "results": "results",
              "sources": {},
              "catalogues": {k: f"config/slurm_test/{k}.yaml"
                             for k in ("datasets", "methods", "tables", "schedules")}}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root
