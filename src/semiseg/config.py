"""Load, validate and resolve the workflow configuration.

The workflow's `config/config.yaml` says what to build; catalogues of datasets, methods, tables
and schedules say what those names mean. Everything is validated against the JSON schemas in
`workflow/schemas/` when the workflow (or a CLI command) loads it, so a wrong field fails before
any job starts, with a message naming the file, the field and what is allowed.

The one place a training job's settings are assembled is :func:`run_spec`: the workflow passes
its result to `semiseg train`, and fingerprints it, so the job sees exactly what Snakemake
compares between runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from semiseg.data.registry import LAYOUTS
from semiseg.fingerprint import code_fingerprint
from semiseg.papers import cite_references, paper_tables
from semiseg.references import check_references, reference_values
from semiseg.schema import ConfigError, command_line_values, find_root, read_schema, read_yaml, validate
from semiseg.table_config import (add_external_rows, bootstrap_min_resamples, check_table_strides, check_window_stride,
                                  comparison_problems, is_external, oracle_problems, run_stride, sliding_window_note,
                                  table_duplicates)

__all__ = [
    "ConfigError",
    "dataset_source",
    "input_channels",
    "load_config",
    "method_settings",
    "table_spec",
    "EXECUTION_FIELDS",
    "run_resources",
    "run_spec",
    "table_runs",
    "table_externals",
    "spec_hash",
    "schedule_name",
    "find_root",
    "ratio_patients",
    "table_duplicates",
    "bootstrap_min_resamples",
    "sliding_window_note",
    "table_fingerprint",
    "table_stride",
    "window_stride",
    "cpu_training_warning",
]


def ratio_patients(cfg: dict, dataset: str, ratio: int | str) -> int:
    """The number of labeled patients of `dataset` at `ratio` (percent), or a :class:`ConfigError`
    naming the ratios the dataset defines."""
    ratios = cfg["datasets"][dataset]["ratios"]
    if str(ratio) not in ratios:
        raise ConfigError(f"ratio {ratio} is not defined for {dataset}; defined: "
                          f"{', '.join(sorted(ratios, key=int))} (config/datasets/, `ratios:`)")
    return ratios[str(ratio)]


def _check_results(results: str, root: Path) -> None:
    """``results`` must name a folder inside the workflow directory, not the directory itself: every
    output goes there, and nothing may be written outside it (``"/"`` or ``".."`` would write over
    whatever is there; ``""`` or ``"."`` would mix outputs with the checkout). Judged on the path
    as written, so a ``results`` that is a symbolic link to a larger disk stays allowed."""
    top = os.path.normpath(os.path.abspath(root))
    where = os.path.normpath(os.path.join(top, results))
    if os.path.commonpath([top, where]) != top or where == top:
        what = "the workflow directory itself" if where == top else "outside the workflow directory"
        raise ConfigError(f"config: results: {results!r} is {what} ({where}); allowed: a folder inside {top}, "
                          "given relative to it, e.g. results")


def _load_catalogue(root: Path, location: str, kind: str) -> tuple[dict, dict[str, Path]]:
    """Merge every YAML file of a catalogue directory (or one file); remember where each entry came from."""
    path = root / location
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise ConfigError(f"{path}: no {kind} catalogue found")
    merged: dict = {}
    origin: dict[str, Path] = {}
    schema = read_schema(root, kind)
    for f in files:
        data = read_yaml(f)
        if not isinstance(data, dict):
            raise ConfigError(f"{f}: a {kind} catalogue must be a mapping of names to entries")
        validate(data, schema, str(f))
        for name, entry in data.items():
            if name in merged:
                raise ConfigError(f"{f}: {kind} entry {name!r} is also defined in {origin[name]}")
            merged[name] = entry
            origin[name] = f
    return merged, origin


def load_config(config: dict | None = None, root: Path | str | None = None) -> dict:
    """Validate `config` (the contents of config/config.yaml plus overrides) and load the catalogues.

    Returns a resolved dict: ``settings`` (the validated top-level config with defaults filled
    in), ``datasets``, ``methods``, ``tables`` (each citation of the papers' catalogue replaced
    with the values it cites: :mod:`semiseg.papers`), ``schedules`` and ``root``. Raises
    :class:`ConfigError` naming the file and field of the first problems found.
    """
    root = Path(root) if root is not None else find_root()
    if config is None:
        config = read_yaml(root / "config" / "config.yaml")
    settings = copy.deepcopy(dict(config))
    config_schema = read_schema(root, "config")
    command_line_values(settings, config_schema)
    validate(settings, config_schema, "config (config/config.yaml + --config overrides)")
    _check_results(settings["results"], root)
    cats = settings["catalogues"]
    for key, default in (("datasets", "config/datasets"), ("methods", "config/methods"),
                         ("tables", "config/tables"), ("schedules", "config/schedules.yaml"),
                         ("papers", "config/papers")):
        cats.setdefault(key, default)
    datasets, ds_origin = _load_catalogue(root, cats["datasets"], "datasets")
    methods, m_origin = _load_catalogue(root, cats["methods"], "methods")
    tables, t_origin = _load_catalogue(root, cats["tables"], "tables")
    schedules, _ = _load_catalogue(root, cats["schedules"], "schedules")
    _cite_papers(root, cats["papers"], tables, t_origin)
    sched_file = root / cats["schedules"]

    algos = {name: read_schema(root, f"params/{name}")
             for name in sorted(f.name[: -len(".schema.yaml")]
                                for f in (root / "workflow" / "schemas" / "params").glob("*.schema.yaml"))}
    _check_methods(methods, m_origin, datasets, cats["other_datasets"], schedules, algos, root)
    _check_datasets(datasets, ds_origin, schedules, sched_file)
    check_table_strides(datasets, tables, t_origin)
    add_external_rows(tables, t_origin, methods, root)
    _check_settings(settings, datasets, tables, schedules)
    _check_tables(tables, t_origin, datasets, methods)
    if settings.get("seeds") is not None:  # one set of seeds for every table (a quick check)
        for table in tables.values():
            table["seeds"] = list(settings["seeds"])
    cfg = {"root": str(root), "settings": settings, "datasets": datasets, "methods": methods,
           "tables": tables, "schedules": schedules, "schedules_file": str(sched_file)}
    _check_window_strides(cfg, ds_origin, m_origin)
    return cfg


def _cite_papers(root: Path, location: str, tables: dict, t_origin: dict) -> None:
    """Each table's citations of the paper catalogue, replaced with the values they cite
    (:func:`semiseg.papers.cite_references`). A workflow without the catalogue (tables of its own,
    their values written out) has nothing to cite."""
    papers, p_origin = _load_catalogue(root, location, "papers") if (root / location).exists() else ({}, {})
    cited = paper_tables(papers, p_origin)
    for name, table in tables.items():
        cite_references(table, f"{t_origin[name]}: {name}", cited)


def _check_methods(methods: dict, m_origin: dict, datasets: dict, other_datasets: list, schedules: dict, algos: dict,
                   root: Path) -> None:
    """Each method's algorithm, params (also as merged for each dataset and ratio), schedule overrides
    and the datasets it gives settings for (catalogued, or of ``catalogues.other_datasets``)."""
    for name, entry in methods.items():
        where = f"{m_origin[name]}: {name}"
        if entry["algorithm"] not in algos:
            raise ConfigError(f"{where}.algorithm: unknown algorithm {entry['algorithm']!r}; allowed: {', '.join(sorted(algos))}")
        params = entry.setdefault("params", {})
        validate(params, algos[entry["algorithm"]], f"{where}.params")
        layers = [(f"{where}.schedule", entry.get("schedule", {}))]
        for key in ("datasets", "ratio_params"):
            for ds_name in entry.get(key, {}):
                if ds_name not in datasets and ds_name not in other_datasets:
                    raise ConfigError(f"{where}.{key}.{ds_name}: unknown dataset; allowed: "
                                      f"{', '.join(sorted(set(datasets) | set(other_datasets)))} (a dataset "
                                      "of another dataset catalogue this method catalogue serves: list it in "
                                      "config.catalogues.other_datasets)")
        for ds_name, override in entry.get("datasets", {}).items():
            # a dataset of catalogues.other_datasets is validated, though its settings never apply:
            # the merged params, as a run on that dataset gets them, must be valid (a copy: the
            # validator fills in defaults, which must not land in the override)
            validate({**params, **override.get("params", {})}, algos[entry["algorithm"]],
                      f"{where}.datasets.{ds_name}.params")
            layers.append((f"{where}.datasets.{ds_name}.schedule", override.get("schedule", {})))
        _check_ratio_params(entry, datasets, algos[entry["algorithm"]], where)
        for prefix, per_schedule in layers:
            for sched, overrides in per_schedule.items():
                if sched not in schedules:
                    raise ConfigError(f"{prefix}.{sched}: unknown schedule; allowed: {', '.join(sorted(schedules))}")
                validate(overrides, schedules_fields_schema(root), f"{prefix}.{sched}")


def _check_datasets(datasets: dict, ds_origin: dict, schedules: dict, sched_file: Path) -> None:
    """Each dataset's labels, patch size, stride, ratios (against its training patients) and schedules."""
    for name, ds in datasets.items():
        where = f"{ds_origin[name]}: {name}"
        labels = ds["labels"]
        if sorted(labels.values()) != list(range(len(labels))) or min(labels.values()) != 0:
            raise ConfigError(f"{where}.labels: labels must be 0..{len(labels) - 1}, each once, background 0; got {labels}")
        if len(ds["patch_size"]) != ds["dims"]:
            raise ConfigError(f"{where}.patch_size: needs {ds['dims']} numbers for a {ds['dims']}D dataset")
        if ds["dims"] == 3 and len(ds.get("stride", [])) != 3:
            raise ConfigError(f"{where}.stride: a 3D dataset needs a 3-number sliding-window stride")
        for sched, body in schedules.items():
            if ds["dims"] == 2 and "test_stride" in body.get("datasets", {}).get(name, {}):
                raise ConfigError(f"{sched_file}: {sched}.datasets.{name}.test_stride: {name} is a 2D "
                                  "dataset (predicted slice by slice); test_stride is for 3D datasets")
        n_train = ds.get("train_patients")
        count_param = LAYOUTS[ds["source"]["layout"]].train_count_param
        if n_train is None and count_param:
            n_train = ds["source"].get("params", {}).get(count_param)
        for ratio, n in ds["ratios"].items():
            if n_train is not None and n > n_train:
                raise ConfigError(f"{where}.ratios.{ratio}: {n} labeled patients, but the dataset has only "
                                  f"{n_train} training patients; allowed: 1..{n_train}")
        for key in ("schedule", "default_schedule"):
            if key in ds and ds[key] not in schedules:
                raise ConfigError(f"{where}.{key}: unknown schedule {ds[key]!r}; allowed: {', '.join(sorted(schedules))}")


def _check_settings(settings: dict, datasets: dict, tables: dict, schedules: dict) -> None:
    """What config.yaml names: a schedule, the datasets of ``sources``, the tables to build."""
    if settings["schedule"] is not None and settings["schedule"] not in schedules:
        raise ConfigError(f"config: schedule: unknown schedule {settings['schedule']!r}; allowed: {', '.join(sorted(schedules))}")
    for ds_name in settings["sources"]:
        if ds_name not in datasets:
            raise ConfigError(f"config: sources.{ds_name}: unknown dataset; allowed: {', '.join(sorted(datasets))}")
    for name in settings["tables"]:
        if name not in tables:
            raise ConfigError(f"config: tables: unknown table {name!r}; allowed: {', '.join(sorted(tables))}")


def _check_tables(tables: dict, t_origin: dict, datasets: dict, methods: dict) -> None:
    """Each table's dataset, rows, ratios, bootstrap and papers' values."""
    for name, table in tables.items():
        where = f"{t_origin[name]}: {name}"
        if table["dataset"] not in datasets:
            raise ConfigError(f"{where}.dataset: unknown dataset {table['dataset']!r}; allowed: {', '.join(sorted(datasets))}")
        ratios = datasets[table["dataset"]]["ratios"]
        twice = table_duplicates(table)
        if twice:
            raise ConfigError(f"{where}.{twice[0]}")
        for problem in check_references(table):
            raise ConfigError(f"{where}.{problem}")
        boot = table.get("bootstrap")
        if boot and boot["resamples"] < bootstrap_min_resamples(boot["confidence"]):
            raise ConfigError(f"{where}.bootstrap.resamples: {boot['resamples']} resamples leave a tail of a "
                              f"{boot['confidence']:g} interval empty; allowed: at least "
                              f"{bootstrap_min_resamples(boot['confidence'])} (2 / (1 - confidence)), "
                              "or a lower confidence")
        for problem in comparison_problems(table) + oracle_problems(table):
            raise ConfigError(f"{where}.{problem}")
        reference = reference_values(table)  # method -> ratio -> the sources' values
        paper_only = {row["method"] for row in table["rows"] if not row.get("run", True)} - set(methods)
        for i, row in enumerate(table["rows"]):
            if row["method"] not in methods and row.get("run", True) and not is_external(row):
                raise ConfigError(f"{where}.rows.{i}.method: unknown method {row['method']!r}; allowed: "
                                  f"{', '.join(sorted(methods))} (or a method not implemented here, with "
                                  "`run: false` and its paper values in reference)")
            if row["method"] in paper_only:
                missing = [r for r in row["ratios"] if r not in reference.get(row["method"], {})]
                if missing:
                    raise ConfigError(f"{where}.rows.{i}: {row['method']!r} is not implemented here, so the row "
                                      f"only shows paper values, but the sources in reference give none for "
                                      f"ratio(s) {', '.join(map(str, missing))}")
            for r in row["ratios"]:
                if str(r) not in ratios:
                    raise ConfigError(f"{where}.rows.{i}.ratios: ratio {r} is not defined for dataset "
                                      f"{table['dataset']!r}; allowed: {', '.join(sorted(ratios, key=int))}")
        for m in reference:
            if m not in methods and m not in paper_only:
                raise ConfigError(f"{where}.reference: values of unknown method {m!r}; allowed: "
                                  f"{', '.join(sorted(set(methods) | paper_only))}")


def schedules_fields_schema(root: Path) -> dict:
    """The schema of one set of schedule fields (used for a method's per-schedule overrides)."""
    s = read_schema(root, "schedules")
    fields = copy.deepcopy(s["$defs"]["fields"])
    return fields


def schedule_name(cfg: dict, dataset: str) -> str:
    """The schedule a dataset's runs use: the dataset's pin, else config.schedule, else its default."""
    ds = cfg["datasets"][dataset]
    if "schedule" in ds:
        return ds["schedule"]
    return cfg["settings"]["schedule"] or ds.get("default_schedule", "paper")


#: Schedule fields that say how a job runs, not what it computes: the time and memory a cluster
#: gives the train and infer jobs, and how often training writes its resumable state. They are
#: resources of the jobs (:func:`run_resources`), not part of the run spec, so raising a time
#: limit neither re-runs finished runs nor stops a preempted one from resuming.
EXECUTION_FIELDS = ("checkpoint_interval", "runtime", "mem_mb", "infer_runtime", "infer_mem_mb")
#: Their values where no layer of a schedule sets them (the schema has no defaults for schedule
#: fields: its validator would write them into every partial override).
EXECUTION_DEFAULTS = {"checkpoint_interval": 1000, "runtime": 720, "mem_mb": 16000, "infer_runtime": 60,
                      "infer_mem_mb": 8000}


def _schedule_layers(cfg: dict, dataset: str, method: str, sname: str) -> list[tuple[str, dict]]:
    """The layers of schedule ``sname`` for a run of ``method`` on ``dataset``, each with the field
    that sets it, in the order they apply: defaults <- dataset <- the method's overrides <- the
    method's overrides for this dataset."""
    sched, entry = cfg["schedules"][sname], cfg["methods"][method]
    overrides = entry.get("datasets", {})
    return [(f"{sname}.defaults", sched["defaults"]),
            (f"{sname}.datasets.{dataset}", sched.get("datasets", {}).get(dataset, {})),
            (f"{method}.schedule.{sname}", entry.get("schedule", {}).get(sname, {})),
            (f"{method}.datasets.{dataset}.schedule.{sname}",
             overrides.get(dataset, {}).get("schedule", {}).get(sname, {}))]


def _resolved_schedule(cfg: dict, dataset: str, method: str) -> tuple[str, dict]:
    """The schedule's name and its fields for one run (:func:`_schedule_layers`, merged)."""
    sname = schedule_name(cfg, dataset)
    resolved: dict = {}
    for _, layer in _schedule_layers(cfg, dataset, method, sname):
        resolved.update(layer)
    return sname, resolved


def _check_window_strides(cfg: dict, ds_origin: dict, m_origin: dict) -> None:
    """Every sliding-window stride a 3D run can test at is at most the patch on each axis: a
    larger step leaves voxels between two windows that no window predicts (they would silently
    read as background). Checked for the datasets' ``stride`` and, under every schedule and
    method, for the ``test_stride`` that replaces it, naming the file and field that sets it."""
    for name, ds in cfg["datasets"].items():
        if ds["dims"] != 3:
            continue
        check_window_stride(ds["stride"], ds["patch_size"], f"{ds_origin[name]}: {name}.stride", name)
        for sname in cfg["schedules"]:
            for method in cfg["methods"]:
                layers = _schedule_layers(cfg, name, method, sname)
                field, layer = next(((f, lay) for f, lay in reversed(layers) if "test_stride" in lay), (None, None))
                if layer is not None:
                    where = cfg["schedules_file"] if field.startswith(f"{sname}.") else m_origin[method]
                    check_window_stride(layer["test_stride"], ds["patch_size"], f"{where}: {field}.test_stride", name)


def _check_ratio_params(entry: dict, datasets: dict, schema: dict, where: str) -> None:
    """A method entry's ``ratio_params: {<dataset>: {<ratio>: {params}}}``: each ratio one the
    dataset defines (a dataset of ``catalogues.other_datasets``: any), each merged set of params valid."""
    for ds_name, per_ratio in entry.get("ratio_params", {}).items():
        merged = {**entry["params"], **entry.get("datasets", {}).get(ds_name, {}).get("params", {})}
        for ratio, params in per_ratio.items():
            field = f"{where}.ratio_params.{ds_name}.{ratio}"
            defined = datasets.get(ds_name, {}).get("ratios")
            if defined is not None and str(ratio) not in defined:
                raise ConfigError(f"{field}: ratio {ratio} is not defined for {ds_name}; allowed: "
                                  f"{', '.join(sorted(defined, key=int))}")
            validate({**merged, **params}, schema, field)


def method_settings(cfg: dict, dataset: str, method: str, ratio: int | str | None = None) -> dict:
    """A method entry's settings for runs on ``dataset``: ``algorithm``, ``network``,
    ``network_args`` and ``params``, with the entry's ``datasets.<dataset>`` overrides applied
    (params merged key by key, network arguments over the dataset's) and, at ``ratio``, its
    ``ratio_params.<dataset>.<ratio>`` over those params."""
    ds = cfg["datasets"][dataset]
    entry = cfg["methods"][method]
    override = entry.get("datasets", {}).get(dataset, {})
    by_ratio = entry.get("ratio_params", {}).get(dataset, {})
    at_ratio = {str(r): p for r, p in by_ratio.items()}.get(str(ratio), {}) if ratio is not None else {}
    network = override.get("network", entry.get("network", ds.get("network", "unet")))
    args = dict(ds.get("network_args", {})) if network == ds.get("network", "unet") else {}
    args.update(entry.get("network_args", {}))
    args.update(override.get("network_args", {}))
    return {"algorithm": entry["algorithm"], "network": network, "network_args": args,
            "params": {**entry["params"], **override.get("params", {}), **at_ratio}}


def run_resources(cfg: dict, dataset: str, method: str) -> dict:
    """The execution fields (:data:`EXECUTION_FIELDS`) of a run's jobs, with their defaults."""
    resolved = _resolved_schedule(cfg, dataset, method)[1]
    return {k: resolved.get(k, EXECUTION_DEFAULTS[k]) for k in EXECUTION_FIELDS}


def run_spec(cfg: dict, dataset: str, method: str, ratio: int | str, seed: int | str,
             stride: list[int] | None = None) -> dict:
    """Everything one training job's result depends on, resolved: the job's input and its
    fingerprint (the schedule's execution fields are not in it: see :data:`EXECUTION_FIELDS`).
    ``stride``: a table's own test stride (:func:`table_stride`), None for the dataset's."""
    ds = cfg["datasets"][dataset]
    if stride is not None:
        _check_run_stride(cfg, dataset, stride)
    sname, resolved = _resolved_schedule(cfg, dataset, method)
    resolved = {k: v for k, v in resolved.items() if k not in EXECUTION_FIELDS}
    labeled = ratio_patients(cfg, dataset, ratio)
    return {
        "dataset": {
            "name": dataset,
            "dims": ds["dims"],
            "labels": ds["labels"],
            "num_classes": len(ds["labels"]),
            "patch_size": ds["patch_size"],
            # only when several: the specs (and fingerprints) of one-channel datasets stay as they were
            **({"channels": input_channels(ds)} if input_channels(ds) > 1 else {}),
            # the schedule may coarsen it (smoke runs: fewer windows per volume)
            "stride": window_stride(cfg, dataset, method, stride),
            # only when on: the specs (and fingerprints) of datasets without it stay as they were
            **({"largest_component": True} if ds.get("largest_component") else {}),
        },
        "method": {"name": method, **method_settings(cfg, dataset, method, ratio)},
        "schedule": {"name": sname, **resolved},
        "ratio": int(ratio),
        "labeled_patients": labeled,
        "seed": int(seed),
        "device": cfg["settings"]["device"],
    }


def input_channels(ds: dict) -> int:
    """How many input channels a dataset entry's networks take: the length of its source's
    ``params.channel`` where that is a list (the nnunet layout's), else 1."""
    channel = ds["source"].get("params", {}).get("channel")
    return len(channel) if isinstance(channel, list) else 1


def window_stride(cfg: dict, dataset: str, method: str, stride: list[int] | None = None) -> list[int] | None:
    """The sliding-window stride a run of ``method`` on ``dataset`` tests (and validates) at: the
    schedule's ``test_stride`` where a layer of it sets one, else ``stride`` (a table's own), else
    the dataset's (None for 2D)."""
    own = stride if stride is not None else cfg["datasets"][dataset].get("stride")
    return _resolved_schedule(cfg, dataset, method)[1].get("test_stride", own)


def _check_run_stride(cfg: dict, dataset: str, stride: list[int]) -> None:
    """A run's own test stride: 3 numbers for a 3D dataset, other than the dataset's (whose runs
    are named without one), at most its patch on each axis."""
    ds, where = cfg["datasets"][dataset], f"a run of {dataset} at test stride {list(stride)}"
    if ds["dims"] != 3 or len(stride) != 3:
        raise ConfigError(f"{where}: a test stride is for a 3D dataset, 3 numbers (z, y, x); "
                          f"{dataset} is {ds['dims']}D")
    if list(stride) == list(ds["stride"]):
        raise ConfigError(f"{where}: that is {dataset}'s own stride, whose runs are named without one")
    check_window_stride(stride, ds["patch_size"], where, dataset)


def table_stride(cfg: dict, name: str) -> list[int] | None:
    """The test stride of table ``name``'s runs where it is not its dataset's, else None
    (:func:`semiseg.table_config.run_stride`)."""
    return run_stride(cfg["tables"][name], cfg["datasets"])


#: A training budgeted at this many minutes or more (its schedule's ``runtime``) is not a smoke
#: run: a build that starts one on a CPU is warned first.
LONG_RUN_MINUTES = 120


def cpu_training_warning(cfg: dict, runs) -> str | None:
    """The warning a build gives before it starts the trainings ``runs`` ((dataset, method,
    ratio, seed) each) on a CPU, with the estimate the schedules' ``runtime`` budgets give; None
    when none of them is budgeted at :data:`LONG_RUN_MINUTES` or more (a smoke build)."""
    budgets = [run_resources(cfg, run[0], run[1])["runtime"] for run in runs]
    long = [(run, minutes) for run, minutes in zip(runs, budgets) if minutes >= LONG_RUN_MINUTES]
    if not long:
        return None
    schedules = sorted({schedule_name(cfg, run[0]) for run, _ in long})
    iterations = max(_resolved_schedule(cfg, run[0], run[1])[1].get("iterations", 0) for run, _ in long)
    total = sum(minutes for _, minutes in long) / 60
    return (f"{len(long)} training{'s' if len(long) > 1 else ''} of the {' and '.join(schedules)} schedule (up to "
            f"{iterations} iterations each) are about to start on the CPU. Each is budgeted at up to "
            f"{max(m for _, m in long) / 60:g} h on a GPU (the schedule's runtime), {total:g} h in all, and takes far "
            "longer on a CPU. To check the pipeline first, build with --config schedule=smoke seeds=[0]; to train, "
            "use a GPU (device: cuda) or a cluster (--profile profiles/slurm).")


def dataset_source(cfg: dict, dataset: str) -> dict:
    """The fetch stage's input: the catalogue's ``source`` with ``config.sources``' override."""
    sources = cfg["settings"]["sources"]
    return {**cfg["datasets"][dataset]["source"], **sources.get(dataset, {})}


def table_spec(cfg: dict, name: str) -> dict:
    """The table stage's input: the table entry, its dataset's ratios, schedule and distance unit,
    the supervised methods (the lower-bound rows) and the fingerprint of everything behind it."""
    table = cfg["tables"][name]
    ds = cfg["datasets"][table["dataset"]]
    return {
        "name": name,
        "table": table,
        "ratios": ds["ratios"],
        "schedule": schedule_name(cfg, table["dataset"]),
        # the dataset's own schedule (no --config override): smoke runs elsewhere are no result
        "own_schedule": schedule_name({**cfg, "settings": {**cfg["settings"], "schedule": None}}, table["dataset"]),
        "distance_unit": ds["distance_unit"],
        "largest_component": ds.get("largest_component", False),
        # the stride the runs test at (a schedule's test_stride, e.g. smoke's on LA, else the table's
        # or the dataset's)
        **({"sliding_window": sliding_window_note(
            cfg, table["dataset"], {row.get("label", row["method"]): window_stride(cfg, table["dataset"], row["method"],
                                                                                 table_stride(cfg, name))
                                    for row in table["rows"] if row.get("run", True) and not is_external(row)},
            schedule_name(cfg, table["dataset"]), table_stride(cfg, name))} if ds["dims"] == 3 else {}),
        "supervised_methods": sorted(m for m, e in cfg["methods"].items() if e["algorithm"] == "supervised"),
        "fingerprint": table_fingerprint(cfg, name),
    }


def table_runs(cfg: dict, table: str) -> list[tuple[str, str, int, int]]:
    """(dataset, method, ratio, seed) of every run a table needs, in row order, each at the
    table's test stride (:func:`table_stride`; its predictions rows are no runs: :func:`table_externals`)."""
    t = cfg["tables"][table]
    out = []
    for row in t["rows"]:
        if not row.get("run", True) or is_external(row):
            continue
        for ratio in row["ratios"]:
            for seed in t["seeds"]:
                out.append((t["dataset"], row["method"], int(ratio), int(seed)))
    return out


def table_externals(cfg: dict, table: str) -> list[tuple[str, int, str]]:
    """(key, ratio, folder) of every predictions row of a table, in row order: each is scored
    into ``results/external/<table>/<key>/metrics.csv`` (:func:`semiseg.paths.external_file`)."""
    return [(row["method"], int(row["ratio"]), row["predictions"])
            for row in cfg["tables"][table]["rows"] if is_external(row)]


def spec_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def table_fingerprint(cfg: dict, name: str) -> str:
    """What a table was built from, as one hash: every run's resolved spec, the train code of its
    methods, the table code and the folders of its predictions rows. Printed in the table's
    footnote; `semiseg audit` recomputes it."""
    runs, stride = table_runs(cfg, name), table_stride(cfg, name)
    externals = table_externals(cfg, name)
    return spec_hash({
        "runs": [run_spec(cfg, *r, stride=stride) for r in runs],
        "train_code": sorted({code_fingerprint("train", cfg["methods"][m]["algorithm"]) for _, m, _, _ in runs}),
        "table_code": code_fingerprint("table"),
        # the folders a table's predictions rows score (their contents: the evaluate_external jobs'
        # records); only where there are any, so that other tables' fingerprints stay as they were
        **({"external": [list(e) for e in externals]} if externals else {}),
        # the test-selection oracle's setting and code, likewise only where a table has one
        **({"oracle": {**cfg["tables"][name]["oracle"], "train_code": sorted(
            {code_fingerprint("oracle-train", cfg["methods"][m]["algorithm"]) for _, m, _, _ in runs}),
            "evaluate_code": code_fingerprint("oracle-evaluate")}} if cfg["tables"][name].get("oracle") else {}),
    })
