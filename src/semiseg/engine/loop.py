"""The one training loop every method runs in.

``train(spec, store, split, out_dir)`` does, for any method and for 2D and 3D alike:

- seeds every RNG from ``spec['seed']``, picks the device, loads the labeled and unlabeled
  streams resident on it (``semiseg.engine.data``);
- per iteration: a two-stream batch with batched on-device augmentation, the method's
  ``training_step`` (under bf16 autocast on CUDA when the schedule says ``amp``), a NaN/inf
  check of every named term, SGD with poly or constant decay, the method's post-step hook;
- every ``val_interval`` iterations: validation on the val split with the inference protocol of
  the test split, keeping the best network (mean foreground Dice);
- every ``checkpoint_interval`` iterations, and on SIGTERM: the whole resumable state (models,
  EMA teachers, optimiser, iteration, RNG states, best score, log) to ``checkpoint_dir``,
  outside the rule's declared outputs. A job started again resumes from it; on CPU with a fixed
  seed an interrupted-and-resumed run ends with the same weights as an uninterrupted one;
- at the end, and only then, the declared outputs: ``model.pt`` (best weights of the evaluated
  network), ``models.pt`` (every trained network, e.g. both of CPS or ALHVR), ``train.csv``
  (every loss term per logged iteration) and ``config.json``. ``train.csv`` alone is also
  rewritten at each validation while the run goes on, and a log line printed
  (``semiseg.engine.progress``); ``model.pt``, written last, marks a finished run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from semiseg.config import spec_hash
from semiseg.data.store import Store
from semiseg.device import explain_out_of_memory, select_device
from semiseg.engine.data import StreamSampler, load_resident
from semiseg.engine.progress import Progress
from semiseg.inference.predict import predict_volume
from semiseg.methods import Step, build_method
from semiseg.nets import build_network

__all__ = ["TrainingError", "Preempted", "train", "mean_dice", "atomic_save"]

log = logging.getLogger("semiseg.train")


#: Iterations between resumable states when neither the job nor the spec says.
DEFAULT_CHECKPOINT_INTERVAL = 1000


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, memory exhausted); the message says why and where."""


class Preempted(SystemExit):
    """Raised after SIGTERM once the checkpoint is written; exits with status 143 (128 + 15)."""

    def __init__(self):
        super().__init__(143)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def mean_dice(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """Mean foreground Dice over classes (both empty counts as 1), for checkpoint selection."""
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        denom = p.sum() + g.sum()
        scores.append(1.0 if denom == 0 else 2.0 * np.logical_and(p, g).sum() / denom)
    return float(np.mean(scores))


def _rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _SigtermFlag:
    """Turns SIGTERM (SLURM's warning before a time limit or preemption) into a flag the loop checks."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _validate(net, store: Store, cases: list[str], dataset: dict, device) -> float:
    scores = []
    for cid in cases:
        image, label = store.read(cid)
        pred = predict_volume(net, image, dataset, device)
        scores.append(mean_dice(pred, label, dataset["num_classes"]))
    return float(np.mean(scores))


def train(spec: dict, store_path: Path, split_path: Path, out_dir: Path, **kwargs) -> dict:
    """Train one run; returns a summary dict (also written into ``config.json``).

    SIGTERM at any point (also while the data loads) is answered by writing the resumable state
    at the last completed iteration and exiting with status 143. See :func:`_train` for the
    keyword arguments.
    """
    with _SigtermFlag() as sigterm:
        return _train(spec, store_path, split_path, out_dir, sigterm=sigterm, **kwargs)


def _train(spec: dict, store_path: Path, split_path: Path, out_dir: Path, *, sigterm: "_SigtermFlag",
          checkpoint_dir: Path | None = None, code_fingerprint: str = "", progress: bool = True,
          checkpoint_interval: int | None = None, stop_after: int | None = None) -> dict:
    """The body of :func:`train`.

    A saved state is resumed only if it was written for the same spec and `code_fingerprint`
    (the hash of the code the run depends on); otherwise training starts over. `stop_after`
    ends the loop after that many iterations *without* writing the final outputs (the
    resumable state is written): tests use it to interrupt a run deterministically.
    """
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path = ckpt_dir / "state.pt"
    best_path = ckpt_dir / "best.pt"  # the evaluated network: model.pt
    best_models_path = ckpt_dir / "best_models.pt"  # every trained network (two for CPS/ALHVR): models.pt
    log_path = ckpt_dir / "train.csv.partial"
    fingerprint = spec_hash({"spec": spec, "code": code_fingerprint})

    sched = spec["schedule"]
    dataset = spec["dataset"]
    device = select_device(spec["device"])
    seed = int(spec["seed"])
    seed_everything(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    with open(split_path) as fh:
        split = json.load(fh)
    net_factory = lambda: build_network(spec["method"]["network"], in_channels=1,  # noqa: E731
                                        num_classes=dataset["num_classes"], dims=dataset["dims"])
    method = build_method(spec, net_factory).to(device)
    params = [p for p in method.models.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=sched["lr"], momentum=sched["momentum"],
                                weight_decay=sched["weight_decay"])

    with Store(store_path) as store:
        if method.uses_unlabeled and not split["cases"]["unlabeled"]:
            raise TrainingError(f"{split_path}: method {spec['method']['name']!r} needs unlabeled data "
                                "but the split has none (a 100 % ratio); use a supervised method there")
        with explain_out_of_memory(device, "while loading the training set onto it",
                                   f"the whole training set is kept on the training device at patch_size "
                                   f"{dataset['patch_size']}; lower patch_size in config/datasets/", TrainingError):
            labeled = load_resident(store, split["cases"]["labeled"], dataset["dims"], dataset["patch_size"],
                                    device, with_label=True)
            unlabeled = (load_resident(store, split["cases"]["unlabeled"], dataset["dims"], dataset["patch_size"],
                                       device, with_label=False) if method.uses_unlabeled else None)
        val_cases = split["cases"]["val"][: sched.get("max_val_cases") or None]
        lab_sampler = StreamSampler(len(labeled), sched["labeled_batch_size"], seed, stream=0)
        unl_sampler = (StreamSampler(len(unlabeled), sched["unlabeled_batch_size"], seed, stream=1)
                       if unlabeled is not None and sched["unlabeled_batch_size"] > 0 else None)

        start_it, best, best_it = 0, -1.0, -1
        if state_path.exists():
            state = torch.load(state_path, map_location=device, weights_only=False)
            if state["fingerprint"] != fingerprint:
                log.warning("%s was written for another spec (%s != %s); starting over",
                            state_path, state["fingerprint"], fingerprint)
            else:
                method.load_state_dict(state["method"])
                optimizer.load_state_dict(state["optimizer"])
                _set_rng_state(state["rng"], device)
                start_it, best, best_it = state["iteration"], state["best"], state["best_iteration"]
                log.info("resuming from %s at iteration %d", state_path, start_it)
        term_names: list[str] | None = None
        rows: list[dict] = []
        if start_it and log_path.exists():
            with open(log_path) as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) < start_it]

        def save_state(iteration: int) -> None:
            atomic_save({"fingerprint": fingerprint, "iteration": iteration, "method": method.state_dict(),
                         "optimizer": optimizer.state_dict(), "rng": _rng_state(device), "best": best,
                         "best_iteration": best_it}, state_path)
            _write_csv(rows, log_path)

        total = int(sched["iterations"])
        # how often the resumable state is written: the job's setting, not the spec's (it does not
        # change the result; see semiseg.config.EXECUTION_FIELDS)
        every = int(checkpoint_interval or sched.get("checkpoint_interval") or DEFAULT_CHECKPOINT_INTERVAL)
        amp = bool(sched.get("amp")) and device.type == "cuda"
        method.train()
        bar = Progress(total, name=spec["method"]["name"], csv_path=out_dir / "train.csv",
                       bar=None if progress else False)
        bar.start(start_it, rows)
        # SIGTERM is checked once before the first iteration and after every one
        if sigterm.raised:
            save_state(start_it)
            bar.close(finished=False)
            raise Preempted()
        for it in range(start_it, total):
            step = Step(iteration=it, total=total)
            g = torch.Generator().manual_seed(seed * 1_000_003 + it)
            xl, yl = labeled.batch(lab_sampler.indices(it), g, with_label=True)
            batch = {"labeled_image": xl, "labeled_label": yl}
            if unl_sampler is not None:
                batch["unlabeled_image"], _ = unlabeled.batch(unl_sampler.indices(it), g, with_label=False)
            lr = sched["lr"] * ((1.0 - it / total) ** 0.9 if sched["lr_policy"] == "poly" else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with explain_out_of_memory(device, f"at iteration {it}", _memory_advice(spec), TrainingError):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = method.training_step(batch, step)
                _check_finite(losses, it, spec["method"]["name"])
                optimizer.zero_grad(set_to_none=True)
                losses.total.backward()
                optimizer.step()
            method.after_optimizer_step(step)

            term_names = term_names or list(losses.terms)
            row = {"iteration": it, "lr": lr, "total": float(losses.total.detach())}
            row.update({k: float(v.detach()) for k, v in losses.terms.items()})
            row.update({k: float(v) for k, v in losses.stats.items()})
            done = it + 1
            if val_cases and (done % sched["val_interval"] == 0 or done == total):
                with explain_out_of_memory(device, f"validating at iteration {done}",
                                           f"validation predicts each val volume in slices or windows of "
                                           f"patch_size {dataset['patch_size']}; lower patch_size in "
                                           "config/datasets/", TrainingError):
                    score = _validate(method.eval_network(), store, val_cases, dataset, device)
                row["val_dice"] = score
                if score > best:
                    best, best_it = score, done
                    atomic_save(method.eval_network().state_dict(), best_path)
                    atomic_save(method.models.state_dict(), best_models_path)
            rows.append(row)
            bar.update(row)
            if "val_dice" in row:
                bar.validation(row, best, best_it, rows)
            if done % every == 0 or sigterm.raised or done == stop_after:
                save_state(done)
            if sigterm.raised:
                bar.close(finished=False)
                log.warning("SIGTERM: checkpoint written at iteration %d; exiting to be resumed", done)
                raise Preempted()
            if done == stop_after:
                bar.close(finished=False)
                return {"stopped_at": done}
        bar.close()

    if not val_cases:  # no val split: the last weights are the result
        atomic_save(method.eval_network().state_dict(), best_path)
        atomic_save(method.models.state_dict(), best_models_path)
        best_it = total
    summary = {"iterations": total, "best_val_dice": best if best >= 0 else None, "best_iteration": best_it,
               "resumed_from": start_it or None, "wall_seconds": round(time.time() - t_start, 2),
               "device": str(device), "spec_hash": fingerprint}
    _write_csv(rows, out_dir / "train.csv")
    with open(out_dir / ".config.json.tmp", "w") as fh:
        json.dump({"spec": spec, "summary": summary}, fh, indent=2)
    os.replace(out_dir / ".config.json.tmp", out_dir / "config.json")
    os.replace(best_models_path, out_dir / "models.pt")
    os.replace(best_path, out_dir / "model.pt")  # last: its presence means the run is complete
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def _check_finite(losses, iteration: int, method: str) -> None:
    """Stop on a NaN or infinite loss, naming every non-finite term (the total is only named when
    no term is: a bad term makes the total bad too, and the term is what one needs to know)."""
    values = [losses.total, *losses.terms.values()]
    if bool(torch.isfinite(torch.stack([v.detach().float().reshape(()) for v in values])).all()):
        return  # the usual case: one check (one device sync) per iteration
    bad = {name: float(v.detach()) for name, v in losses.terms.items() if not torch.isfinite(v).all()}
    bad = bad or {"total": float(losses.total.detach())}
    named = ", ".join(f"{name!r} is {value}" for name, value in bad.items())
    raise TrainingError(f"iteration {iteration}: loss term {named} (method {method}); stopping. "
                        "Lower the lr or check the data.")


def _memory_advice(spec: dict) -> str:
    sched, dataset = spec["schedule"], spec["dataset"]
    return (f"labeled/unlabeled batch {sched['labeled_batch_size']}/{sched['unlabeled_batch_size']} of "
            f"patch_size {dataset['patch_size']}; lower labeled_batch_size/unlabeled_batch_size in the schedule "
            "(config/schedules.yaml or the method's `schedule:` overrides), lower patch_size in "
            "config/datasets/, or turn on `amp` (bf16 on a GPU)")


def _write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    os.replace(tmp, path)

