# Paths, catalogues and input functions shared by the rules. No rule lives here.
import json
import os
from pathlib import Path

from semiseg.config import load_config, run_resources, run_spec, schedule_name, table_runs
from semiseg.data.fetch import shipped_splits_digest
from semiseg.fingerprint import code_fingerprint, table_fingerprint

# Validates config/config.yaml (+ --config overrides) and every catalogue against
# workflow/schemas/ before any job is scheduled.
CFG = load_config(config, root=Path(workflow.basedir))
RESULTS = CFG["settings"]["results"]


def results(path):
    """A path under the results directory (config.results)."""
    return os.path.join(RESULTS, path)


def run_path(path=""):
    """A path inside one run's directory: runs/{dataset}/{method}/{ratio}/seed{seed}/<path>."""
    return os.path.join(RESULTS, "runs", "{dataset}", "{method}", "{ratio}", "seed{seed}", path).rstrip("/")



wildcard_constraints:
    dataset="|".join(sorted(CFG["datasets"])),
    method="|".join(sorted(CFG["methods"])),
    table="|".join(sorted(CFG["tables"])),
    ratio=r"\d+",
    seed=r"\d+",


def default_targets():
    return [results(f"tables/{t}.md") for t in CFG["settings"]["tables"]]


def dataset_source(wildcards):
    """The catalogue's source, with config.sources' override, as JSON for `semiseg fetch`."""
    ds = CFG["datasets"][wildcards.dataset]
    source = {**ds["source"], **CFG["settings"]["sources"].get(wildcards.dataset, {})}
    return json.dumps(source, sort_keys=True)


def dataset_shipped_lists(wildcards):
    """The digest of the split lists the dataset's layout takes from config/ ("none" if it has its own)."""
    layout = json.loads(dataset_source(wildcards)).get("layout")
    return shipped_splits_digest(layout, Path(workflow.basedir))


def dataset_field(field):
    return lambda wildcards: CFG["datasets"][wildcards.dataset][field]


def dataset_labels(wildcards):
    return json.dumps(CFG["datasets"][wildcards.dataset]["labels"], sort_keys=True)


def labeled_patients(wildcards):
    return CFG["datasets"][wildcards.dataset]["ratios"][wildcards.ratio]


def train_spec(wildcards):
    spec = run_spec(CFG, wildcards.dataset, wildcards.method, wildcards.ratio, wildcards.seed)
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def train_code(wildcards):
    return code_fingerprint("train", CFG["methods"][wildcards.method]["algorithm"])


def run_resource(field):
    """A schedule's execution field of the job's run (runtime, mem_mb, checkpoint_interval, ...)."""

    def get(wildcards, attempt=1):
        return run_resources(CFG, wildcards.dataset, wildcards.method)[field]

    return get


def job_wildcards(wildcards):
    """The job's wildcards as JSON, for the provenance record (`semiseg --wildcards`)."""
    return json.dumps(dict(wildcards.items()), sort_keys=True)


def table_metrics(wildcards):
    return [
        results(f"runs/{d}/{m}/{r}/seed{s}/metrics.csv")
        for d, m, r, s in table_runs(CFG, wildcards.table)
    ]


def table_descriptor(wildcards):
    dataset = CFG["tables"][wildcards.table]["dataset"]
    return results(f"preprocessed/{dataset}/dataset.json")


def table_spec(wildcards):
    table = CFG["tables"][wildcards.table]
    return json.dumps(
        {
            "name": wildcards.table,
            "table": table,
            "ratios": CFG["datasets"][table["dataset"]]["ratios"],
            "schedule": schedule_name(CFG, table["dataset"]),
            "distance_unit": CFG["datasets"][table["dataset"]]["distance_unit"],
            "largest_component": CFG["datasets"][table["dataset"]].get("largest_component", False),
            "supervised_methods": sorted(
                m for m, e in CFG["methods"].items() if e["algorithm"] == "supervised"
            ),
            "fingerprint": table_fingerprint(CFG, wildcards.table),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
