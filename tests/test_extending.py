"""Extending the pipeline through its public seams only: a new method (a dozen lines over the
teacher–student family) and a new data layout (a reader), each added the way the docs say, run
through the whole workflow. Files are added to a copy of the package and of the workflow, never
to the checkout.

Also: the layout registry, the readers, the generators and the schema's ``source.layout`` enum
name the same layouts.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import numpy as np
import pytest
import yaml

from conftest import REPO, make_workflow, snakemake, write_yaml
from semiseg.data.fetch import GENERATORS
from semiseg.data.preprocess import READERS
from semiseg.data.registry import LAYOUTS

TOY_METHOD = '''
from semiseg.methods.base import register
from semiseg.methods.common.teacher import TeacherStudent


@register("confident_mt")
class ConfidentMT(TeacherStudent):
    """Mean Teacher, each unlabeled pixel's consistency weighted by the teacher's confidence."""

    def pixel_weight(self, ctx):
        return ctx.teacher_probs.amax(dim=1)
'''

TOY_READER = '''
from pathlib import Path

import numpy as np

from semiseg.data.store import Case


def read_npz_layout(src_dir, dataset_name):
    """One <patient>.npz (image, label) per patient; train/val/test lists of patient ids."""
    src = Path(src_dir)
    patients = {role: (src / f"{role}.list").read_text().split() for role in ("train", "val", "test")}

    def generate():
        for role in ("train", "val", "test"):
            for pid in patients[role]:
                data = np.load(src / f"{pid}.npz")
                yield Case(pid, pid, data["image"], data["label"], (1.0, 1.0, 1.0), str(src / f"{pid}.npz"))

    return generate(), patients
'''


def test_the_layout_registry_readers_generators_and_schema_agree():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "datasets.schema.yaml").read_text())
    enum = schema["additionalProperties"]["properties"]["source"]["properties"]["layout"]["enum"]
    assert set(enum) == set(LAYOUTS) == set(READERS)
    assert set(GENERATORS) == {n for n, lay in LAYOUTS.items() if lay.generated}


def _toy_source(path):
    """Six 2D 'patients' of a bright square (1) holding a brighter core (2) in noise."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    ids = [f"toy{i}" for i in range(6)]
    for pid in ids:
        label = np.zeros((3, 32, 32), np.uint8)
        o = rng.integers(4, 10)
        label[:, o:o + 16, o:o + 16] = 1
        label[:, o + 5:o + 11, o + 5:o + 11] = 2
        image = (label / 2 + rng.normal(0, 0.1, label.shape)).astype(np.float32)
        np.savez(path / f"{pid}.npz", image=image, label=label)
    (path / "train.list").write_text("\n".join(ids[:4]) + "\n")
    (path / "val.list").write_text(ids[4] + "\n")
    (path / "test.list").write_text(ids[5] + "\n")


@pytest.mark.slow
def test_a_new_method_and_a_new_layout_run_through_the_workflow(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # the method: its file, its params schema (Mean Teacher's fields), a catalogue entry
    (src / "semiseg" / "methods" / "confident_mt.py").write_text(TOY_METHOD)
    # the layout: its reader, a READERS entry, a registry entry
    (src / "semiseg" / "data" / "npz_layout.py").write_text(TOY_READER)
    pre = src / "semiseg" / "data" / "preprocess.py"
    pre.write_text(pre.read_text().replace("READERS = {", "from semiseg.data.npz_layout import read_npz_layout\n\n"
                                           "READERS = {\n    \"npz\": read_npz_layout,", 1))
    reg = src / "semiseg" / "data" / "registry.py"
    reg.write_text(reg.read_text() + '\nLAYOUTS["npz"] = Layout("npz")\n')

    root = make_workflow(tmp_path / "wf", tables={"toy": {
        "title": "A new method on a new layout", "dataset": "toy", "seeds": [0],
        "rows": [{"method": "supervised", "ratios": [50]}, {"method": "confident_mt", "ratios": [50]}]}},
        methods_extra={"confident_mt": {"algorithm": "confident_mt", "description": "confidence-weighted MT"}})
    params = root / "workflow" / "schemas" / "params"
    shutil.copy(params / "mean_teacher.schema.yaml", params / "confident_mt.schema.yaml")
    schema_path = root / "workflow" / "schemas" / "datasets.schema.yaml"
    schema = schema_path.read_text()
    schema_path.write_text(schema.replace("enum: [synthetic2d, synthetic3d, slices,",
                                          "enum: [npz, synthetic2d, synthetic3d, slices,", 1))
    _toy_source(tmp_path / "toy_source")
    write_yaml(root / "config" / "datasets" / "toy.yaml", {"toy": {
        "description": "Squares in noise, one npz per patient.",
        "source": {"layout": "npz", "path": str(tmp_path / "toy_source")},
        "dims": 2, "network": "unet", "labels": {"background": 0, "square": 1, "core": 2},
        "ratios": {"50": 2}, "patch_size": [32, 32], "schedule": "smoke",
        "network_args": {"channels": [8, 16, 32], "dropout": [0.0, 0.0, 0.0]}}})
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    cfg["tables"] = ["toy"]
    write_yaml(root / "config" / "config.yaml", cfg)

    env = {**os.environ, "PYTHONPATH": str(src)}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        proc = snakemake(root)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (root / "results" / "tables" / "toy.md").read_text()
    assert "confident_mt" in table and "supervised" in table
    run = root / "results" / "runs" / "toy" / "confident_mt" / "50" / "seed0"
    assert (run / "metrics.csv").is_file() and (run / "model.pt").is_file()
    assert "consistency" in (run / "train.csv").read_text().splitlines()[0]
    assert textwrap.dedent(TOY_METHOD).count("\n") < 15  # the whole method file
