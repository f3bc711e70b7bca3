"""Shared test helpers: a tiny case store with its split, a run spec, a params schema's defaults,
a tiny network, method and batch, a rendered table's cells, a tiny CRLN, a shared data set's folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import REPO, missing_data
from semiseg.data.store import Case, write_store
from semiseg.schema import read_schema

LABELS = {"background": 0, "a": 1, "b": 2}


def data_set_folder(shared_data_dir: Path, folder: str, name: str) -> Path:
    """``<shared data>/<folder>``; a missing data set (skipped, failed under SEMISEG_REQUIRE_DATA=1)
    when it holds no ``train.list``."""
    path = shared_data_dir / folder
    if not (path / "train.list").is_file():
        missing_data(f"{name} not found at {path}")
    return path


def read_list(path: Path) -> list[str]:
    """The non-blank lines of a split list, stripped."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def schema_defaults(algorithm: str) -> dict:
    """The params schema's defaults: what a catalogue entry without params runs ({} for an
    algorithm a test registers without a schema)."""
    if not (REPO / "workflow" / "schemas" / "params" / f"{algorithm}.schema.yaml").exists():
        return {}
    schema = read_schema(REPO, f"params/{algorithm}")  # the shared definitions joined in
    return {k: v["default"] for k, v in schema["properties"].items()}


def tiny_store(path: Path, n: int = 6, dims: int = 2, *, shape3d=(20, 24, 24), box=(8, 20), core=(12, 16),
               channels: int = 1) -> tuple[Path, Path]:
    """``n`` cases of a square ``box`` (label 1) around a square ``core`` (label 2) in noise, on
    3 slices of 32² (2D) or ``shape3d`` (3D), and a split: 2 labeled, 2 unlabeled, 1 val, 1 test.
    ``channels`` > 1: images ``(C, Z, Y, X)``, channel ``c > 0`` the label times ``-c`` in noise.
    Returns the store and split paths."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        shape = (3, 32, 32) if dims == 2 else tuple(shape3d)
        label = np.zeros(shape, np.uint8)
        label[:, box[0]:box[1], box[0]:box[1]] = 1
        label[:, core[0]:core[1], core[0]:core[1]] = 2
        image = (label / 2 + rng.normal(0, 0.1, shape)).astype(np.float32)
        if channels > 1:
            image = np.stack([image, *((-float(c) * label + rng.normal(0, 0.1, shape)).astype(np.float32)
                                       for c in range(1, channels))])
        cases.append(Case(f"p{i}_frame01", f"p{i}", image, label))
    write_store(path, name="tiny", dims=dims, labels=LABELS, cases=cases)
    split = {"cases": {"labeled": ["p0_frame01", "p1_frame01"], "unlabeled": ["p2_frame01", "p3_frame01"],
                       "val": ["p4_frame01"], "test": ["p5_frame01"]}}
    (path.parent / "split.json").write_text(json.dumps(split))
    return path, path.parent / "split.json"


def run_spec(algorithm: str = "mean_teacher", iterations: int = 6, params: dict | None = None, *, dims: int = 2,
             network: str | None = None, **sched) -> dict:
    """A hand-made run spec on the tiny store: the algorithm's schema defaults under ``params``."""
    schedule = {"name": "test", "iterations": iterations, "labeled_batch_size": 2, "unlabeled_batch_size": 2,
                "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "lr_policy": "poly", "val_interval": 3,
                "checkpoint_interval": 2, "amp": False}
    schedule.update(sched)
    three_d = dims == 3
    return {"dataset": {"name": "tiny", "dims": dims, "labels": LABELS, "num_classes": 3,
                        "patch_size": [16, 24, 24] if three_d else [32, 32], "stride": [8, 12, 12] if three_d else None},
            "method": {"name": algorithm, "algorithm": algorithm, "network": network or ("vnet" if three_d else "unet"),
                       "params": {**schema_defaults(algorithm), **(params or {})}},
            "schedule": schedule, "ratio": 50, "labeled_patients": 2, "seed": 7, "device": "cpu"}


def pixel_net(weight: float, bias: float = 0.0):
    """Two-class 1x1 convolution: logits ``[weight * x + bias, 0]`` at every pixel."""
    import torch
    from torch import nn

    net = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0] = weight
        net.bias[0] = bias
    return net


def table_cells(text: str) -> dict[tuple[str, str], list[str]]:
    """(row label, Labeled cell) -> the metric cells of a rendered results table (markdown)."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    out = {}
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        out[(cells[0], cells[1])] = cells[3:]
    return out


def unet3(in_channels: int = 1):
    """A tiny 2D U-Net: ``in_channels`` in (1), 3 classes out, no dropout."""
    from semiseg.nets import UNet

    return UNet(in_channels, 3, channels=(4, 8, 16, 32, 64), dropout=(0,) * 5)


def vnet3(in_channels: int = 1):
    """A tiny V-Net: ``in_channels`` in (1), 3 classes out, 4 base filters, no dropout (16^3 patches)."""
    from semiseg.nets import VNet

    return VNet(in_channels, 3, n_filters=4, normalization="batchnorm", has_dropout=False)


#: Methods that train 3D networks only (stepped on 16^3 patches with :func:`vnet3`).
THREE_D_ONLY = {"caml"}


def tiny_step(algorithm: str, params: dict | None = None, channels: int = 1):
    """``(method, ctx)``: the algorithm built on a tiny network (:func:`unet3`, or :func:`vnet3` for
    :data:`THREE_D_ONLY`) of ``channels`` input channels with its schema defaults under ``params``,
    and the step context of iteration 9 of 10 with its views of a seeded batch of 2 + 2 samples
    (3 classes)."""
    import torch

    from semiseg.methods import Step, StepContext, build_method

    three_d = algorithm in THREE_D_ONLY
    net = vnet3 if three_d else unet3
    m = build_method(run_spec(algorithm, 10, params=params, dims=3 if three_d else 2), lambda: net(channels))
    g = torch.Generator().manual_seed(0)
    shape = (16, 16, 16) if three_d else (32, 32)
    batch = {"labeled_image": torch.randn(2, channels, *shape, generator=g),
             "labeled_label": torch.randint(0, 3, (2, *shape), generator=g),
             "unlabeled_image": torch.randn(2, channels, *shape, generator=g)}
    return m, StepContext(Step(9, 10), m.make_views(batch, g), g)


def smoke_rows(results: Path, table: str) -> tuple[list[str], list[str]]:
    """The labels of the lines of `table` (one per row and ratio) that the smoke build at `results`
    runs, and of those that show the papers' values only, as the build's own copy of the config
    (after its cuts) says: ``(ran, paper_only)``, in the table's order."""
    from semiseg.config import load_config

    rows = load_config(root=results.parent)["tables"][table]["rows"]
    lines = [(r.get("label", r["method"]), r.get("run", True)) for r in rows for _ in r["ratios"]]
    return [label for label, runs in lines if runs], [label for label, runs in lines if not runs]


def small_unet():
    """A 2-level 2D U-Net: 1 channel in, 3 classes out, no dropout."""
    from semiseg.nets import UNet

    return UNet(1, 3, dims=2, channels=(4, 8), dropout=(0.0, 0.0))


def method_on_defaults(algorithm: str, net_factory=None, num_classes: int = 3, batch: int = 2, **params):
    """A 2D ``algorithm`` on ``net_factory``'s network (default :func:`small_unet`), its schema
    defaults with ``params`` over them, for batches of ``batch`` labeled and ``batch`` unlabeled images."""
    from semiseg.methods import build_method

    spec = {"dataset": {"num_classes": num_classes, "dims": 2},
            "method": {"algorithm": algorithm, "params": {**schema_defaults(algorithm), **params}},
            "schedule": {"labeled_batch_size": batch, "unlabeled_batch_size": batch}}
    return build_method(spec, net_factory or small_unet)


def squares_batch(seed: int = 0, b: int = 2, size: int = 16) -> dict:
    """``b`` labeled ``size``² images of a square (label 1) around a smaller one (label 2) in
    seeded noise, and as unlabeled images the same flipped left-right under fresh noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(b, size, size, dtype=torch.long)
    label[:, 4:12, 4:12] = 1
    label[:, 6:10, 6:10] = 2
    image = label[:, None].float() / 2 + 0.1 * torch.randn(b, 1, size, size, generator=g)
    return {"labeled_image": image, "labeled_label": label,
            "unlabeled_image": image.flip(-1) + 0.05 * torch.randn(b, 1, size, size, generator=g)}


def crln_method(**params):
    """A 2D CRLN method (3 classes, :func:`unet3`) at ratio 10 with ``params`` over the defaults."""
    from semiseg.methods import build_method

    return build_method(run_spec("crln", 10, params=params), unet3)


def crln_context(m, step, seed: int = 0):
    """A step context of ``step`` for CRLN ``m``: a seeded batch of 2 + 2 random 32 x 32 images with
    3-class labels (and ``m``'s views), and the generator they were drawn from."""
    import torch

    from semiseg.methods import StepContext

    g = torch.Generator().manual_seed(seed)
    b = {"labeled_image": torch.randn(2, 1, 32, 32, generator=g),
         "labeled_label": torch.randint(0, 3, (2, 32, 32), generator=g),
         "unlabeled_image": torch.randn(2, 1, 32, 32, generator=g)}
    return StepContext(step, m.make_views(b, g), g)
