"""The SLURM profile, proven against a real SLURM.

tests/slurm/cluster.sh installs Debian's SLURM and starts a one-node cluster on localhost (munge,
slurmctld, slurmd; one fake GPU of type `fake`; partitions `cpu` and `gpu`). A copy of the
workflow with a tiny config then runs through the unedited `profiles/slurm` (and, as Snakemake
always does, `profiles/default` on top), pointed at that cluster by its environment variables:

- test_table_through_slurm: the table is built, every job but `fetch` (a local rule: downloads
  run where snakemake runs) went through sbatch, train and infer jobs asked for the GPU
  (`--gpus=fake:1`) on the GPU partition, CPU jobs asked for none;
- test_sigterm_resumes_training: `scancel --signal=TERM` on a running training job (what SLURM
  does before a time limit or a preemption) makes the engine checkpoint and exit; Snakemake's
  retry resumes it in a new SLURM job from that checkpoint (the run writes no periodic one), and
  the workflow still completes.

Both share one workflow run (10 SLURM jobs, 3 to 5 minutes on 2 cores), started by the module
fixture; the cluster is stopped at the end by its pidfiles (SEMISEG_SLURM_KEEP=1 leaves it up).
Needs root and apt-get (or SLURM installed); SEMISEG_SKIP_SLURM=1 skips, and where the test
cannot run it skips saying why, unless SEMISEG_REQUIRE_SLURM=1 (set by .ci/run) makes that a
failure.
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

from conftest import shipped_datasets

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The run the SIGTERM test interrupts gets 48 iterations and no periodic checkpoint (interval
# 1000): its job is signalled once its log shows SIGNAL_AFTER iterations done, so a resumed state
# can only be the one the engine wrote on SIGTERM.
LONG_METHOD = "supervised"
SHORT_METHOD = "mean_teacher"
LONG_ITERATIONS, LONG_CHECKPOINT, SIGNAL_AFTER = 48, 1000, 2
# the plugin's job comment: rule_<rule>_wildcards_<these>, the last the run's empty stride wildcard
# (a run at its dataset's own test stride)
RUN_WILDCARDS = "tiny2d_{method}_25_0_"

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
    if os.environ.get("SEMISEG_REQUIRE_SLURM") == "1":
        raise RuntimeError(f"SEMISEG_REQUIRE_SLURM=1 but the real-SLURM test cannot run: {_skip_reason()}")
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))


def _run(cmd, *, env=None, timeout: int, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` under `timeout -k 10` (snakemake and the daemons must never hang the suite)."""
    return subprocess.run(["timeout", "-k", "10", str(timeout), *map(str, cmd)], env=env,
                          capture_output=True, text=True, **kw)


def _methods() -> dict:
    """The repo's supervised and mean_teacher entries; LONG_METHOD trains longer here."""
    entries = {}
    for f in sorted((REPO / "config" / "methods").glob("*.yaml")):
        entries.update(yaml.safe_load(f.read_text()) or {})
    methods = {m: dict(entries[m]) for m in (SHORT_METHOD, LONG_METHOD)}
    methods[LONG_METHOD]["schedule"] = {
        # a log line every 2 iterations (the job log prints one per validation): the interrupter
        # sees iteration SIGNAL_AFTER as soon as it is done
        "smoke": {"iterations": LONG_ITERATIONS, "val_interval": 2, "checkpoint_interval": LONG_CHECKPOINT}}
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
              "catalogues": {**{k: f"config/slurm_test/{k}.yaml" for k in ("datasets", "methods", "tables", "schedules")},
                             "other_datasets": shipped_datasets()}}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


# ----------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def cluster():
    """Start the one-node cluster (or find it up); stop it at the end by its pidfiles."""
    env = {**os.environ, "SEMISEG_SLURM_ROOT": os.environ.get("SEMISEG_SLURM_ROOT", "/tmp/semiseg-slurm")}
    t0 = time.monotonic()
    r = _run(["bash", CLUSTER_SH, "start"], env=env, timeout=600)
    if r.returncode != 0:
        _run(["bash", CLUSTER_SH, "stop"], env=env, timeout=180)
        pytest.fail(f"tests/slurm/cluster.sh start failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    conf = re.search(r"^export SLURM_CONF=(\S+)$", r.stdout, re.M).group(1)
    print(f"cluster up in {time.monotonic() - t0:.1f} s: {r.stderr.strip().splitlines()[-1]}")
    yield {"conf": conf, "root": Path(env["SEMISEG_SLURM_ROOT"]), "start_seconds": time.monotonic() - t0}
    if os.environ.get("SEMISEG_SLURM_KEEP") != "1":
        r = _run(["bash", CLUSTER_SH, "stop"], env=env, timeout=180)
        assert r.returncode == 0, f"tests/slurm/cluster.sh stop failed:\n{r.stderr[-3000:]}"


def _client_env(conf: str) -> dict:
    """This process's environment pointed at the test cluster through the profile's variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SEMISEG_SLURM_"))}
    env.update(SLURM_CONF=conf, SEMISEG_SLURM_PARTITION="cpu", SEMISEG_SLURM_GPU_PARTITION="gpu",
               SEMISEG_SLURM_GPU_MODEL="fake")
    return env


def slurm_jobs(env: dict) -> list[dict]:
    """Every job slurmctld still knows (MinJobAge=600 s), as `scontrol -o show job` fields."""
    r = _run(["scontrol", "-o", "show", "job"], env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    jobs = []
    for line in r.stdout.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        m = re.match(r"rule_([a-z_]+?)(?:_wildcards_(\S+))?$", fields.get("Comment", ""))
        if m:
            fields["rule"], fields["wildcards"] = m.group(1), m.group(2) or ""
        jobs.append(fields)
    return jobs


# ----------------------------------------------------------------------------- the run
def _iterations_done(log: Path) -> int:
    """The last iteration count the training wrote to its log, ``iteration n/48`` (0 before any)."""
    if not log.exists():
        return 0
    counts = re.findall(rf"\b(\d+)/{LONG_ITERATIONS}\b", log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


def _interrupt_training(root: Path, env: dict, done: threading.Event, result: dict) -> None:
    """Once the long training is SIGNAL_AFTER iterations in, SIGTERM its SLURM job (scancel --signal)."""
    wildcards = RUN_WILDCARDS.format(method=LONG_METHOD)
    log = root / "results" / "logs" / "train" / "tiny2d" / LONG_METHOD / "25" / "seed0.log"
    job_id = None
    try:
        # the job's id first (one scontrol call takes a while on a busy machine), then the signal as
        # soon as the log shows SIGNAL_AFTER iterations: the rest of the training is the only window
        while not done.wait(0.05):
            if job_id is None:
                running = [j for j in slurm_jobs(env) if j.get("rule") == "train"
                           and j["wildcards"] == wildcards and j.get("JobState") == "RUNNING"]
                job_id = running[0]["JobId"] if running else None
            elif _iterations_done(log) >= SIGNAL_AFTER:
                r = _run(["scancel", "--signal=TERM", job_id], env=env, timeout=30)
                result.update(job_id=job_id, scancel_rc=r.returncode, scancel_err=r.stderr)
                return
    except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in this thread
        result["error"] = repr(exc)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny table through `--profile profiles/slurm`, one training SIGTERMed mid-run."""
    root = make_slurm_workflow(tmp_path_factory.mktemp("slurm") / "wf")
    env = _client_env(cluster["conf"])
    # Test-only settings on the command line: no accounting database here, so job states come
    # from squeue (the plugin's default, sacct, would fail and wait forever); check every 2 s
    # from the start (not 40); keep each job's SLURM log.
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs", "results/tables/slurm.md"]
    interrupted: dict = {}
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_training, args=(root, env, done, interrupted), daemon=True)
    t0 = time.monotonic()
    with open(root / "snakemake.log", "w") as log:
        # snakemake waits for its running jobs on SIGTERM: timeout's -k ends it for sure.
        proc = subprocess.Popen(["timeout", "-k", "30", "900", *cmd], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        watcher.start()
        rc = proc.wait()
    done.set()
    watcher.join(timeout=60)
    seconds = time.monotonic() - t0
    log_text = (root / "snakemake.log").read_text()
    jobs = [j for j in slurm_jobs(env) if j.get("WorkDir") == str(root)]
    print(f"workflow through SLURM: exit {rc} in {seconds:.1f} s, {len(jobs)} SLURM jobs; interrupted {interrupted}")
    return {"root": root, "rc": rc, "log": log_text, "jobs": jobs, "interrupted": interrupted,
            "seconds": seconds, "cluster": cluster}


def _diagnostics(run: dict) -> str:
    """What to read when a check fails: snakemake's output and the daemons' logs."""
    parts = [f"--- snakemake (exit {run['rc']}, {run['seconds']:.0f} s):\n{run['log'][-6000:]}"]
    for name in ("slurmctld.log", "slurmd.log"):
        f = run["cluster"]["root"] / "log" / name
        if f.exists():
            parts.append(f"--- {f}:\n" + "\n".join(f.read_text().splitlines()[-30:]))
    for f in sorted((run["root"] / "results" / "logs" / "train").rglob("*.log")):
        parts.append(f"--- {f}:\n{f.read_text()[-1500:]}")
    return "\n".join(parts)


def _summary(run: dict, method: str) -> dict:
    path = run["root"] / "results" / "runs" / "tiny2d" / method / "25" / "seed0" / "config.json"
    return json.loads(path.read_text())["summary"]


# ----------------------------------------------------------------------------- the tests
def test_table_through_slurm(slurm_run):
    run = slurm_run
    assert run["rc"] == 0, _diagnostics(run)
    assert "Using profiles profiles/slurm and workflow specific profile profiles/default" in run["log"]
    table = (run["root"] / "results" / "tables" / "slurm.md").read_text()
    assert SHORT_METHOD in table and LONG_METHOD in table, table

    by_rule: dict[str, list[dict]] = {}
    for job in run["jobs"]:
        by_rule.setdefault(job.get("rule", "?"), []).append(job)
    expected = {"preprocess": 1, "split": 1, "train": 2, "infer": 2, "evaluate": 2, "table": 1}
    completed = {rule: sum(j["JobState"] == "COMPLETED" for j in by_rule.get(rule, [])) for rule in expected}
    assert completed == expected, f"{completed}\n{_diagnostics(run)}"
    assert set(by_rule) == set(expected), sorted(by_rule)

    for rule, jobs in by_rule.items():
        for job in jobs:
            gpu = job.get("TresPerJob", "")
            if rule in ("train", "infer"):
                # --gpus=fake:1 from the profile's gpu_model, on the GPU partition
                assert gpu == "gres:gpu:fake:1" and job["Partition"] == "gpu", job
            else:
                assert "gpu" not in gpu and job["Partition"] == "cpu", job
    # profiles/default's `gpu: 1` is scoped per job: it must not hold the second training back
    # until the first one ends (SLURM queues it; here the node's 2 cores run one at a time).
    first, second = sorted(by_rule["train"], key=lambda j: int(j["JobId"]))[:2]
    assert second["SubmitTime"] < first["EndTime"], (first, second)
    # Time and memory: the train jobs' from the schedule, the CPU jobs' from default-resources.
    for job in by_rule["train"]:
        assert (job["TimeLimit"], job["MinMemoryNode"]) == ("00:10:00", "1500M"), job
    for job in by_rule["preprocess"] + by_rule["table"]:
        assert (job["TimeLimit"], job["MinMemoryNode"]) == ("01:00:00", "4000M"), job
    assert _summary(run, SHORT_METHOD)["resumed_from"] is None


def test_sigterm_resumes_training(slurm_run):
    run = slurm_run
    hit = run["interrupted"]
    assert hit.get("job_id"), f"the long training was never caught running with a checkpoint ({hit})\n{_diagnostics(run)}"
    assert hit["scancel_rc"] == 0, hit
    assert run["rc"] == 0, _diagnostics(run)

    wildcards = RUN_WILDCARDS.format(method=LONG_METHOD)
    attempts = sorted((j for j in run["jobs"] if j.get("rule") == "train" and j["wildcards"] == wildcards),
                      key=lambda j: int(j["JobId"]))
    states = [(j["JobId"], j["JobState"], j["ExitCode"]) for j in attempts]
    # The signalled job ended with the engine's exit status; Snakemake's retry is a new SLURM job.
    assert len(attempts) == 2 and attempts[0]["JobId"] == hit["job_id"], states
    assert attempts[0]["JobState"] == "FAILED" and attempts[0]["ExitCode"] != "0:0", states
    assert attempts[1]["JobState"] == "COMPLETED", states

    summary = _summary(run, LONG_METHOD)
    # It resumed from the checkpoint written on SIGTERM (the only one: no periodic checkpoint is
    # due before iteration 1000), not from scratch.
    assert summary["resumed_from"] and SIGNAL_AFTER <= summary["resumed_from"] < LONG_ITERATIONS, summary
    assert summary["iterations"] == LONG_ITERATIONS
    train_log = (run["root"] / "results" / "logs" / "train" / "tiny2d" / LONG_METHOD / "25" / "seed0.log").read_text()
    assert "resuming from" in train_log, train_log[-3000:]
    rows = (run["root"] / "results" / "runs" / "tiny2d" / LONG_METHOD / "25" / "seed0" / "train.csv").read_text()
    assert len(rows.strip().splitlines()) == LONG_ITERATIONS + 1, "train.csv: one row per iteration, once"
