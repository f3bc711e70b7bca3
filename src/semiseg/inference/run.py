"""The infer stage: a trained run's test-split predictions as NIfTI label maps.

Each prediction ``predictions/<case>.nii.gz`` carries the geometry of its source image (spacing,
origin and direction, as the store keeps them: :meth:`semiseg.data.store.Store.geometry`), so a
viewer that places images in world coordinates (ITK-SNAP, 3D Slicer) lays it over the original
scan. ``predictions/labels.txt`` is the ITK-SNAP label description of the label values
(:func:`semiseg.inference.export.write_itksnap_labels`). ``semiseg export`` writes the image and
ground truth beside each prediction (:mod:`semiseg.inference.export`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from semiseg.data.store import Store
from semiseg.device import explain_out_of_memory, select_device
from semiseg.inference.export import LEGEND_NAME, write_itksnap_labels, write_label_nifti
from semiseg.inference.predict import predict_volume
from semiseg.io import atomic_dir
from semiseg.methods import inference_network
from semiseg.nets import network_for

__all__ = ["infer", "load_run_network", "test_cases"]

log = logging.getLogger("semiseg.infer")


def load_run_network(run_dir: Path, device) -> tuple[torch.nn.Module, dict]:
    """The evaluated network of a finished run (``model.pt`` + ``config.json``), in eval mode.

    Raises:
        ValueError: ``model.pt`` cannot be read as this run's network (truncated, not a torch
            file, empty, a key missing or of the wrong shape): names the file and the train job
            that writes it.
    """
    with open(run_dir / "config.json") as fh:
        spec = json.load(fh)["spec"]
    net = inference_network(spec, lambda: network_for(spec))
    weights = Path(run_dir) / "model.pt"
    try:
        net.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        job = (f"dataset {spec['dataset']['name']}, method {spec['method']['name']}, ratio {spec['ratio']}, "
               f"seed {spec['seed']}")
        raise ValueError(f"{weights}: not this run's network ({type(exc).__name__}: {reason[:300]}); it is written "
                         f"by the train job of the run ({job}; its log: logs/train/ under the results folder). "
                         "Delete it, and the workflow trains the run again") from None
    return net.to(device).eval(), spec


def test_cases(split: dict, spec: dict) -> list[str]:
    """The test cases a run is scored on (a smoke schedule may cap how many)."""
    return split["cases"]["test"][: spec["schedule"].get("max_test_cases") or None]


def infer(run_dir: Path, store_path: Path, split_path: Path, out_dir: Path, *, device: str | None = None) -> int:
    """Predict every test case into `out_dir`/<case>.nii.gz; returns the number of cases."""
    with open(split_path) as fh:
        split = json.load(fh)
    dev = select_device(device or "auto")
    net, spec = load_run_network(Path(run_dir), dev)
    cases = test_cases(split, spec)
    # a failure leaves no half-written predictions behind (atomic_dir removes its folder)
    with atomic_dir(out_dir) as tmp:
        with Store(store_path) as store:
            write_itksnap_labels(store.labels, tmp / LEGEND_NAME)
            for k, cid in enumerate(cases, start=1):
                with explain_out_of_memory(dev, f"predicting {cid}",
                                           f"the network sees windows of patch_size {spec['dataset']['patch_size']} "
                                           "(config/datasets/); run infer on the CPU (`semiseg infer --device cpu`)"):
                    pred = predict_volume(net, store.read_image(cid), spec["dataset"], dev)
                write_label_nifti(pred, store.geometry(cid), tmp / f"{cid}.nii.gz")
                log.info("predicted %s (%d of %d)", cid, k, len(cases))
    return len(cases)
