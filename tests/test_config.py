"""The config is validated before any job runs, with messages naming the file and field."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import REPO, make_workflow, shipped_datasets, snakemake, tiny_table, write_yaml
from semiseg.config import EXECUTION_FIELDS, ConfigError, load_config, run_resources, run_spec, schedule_name, table_runs


def load(root):
    return load_config(yaml.safe_load((root / "config" / "config.yaml").read_text()), root=root)


def test_repository_config_is_valid():
    cfg = load_config(root=REPO)
    assert {"supervised", "mean_teacher"} <= set(cfg["methods"])
    assert "demo" in cfg["tables"] and cfg["settings"]["tables"] == ["demo"]


def test_defaults_are_filled_in_from_the_schemas():
    cfg = load_config({"tables": ["demo"]}, root=REPO)
    assert cfg["settings"]["device"] == "auto" and cfg["settings"]["results"] == "results"
    assert cfg["methods"]["mean_teacher"]["params"]["noise_std"] == 0.1  # default from $defs


def test_run_spec_resolves_schedule_layers():
    cfg = load_config(root=REPO)
    spec = run_spec(cfg, "synthetic2d", "mean_teacher", 10, 1)
    assert spec["schedule"]["name"] == "smoke"
    # datasets.synthetic2d overrides the smoke defaults
    assert spec["schedule"]["iterations"] == cfg["schedules"]["smoke"]["datasets"]["synthetic2d"]["iterations"]
    assert spec["labeled_patients"] == 1 and spec["seed"] == 1
    assert spec["method"]["params"]["ema_decay"] == 0.99


def test_synthetic_datasets_pin_smoke_whatever_the_command_line_says():
    cfg = load_config({"tables": ["demo"], "schedule": "paper"}, root=REPO)
    assert schedule_name(cfg, "synthetic2d") == "smoke"


def test_table_runs_cover_rows_ratios_and_seeds():
    cfg = load_config(root=REPO)
    runs = table_runs(cfg, "demo")
    assert len(runs) == 3 * 1 * 3 and runs[0] == ("synthetic2d", "supervised", 10, 0)
    assert runs[-1] == ("synthetic2d", "supervised", 100, 2)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c.update(tables=["nope"]), "tables: unknown table 'nope'; allowed: tiny"),
        (lambda c: c.update(device="tpu"), "device: 'tpu' is not allowed; allowed: 'auto', 'cpu', 'cuda'"),
        (lambda c: c.update(colour="red"), "colour: unknown field"),
        (lambda c: c.update(schedule="fast"), "schedule: unknown schedule 'fast'"),
    ],
)
def test_bad_top_level_config_names_the_field(tmp_path, mutate, fragment):
    root = make_workflow(tmp_path)
    c = yaml.safe_load((root / "config" / "config.yaml").read_text())
    mutate(c)
    with pytest.raises(ConfigError) as exc:
        load_config(c, root=root)
    assert fragment in str(exc.value)


def test_unknown_method_param_is_rejected_with_allowed_names(tmp_path):
    root = make_workflow(tmp_path, methods_extra={"mt_bad": {"algorithm": "mean_teacher", "description": "x",
                                                              "params": {"ema_decy": 0.9}}})
    with pytest.raises(ConfigError) as exc:
        load(root)
    msg = str(exc.value)
    assert "extra.yaml: mt_bad.params" in msg and "ema_decy: unknown field" in msg and "ema_decay" in msg


def test_negative_and_non_numeric_hyperparameters_are_rejected(tmp_path):
    for value, fragment in ((-0.5, "less than the minimum of 0"), ("high", "is not of type 'number'")):
        root = make_workflow(tmp_path / str(value), methods_extra={
            "mt_bad": {"algorithm": "mean_teacher", "description": "x", "params": {"consistency": value}}})
        with pytest.raises(ConfigError) as exc:
            load(root)
        assert "consistency" in str(exc.value) and fragment in str(exc.value)


def test_unknown_algorithm_is_rejected(tmp_path):
    root = make_workflow(tmp_path, methods_extra={"x": {"algorithm": "magic", "description": "x"}})
    with pytest.raises(ConfigError, match=r"x\.algorithm: unknown algorithm 'magic'; allowed: .*mean_teacher"):
        load(root)


def test_table_row_with_unknown_method_or_ratio_is_rejected(tmp_path):
    root = make_workflow(tmp_path / "a", tables=tiny_table(methods=("supervised", "fixmatch")))
    with pytest.raises(ConfigError, match=r"tiny\.rows\.1\.method: unknown method 'fixmatch'"):
        load(root)
    root = make_workflow(tmp_path / "b", tables=tiny_table(ratios=(25, 90)))
    with pytest.raises(ConfigError, match=r"ratio 90 is not defined for dataset 'tiny2d'; allowed: 25, 50"):
        load(root)


def test_bad_dataset_entry_is_rejected(tmp_path):
    root = make_workflow(tmp_path)
    ds = yaml.safe_load((root / "config" / "datasets" / "tiny.yaml").read_text())
    ds["tiny2d"]["labels"] = {"background": 0, "RV": 2}
    write_yaml(root / "config" / "datasets" / "tiny.yaml", ds)
    with pytest.raises(ConfigError, match=r"tiny2d\.labels: labels must be 0\.\.1"):
        load(root)


def test_invalid_yaml_names_the_file(tmp_path):
    root = make_workflow(tmp_path)
    (root / "config" / "tables" / "tiny.yaml").write_text("tiny: [unclosed\n")
    with pytest.raises(ConfigError, match=r"tiny\.yaml: not valid YAML"):
        load(root)


def test_every_registered_algorithm_has_a_schema_and_vice_versa():
    from semiseg.methods import METHODS

    schemas = {p.name.split(".")[0] for p in (REPO / "workflow" / "schemas" / "params").glob("*.schema.yaml")}
    assert schemas == {name for name in METHODS if not name.startswith("_test")}


def test_ratio_larger_than_the_training_set_is_rejected(tmp_path):
    root = make_workflow(tmp_path)
    ds = yaml.safe_load((root / "config" / "datasets" / "tiny.yaml").read_text())
    ds["tiny2d"]["ratios"]["50"] = 9  # tiny2d has n_train 4
    write_yaml(root / "config" / "datasets" / "tiny.yaml", ds)
    with pytest.raises(ConfigError, match=r"tiny2d\.ratios\.50: 9 labeled patients, but the dataset has only 4 "
                                          r"training patients; allowed: 1\.\.4"):
        load(root)


def test_table_naming_an_unknown_dataset_is_rejected_with_the_allowed_ones(tmp_path):
    tables = tiny_table()
    tables["tiny"]["dataset"] = "acdc2"
    root = make_workflow(tmp_path, tables=tables)
    with pytest.raises(ConfigError, match=r"tiny\.dataset: unknown dataset 'acdc2'; allowed: tiny2d"):
        load(root)


def test_source_override_for_an_unknown_dataset_is_rejected(tmp_path):
    root = make_workflow(tmp_path)
    c = yaml.safe_load((root / "config" / "config.yaml").read_text())
    c["sources"] = {"acdcc": {"path": "/data/ACDC"}}
    with pytest.raises(ConfigError, match=r"sources\.acdcc: unknown dataset; allowed: tiny2d"):
        load_config(c, root=root)


def test_acdc_ratios_are_checked_against_its_70_training_patients(tmp_path):
    root = make_workflow(tmp_path)
    shutil.copy(REPO / "config" / "datasets" / "acdc.yaml", root / "config" / "datasets" / "acdc.yaml")
    ds = yaml.safe_load((root / "config" / "datasets" / "acdc.yaml").read_text())
    ds["acdc"]["ratios"]["90"] = 105
    write_yaml(root / "config" / "datasets" / "acdc.yaml", ds)
    with pytest.raises(ConfigError, match=r"acdc\.ratios\.90: 105 labeled patients, but the dataset has only 70"):
        load(root)


def test_seeds_override_every_table_s_seeds(tmp_path):
    root = make_workflow(tmp_path, tables=tiny_table(seeds=(0, 1, 2)))
    c = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert [r[3] for r in table_runs(load_config(c, root=root), "tiny")] == [0, 1, 2, 0, 1, 2]
    c["seeds"] = [4]
    assert [r[3] for r in table_runs(load_config(c, root=root), "tiny")] == [4, 4]
    c["seeds"] = [-1]
    with pytest.raises(ConfigError, match="seeds"):
        load_config(c, root=root)


def test_execution_fields_are_job_resources_resolved_through_the_schedule_layers():
    cfg = load_config(root=REPO)
    # synthetic3d's smoke override sets neither: the smoke defaults apply, not built-in ones
    assert run_resources(cfg, "synthetic3d", "supervised") == {
        "checkpoint_interval": 20, "runtime": 30, "mem_mb": 8000, "infer_runtime": 60, "infer_mem_mb": 8000}
    assert run_resources(cfg, "acdc", "alhvr")["runtime"] == 720  # paper
    assert not set(run_spec(cfg, "acdc", "alhvr", 10, 0)["schedule"]) & set(EXECUTION_FIELDS)


def test_a_method_not_implemented_keeps_its_row_only_with_paper_values(tmp_path):
    tables = tiny_table(methods=("supervised",))
    tables["tiny"]["rows"].append({"method": "fixmatch", "ratios": [25], "run": False})
    root = make_workflow(tmp_path / "a", tables=tables)
    with pytest.raises(ConfigError, match=r"rows\.1: 'fixmatch' is not implemented here.*none for ratio\(s\) 25"):
        load(root)
    tables["tiny"]["reference"] = {"source": "x", "values": {"fixmatch": {25: {"dice": 80.0}}}}
    root = make_workflow(tmp_path / "b", tables=tables)
    cfg = load(root)
    assert [r[1] for r in table_runs(cfg, "tiny")] == ["supervised"]  # nothing to train for it


# ----------------------------------------------------------------------------- what a config must not say
def _edit(root, name, change):
    path = {"datasets": root / "config" / "datasets" / "tiny.yaml", "tables": root / "config" / "tables" / "tiny.yaml",
            "schedules": root / "config" / "schedules.yaml"}[name]
    data = yaml.safe_load(path.read_text())
    change(data)
    write_yaml(path, data)


@pytest.mark.parametrize("name, change, fragment", [
    ("tables", lambda t: t["tiny"].update(seeds=[0, 0]), "tiny.seeds: [0, 0] has non-unique elements"),
    ("tables", lambda t: t["tiny"]["rows"][0].update(ratios=[25, 25]), "tiny.rows.0.ratios: [25, 25] has non-unique"),
    ("tables", lambda t: t["tiny"]["rows"].append({"method": "supervised", "ratios": [25], "label": "again"}),
     "tiny.rows.2: method 'supervised' at ratio 25 is also in rows.0; the same runs in two rows"),
    ("tables", lambda t: t["tiny"]["rows"].append({"method": "mean_teacher", "ratios": [50], "label": "supervised"}),
     "tiny.rows.2: label 'supervised' is also rows.0's"),
], ids=["seeds", "ratios", "runs-in-two-rows", "labels"])
def test_a_table_listing_a_seed_ratio_or_row_twice_is_rejected(tmp_path, name, change, fragment):
    root = make_workflow(tmp_path)
    _edit(root, name, change)
    with pytest.raises(ConfigError) as exc:
        load(root)
    assert fragment in str(exc.value)


def test_a_table_built_with_a_seed_twice_is_refused_where_it_is_built():
    from semiseg.reporting.tables import build_table

    spec = {"title": "t", "dataset": "d", "seeds": [0, 0], "rows": [{"method": "supervised", "ratios": [10]}]}
    with pytest.raises(ValueError, match=r"seeds: seed\(s\) 0 listed twice"):
        build_table(spec, dataset_info={"train_patients": 10, "labeled_patients": {10: 1}},
                    results={("supervised", 10, 0): None}, footer={})


@pytest.mark.parametrize("name, methods_extra, change, fragment", [
    ("schedules", None, lambda s: s["smoke"]["defaults"].update(lr=float("nan")),
     "smoke.defaults.lr: nan is not a finite number"),
    ("schedules", None, lambda s: s["smoke"]["defaults"].update(momentum=float("inf")),
     "smoke.defaults.momentum: inf is not a finite number"),
    (None, {"mt_x": {"algorithm": "mean_teacher", "description": "x", "params": {"consistency": float("inf")}}}, None,
     "mt_x.params.consistency: inf is not a finite number"),
    (None, {"mt_x": {"algorithm": "mean_teacher", "description": "x", "network": "resnet9000"}}, None,
     "mt_x.network: 'resnet9000' is not allowed; allowed: 'unet', 'vnet'"),
    ("datasets", None, lambda d: d["tiny2d"].update(network="resnet9000"),
     "tiny2d.network: 'resnet9000' is not allowed; allowed: 'unet', 'vnet'"),
    ("datasets", None, lambda d: d["tiny2d"]["source"]["params"].update(n_trian=4),
     "tiny2d.source.params.n_trian: unknown field; allowed: distractors, heart_scale, myo_contrast, n_test, n_train, n_val, noise, size, slices"),
    ("datasets", None, lambda d: d["tiny2d"]["source"]["params"].update(n_train="4"),
     "tiny2d.source.params.n_train: '4' is not of type 'integer'"),
    ("tables", None, lambda t: t["tiny"].update(reference={"values": {"supervised": {25: {"dice": float("nan")}}}}),
     "tiny.reference.values.supervised.25.dice: nan is not a finite number"),
    ("datasets", None, lambda d: d["tiny2d"]["ratios"].update({"0": 1}),
     "tiny2d.ratios: '0' is not allowed; allowed: a ratio in percent: 1 to 100"),
    ("datasets", None, lambda d: d["tiny2d"]["ratios"].update({"500": 1}),
     "tiny2d.ratios: '500' is not allowed; allowed: a ratio in percent: 1 to 100"),
], ids=["nan-lr", "inf-momentum", "inf-param", "network-of-a-method", "network-of-a-dataset", "synthetic-param-name",
        "synthetic-param-type", "nan-paper-value", "ratio-0", "ratio-500"])
def test_bad_values_are_rejected_at_load_naming_the_field(tmp_path, name, methods_extra, change, fragment):
    root = make_workflow(tmp_path, methods_extra=methods_extra)
    if name:
        _edit(root, name, change)
    with pytest.raises(ConfigError) as exc:
        load(root)
    assert fragment in str(exc.value)


def test_the_schemas_know_every_network_and_every_generator_argument():
    import inspect

    from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d
    from semiseg.nets import NETWORKS

    datasets = yaml.safe_load((REPO / "workflow" / "schemas" / "datasets.schema.yaml").read_text())
    methods = yaml.safe_load((REPO / "workflow" / "schemas" / "methods.schema.yaml").read_text())
    assert sorted(datasets["additionalProperties"]["properties"]["network"]["enum"]) == sorted(NETWORKS)
    assert sorted(methods["additionalProperties"]["properties"]["network"]["enum"]) == sorted(NETWORKS)
    for layout, generator in (("synthetic2d", write_synthetic2d), ("synthetic3d", write_synthetic3d)):
        args = [p for p in inspect.signature(generator).parameters if p not in ("out_dir", "seed", "overwrite")]
        assert sorted(datasets["$defs"][layout]["properties"]) == sorted(args)


# ----------------------------------------------------------------------------- through snakemake's command line
def test_seeds_from_the_command_line_are_integers(tmp_path):
    root = make_workflow(tmp_path)
    run = snakemake(root, "-n", "--config", "seeds=[0, 1]", timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert re.search(r"^train\s+4$", out, re.M), out[-3000:]  # 2 rows x 1 ratio x 2 seeds


def test_a_target_at_an_undefined_ratio_names_the_defined_ones(tmp_path):
    root = make_workflow(tmp_path)
    run = snakemake(root, "-n", "results/splits/tiny2d/99.json", timeout=300)
    assert run.returncode != 0
    assert "ratio 99 is not defined for tiny2d; defined: 25, 50" in run.stdout + run.stderr


def test_a_smoke_test_stride_replaces_the_3d_protocol_s_in_the_spec_and_is_refused_on_2d(tiny_workflow):
    cfg = load_config({"tables": ["la"], "schedule": "smoke"}, root=REPO)
    smoke = run_spec(cfg, "la", "mean_teacher", 10, 0)
    assert smoke["dataset"]["stride"] == smoke["schedule"]["test_stride"] == [80, 112, 112]
    paper = run_spec(load_config({"tables": ["la"], "schedule": "paper"}, root=REPO), "la", "mean_teacher", 10, 0)
    assert paper["dataset"]["stride"] == [4, 18, 18] and "test_stride" not in paper["schedule"]
    schedules = yaml.safe_load((tiny_workflow / "config" / "schedules.yaml").read_text())
    schedules["smoke"]["datasets"] = {"tiny2d": {"test_stride": [1, 8, 8]}}
    write_yaml(tiny_workflow / "config" / "schedules.yaml", schedules)
    with pytest.raises(ConfigError, match=r"schedules\.yaml: smoke\.datasets\.tiny2d\.test_stride: tiny2d is a 2D"):
        load(tiny_workflow)



def _repo_copy_edited(root, file, change):
    """The repository's workflow and catalogues in `root`, with `change` applied to one file's YAML."""
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "config", root / "config")
    data = yaml.safe_load((root / "config" / file).read_text())
    change(data)
    write_yaml(root / "config" / file, data)
    return root


@pytest.mark.parametrize("file, change, fragment", [
    ("datasets/pancreas.yaml", lambda d: d["pancreas"].update(stride=[16, 120, 16]),
     "pancreas.yaml: pancreas.stride: [16, 120, 16] steps further than pancreas's patch [96, 96, 96] on the y axis"),
    ("schedules.yaml", lambda s: s["paper"].setdefault("datasets", {}).setdefault("pancreas", {}).update(
        test_stride=[16, 160, 160]),
     "schedules.yaml: paper.datasets.pancreas.test_stride: [16, 160, 160] steps further than pancreas's patch "
     "[96, 96, 96] on the y, x axis"),
    ("methods/baselines.yaml", lambda m: m["mean_teacher"].setdefault("schedule", {}).setdefault("smoke", {}).update(
        test_stride=[4, 18, 113]),
     "baselines.yaml: mean_teacher.schedule.smoke.test_stride: [4, 18, 113] steps further than "),
    ("tables/brats.yaml", lambda t: t["brats"].update(stride=[97, 16, 16]),
     "brats.yaml: brats.stride: [97, 16, 16] steps further than brats's patch [96, 96, 96] on the z axis"),
], ids=["dataset-stride", "schedule-test-stride", "method-test-stride", "table-stride"])
def test_a_sliding_window_stride_past_the_patch_is_refused_at_load(tmp_path, file, change, fragment):
    """Windows further apart than the patch leave voxels no window predicts (they would read as
    background): every place a stride is set is checked against the patch of the runs it reaches."""
    root = _repo_copy_edited(tmp_path / "wf", file, change)
    with pytest.raises(ConfigError) as exc:
        load_config({"tables": ["demo"]}, root=root)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("key", ["datasets", "ratio_params"])
def test_a_misspelled_dataset_in_a_method_s_settings_is_refused(tmp_path, key):
    """Renaming mean_teacher's `datasets.la` to `left_atrium` once gave "config OK", and LA runs
    then used the 2D consistency delay: a dataset neither catalogue defines is refused."""
    settings = {"datasets": {"left_atrium": {"params": {"consistency_start": 0.0}}},
                "ratio_params": {"left_atrium": {10: {"consistency": 0.2}}}}[key]
    root = _repo_copy_edited(tmp_path / "wf", "methods/baselines.yaml", lambda m: m["mean_teacher"].update({key: settings}))
    with pytest.raises(ConfigError, match=rf"baselines\.yaml: mean_teacher\.{key}\.left_atrium: unknown dataset; "
                                          r"allowed: abdomenct1k, acdc, .*la, "):
        load_config({"tables": ["demo"]}, root=root)


def test_a_small_catalogue_reuses_the_shipped_methods_by_naming_their_datasets(tmp_path):
    """The tests' tiny dataset catalogue serves the shipped methods, whose per-dataset settings
    name the shipped datasets: it lists them in catalogues.other_datasets, explicitly."""
    root = make_workflow(tmp_path)
    assert load(root)["settings"]["catalogues"]["other_datasets"] == shipped_datasets()
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    del config["catalogues"]
    with pytest.raises(ConfigError, match=r"\.datasets\.\w+: unknown dataset; allowed: tiny2d \(a dataset of another"):
        load_config(config, root=root)



@pytest.mark.parametrize("results, fragment", [
    ("/", "'/' is outside the workflow directory"),
    ("", "'' is the workflow directory itself"),
    (".", "'.' is the workflow directory itself"),
    ("../elsewhere", "'../elsewhere' is outside the workflow directory"),
    ("results/../..", "'results/../..' is outside the workflow directory"),
], ids=["root", "empty", "dot", "parent", "dotdot"])
def test_results_must_be_a_folder_inside_the_workflow(tmp_path, results, fragment):
    root = make_workflow(tmp_path / "wf")
    c = yaml.safe_load((root / "config" / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"^config: results: ") as exc:
        load_config({**c, "results": results}, root=root)
    assert fragment in str(exc.value)
    assert load_config({**c, "results": "out/results"}, root=root)["settings"]["results"] == "out/results"


def test_a_build_about_to_train_a_long_schedule_on_the_cpu_warns_with_the_budget_first(tmp_path):
    """A `paper` build on a CPU started dozens of trainings budgeted at 12 h each without a word:
    before the first job, the build names how many, their schedule and the budget."""
    from semiseg.config import cpu_training_warning

    root = make_workflow(tmp_path / "wf")
    runs = table_runs(load(root), "tiny")
    assert cpu_training_warning(load(root), runs) is None  # smoke runs: no warning
    _edit(root, "datasets", lambda d: d["tiny2d"].update(schedule="paper"))
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    # a source the generated layout refuses: the fetch, the first job, fails at once
    write_yaml(root / "config" / "config.yaml", {**config, "sources": {"tiny2d": {"path": "/nowhere"}}})
    run = snakemake(root, timeout=300)
    assert run.returncode != 0
    assert ("semiseg: warning: 2 trainings of the paper schedule (up to 30000 iterations each) are about to start "
            "on the CPU. Each is budgeted at up to 12 h on a GPU (the schedule's runtime), 24 h in all") in run.stderr
    assert run.stderr.index("semiseg: warning:") < run.stderr.index("rule fetch")
