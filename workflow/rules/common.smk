# Paths, catalogues and input functions shared by the rules. No rule lives here.
import json
import os
import re
import sys
from pathlib import Path

from semiseg import paths
from semiseg import config as semiseg_config
from semiseg.config import (load_config, ratio_patients, run_resources, run_spec, table_externals, table_runs,
                            table_stride)
from semiseg.data.registry import LAYOUTS, shipped_splits_digest
from semiseg.fingerprint import code_fingerprint
from semiseg.method_sources import registered_figures
from semiseg.provenance import path_digest
from semiseg.table_config import EXTERNAL_PREFIX

# The checkout's root (config/, workflow/schemas/), whichever Snakefile was run: this file is
# its workflow/rules/common.smk.
ROOT = Path(str(workflow.current_basedir)).parents[1]
# Validates config/config.yaml (+ --config overrides) and every catalogue against
# workflow/schemas/ before any job is scheduled.
CFG = load_config(config, root=ROOT)
RESULTS = CFG["settings"]["results"]


def results(path):
    """A path under the results directory (config.results)."""
    return os.path.join(RESULTS, path)


def run_path(path=""):
    """A path inside one run's directory (the rule pattern of semiseg.paths.run_file)."""
    return results(paths.run_file("{dataset}", "{method}", "{ratio}", "{seed}", path, stride="{stride}"))


def oracle_path(path=""):
    """A path inside one run's test-selection oracle folder (semiseg.paths.oracle_file's rule pattern)."""
    return results(paths.oracle_file("{every}", "{dataset}", "{method}", "{ratio}", "{seed}", path, stride="{stride}"))


def oracle_log(stage):
    """The log of one run's oracle job of `stage` (oracle_train, oracle_evaluate)."""
    return log_path(stage, paths.oracle_key("{every}", "{dataset}", "{method}", "{ratio}", "{seed}", "{stride}"))


def log_path(stage, key):
    """A job's log (semiseg.paths.log); `key` a wildcard pattern, e.g. "{dataset}"."""
    return results(paths.log(stage, key))


def run_log(stage):
    """The log of one run's job of `stage` (train, infer, evaluate)."""
    return log_path(stage, paths.run_key("{dataset}", "{method}", "{ratio}", "{seed}", "{stride}"))


def figure_file(name):
    """The figure `name` drawn from a run of the job's dataset, ratio and stride (semiseg.paths.figure)."""
    return results(paths.figure(name, "{dataset}", "{ratio}", "{stride}"))


def figure_log(name):
    return log_path("figures", Path(paths.figure(name, "{dataset}", "{ratio}", "{stride}")).stem)


#: The stride tags a run's name may carry (semiseg.paths.stride_tag): none at its dataset's own test
#: stride, else a table's own (runs of their own: the stride also scores the validation that picks
#: the checkpoint).
RUN_STRIDE_TAGS = sorted({paths.stride_tag(table_stride(CFG, t)) for t in CFG["tables"]} | {""})


wildcard_constraints:
    dataset="|".join(sorted(CFG["datasets"])),
    method="|".join(sorted(CFG["methods"])),
    table="|".join(sorted(CFG["tables"])),
    ratio=r"\d+",
    seed=r"\d+",
    every=r"\d+",
    key=f"{EXTERNAL_PREFIX}[a-z0-9_]+",
    stride="(?:%s)" % "|".join(map(re.escape, RUN_STRIDE_TAGS)),


def warn_before_long_cpu_training():
    """Before the first job: a build about to train longer than a smoke schedule on this machine's
    CPU says so, with the schedules' budget (semiseg.config.cpu_training_warning); a table's
    oracle trains its runs a second time, and counts. Nothing under a cluster executor (its jobs
    run where the GPUs are) or with device: cuda."""
    if not workflow.local_exec or CFG["settings"]["device"] == "cuda":
        return
    runs = [(j.wildcards.dataset, j.wildcards.method, j.wildcards.ratio, j.wildcards.seed)
            for j in workflow.dag.needrun_jobs() if j.rule.name in ("train", "oracle_train")]
    text = semiseg_config.cpu_training_warning(CFG, runs)
    if text and CFG["settings"]["device"] == "auto":
        import torch  # only here: the DAG itself never imports torch

        text = None if torch.cuda.is_available() else text
    if text:
        print(f"semiseg: warning: {text}", file=sys.stderr, flush=True)


def default_targets():
    return [results(paths.table(t)) for t in CFG["settings"]["tables"]]


def dataset_source(wildcards):
    """The catalogue's source, with config.sources' override, as JSON for `semiseg fetch`."""
    return json.dumps(semiseg_config.dataset_source(CFG, wildcards.dataset), sort_keys=True)


def dataset_shipped_lists(wildcards):
    """The digest of the split lists the dataset's layout takes from config/ ("none" if it has its own)."""
    layout = json.loads(dataset_source(wildcards)).get("layout")
    return shipped_splits_digest(layout, ROOT)


def run_data(what):
    """The store (`what="store"`) or the split (`"split"`) a run's jobs read: its dataset's, whatever
    its test stride (the stride changes only the sliding window, not the data, so the source is
    fetched, preprocessed and split once for runs at every stride)."""

    def get(wildcards):
        data = wildcards.dataset
        return results(paths.store(data) if what == "store" else paths.split(data, wildcards.ratio))

    return get


def dataset_reader_params(wildcards):
    """The source's params as JSON for `semiseg preprocess`: its reader's options where its layout takes
    them (semiseg.data.registry's reader_params), else {} (a generator's params are the fetch stage's)."""
    source = semiseg_config.dataset_source(CFG, wildcards.dataset)
    return json.dumps(source.get("params", {}) if LAYOUTS[source["layout"]].reader_params else {}, sort_keys=True)


def dataset_field(field):
    return lambda wildcards: CFG["datasets"][wildcards.dataset][field]


def dataset_labels(wildcards):
    return json.dumps(CFG["datasets"][wildcards.dataset]["labels"], sort_keys=True)


def labeled_patients(wildcards):
    return ratio_patients(CFG, wildcards.dataset, wildcards.ratio)


def train_spec(wildcards):
    spec = run_spec(CFG, wildcards.dataset, wildcards.method, wildcards.ratio, wildcards.seed,
                    stride=paths.parse_stride_tag(wildcards.stride))
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def train_code(wildcards):
    return code_fingerprint("train", CFG["methods"][wildcards.method]["algorithm"])


def run_resource(field):
    """A schedule's execution field of the job's run (runtime, mem_mb, checkpoint_interval, ...)."""

    def get(wildcards, attempt=1):
        return run_resources(CFG, wildcards.dataset, wildcards.method)[field]

    return get


def job_wildcards(wildcards):
    """The job's wildcards as JSON, for the provenance record (`semiseg --wildcards`). An empty
    stride tag (a run at its dataset's own stride) is left out: those jobs' parameters stay as they
    were before runs had a stride, so none of them runs again."""
    return json.dumps({k: v for k, v in wildcards.items() if not (k == "stride" and v == "")}, sort_keys=True)


def table_metrics(wildcards):
    stride = table_stride(CFG, wildcards.table)  # the table's own test stride, if any
    return [
        results(paths.run_file(d, m, r, s, "metrics.csv", stride=stride))
        for d, m, r, s in table_runs(CFG, wildcards.table)
    ]


def table_oracle(wildcards):
    """The oracle.json of each run of a table with `oracle: {every: K}` (its best-on-test column);
    none for a table without: its inputs, and so its jobs, are the honest pipeline's only."""
    oracle = CFG["tables"][wildcards.table].get("oracle")
    if not oracle:
        return []
    stride = table_stride(CFG, wildcards.table)  # the runs it replays are at the table's stride
    return [results(paths.oracle_file(oracle["every"], d, m, r, s, paths.ORACLE_SUMMARY, stride=stride))
            for d, m, r, s in table_runs(CFG, wildcards.table)]


def oracle_code(wildcards):
    return code_fingerprint("oracle-train", CFG["methods"][wildcards.method]["algorithm"])


def oracle_infer_runtime(wildcards, attempt=1):
    """The infer stage's runtime once per snapshot the oracle scores (every K-th iteration and the last)."""
    iterations = json.loads(train_spec(wildcards))["schedule"]["iterations"]
    snapshots = iterations // int(wildcards.every) + (iterations % int(wildcards.every) > 0)
    return run_resources(CFG, wildcards.dataset, wildcards.method)["infer_runtime"] * snapshots


def table_external_metrics(wildcards):
    """The metrics.csv of each predictions row of the table (semiseg.paths.external_file)."""
    return [results(paths.external_file(wildcards.table, key)) for key, _, _ in table_externals(CFG, wildcards.table)]


def external_row(wildcards):
    """(ratio, folder) of the table's predictions row `key`."""
    for key, ratio, folder in table_externals(CFG, wildcards.table):
        if key == wildcards.key:
            return ratio, folder
    raise ValueError(f"table {wildcards.table!r} has no predictions row {wildcards.key!r}")


def external_predictions(wildcards):
    return external_row(wildcards)[1]


def external_data(what):
    """The store (`what="store"`) or the split at the row's ratio (`"split"`) of the table's dataset."""

    def get(wildcards):
        data = CFG["tables"][wildcards.table]["dataset"]
        ratio = external_row(wildcards)[0]
        return results(paths.store(data) if what == "store" else paths.split(data, ratio))

    return get


def external_sha256(wildcards):
    """The predictions folder's checksum, a param: a folder whose files change is scored again
    (Snakemake sees only the folder's own time stamp otherwise)."""
    return path_digest(Path(external_predictions(wildcards)))["sha256"]


def external_distance_unit(wildcards):
    return CFG["datasets"][CFG["tables"][wildcards.table]["dataset"]]["distance_unit"]


def table_descriptor(wildcards):
    return results(paths.descriptor(CFG["tables"][wildcards.table]["dataset"]))


def table_spec(wildcards):
    """The table entry and what its footer needs (semiseg.config.table_spec), as JSON."""
    return json.dumps(semiseg_config.table_spec(CFG, wildcards.table), sort_keys=True, separators=(",", ":"))
