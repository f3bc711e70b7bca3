"""The one training loop every method runs in.

``train(spec, store, split, out_dir)`` does, for any method and for 2D and 3D alike:

- seeds every RNG from ``spec['seed']``, picks the device, loads the labeled and unlabeled
  streams resident on it (``semiseg.engine.data``);
- per iteration: a two-stream batch with batched on-device augmentation, the method's extra
  views (``make_views``), one step context (``semiseg.methods.base.StepContext``: the step,
  the batch and its views, the step's generator, the statistics channel) for every hook of
  the step, its ``training_step`` (under bf16 autocast when the schedule says ``amp``;
  ``cudnn_benchmark``, ``channels_last`` and ``compile`` are the other speed options), a
  NaN/inf check of every named term, SGD over the method's parameter groups (and any optimiser
  it owns) with the schedule's lr policy (``semiseg.engine.lr``), the method's second optimisation phase if it has one (CRLN's step of ``a``), its post-step hook; before
  the first step of each of the method's stages, its stage hook (BCP's hand-off);
- every ``val_interval`` iterations: validation on the val split with the inference protocol of
  the test split (``semiseg.engine.validate``), keeping the best network;
- every ``checkpoint_interval`` iterations, and on SIGTERM: the whole resumable state
  (``semiseg.engine.state``) to ``checkpoint_dir``, outside the rule's declared outputs. A job
  started again resumes from it; on CPU with a fixed seed an interrupted-and-resumed run ends
  with the same weights as an uninterrupted one;
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
import math
import time
from pathlib import Path

import torch

from semiseg.config import spec_hash
from semiseg.data.store import Store
from semiseg.device import deterministic_algorithms, explain_out_of_memory, select_device
from semiseg.engine.cost import training_cost
from semiseg.engine.data import StreamSampler, load_resident
from semiseg.engine.lr import lr_factor
from semiseg.engine.progress import Progress, write_rows_csv
from semiseg.engine.outputs import publish
from semiseg.engine.runlock import run_folder_lock
from semiseg.engine.state import Preempted, SigtermFlag, load_state, save_state, seed_everything
from semiseg.engine.validate import mean_dice, validate
from semiseg.io import atomic_write
from semiseg.methods import Step, build_method
from semiseg.methods.base import StageContext, StepContext
from semiseg.nets import network_for

__all__ = ["TrainingError", "Preempted", "build_optimizers", "mean_dice", "run_second_phase", "train"]

log = logging.getLogger("semiseg.train")


#: Iterations between resumable states when neither the job nor the spec says.
DEFAULT_CHECKPOINT_INTERVAL = 1000


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, memory exhausted); the message says why and where."""


def _speed_switches(method, sched: dict, dataset: dict) -> None:
    """The schedule's speed options, each off unless set (see the schedules schema)."""
    if sched.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    if sched.get("channels_last") and dataset["dims"] == 2:
        method.to(memory_format=torch.channels_last)
    if sched.get("compile"):
        for net in method.models:
            net.compile(backend=sched["compile"] if isinstance(sched["compile"], str) else "inductor")


def train(spec: dict, store_path: Path, split_path: Path, out_dir: Path, **kwargs) -> dict:
    """Train one run; returns a summary dict (also written into ``config.json``).

    SIGTERM at any point (also while the data loads) is answered by writing the resumable state
    at the last completed iteration and exiting with status 143. Keyword arguments:
    ``checkpoint_dir`` (default ``out_dir/checkpoints``), ``code_fingerprint`` (the hash of the
    code the run depends on: a saved state is resumed only for the same spec and code),
    ``progress`` (a progress bar), ``checkpoint_interval`` and ``stop_after`` (end the loop after
    that many iterations *without* writing the final outputs, the resumable state written:
    tests use it to interrupt a run deterministically).
    """
    ckpt_dir = Path(kwargs.get("checkpoint_dir") or Path(out_dir) / "checkpoints")
    with SigtermFlag() as sigterm, run_folder_lock(ckpt_dir):  # one trainer per run folder
        return _Run(spec, store_path, split_path, out_dir, sigterm=sigterm, **kwargs).run()


def build_optimizers(method, sched: dict) -> dict[str, torch.optim.Optimizer]:
    """The main SGD over the method's parameter groups, plus the optimisers it owns; every
    group remembers its ``initial_lr`` (the lr policy scales it, unless the group says
    ``fixed_lr``: SASSNet's discriminator)."""
    groups = []
    for group in method.param_groups():
        group = dict(group)
        group["lr"] = sched["lr"] * float(group.pop("lr_scale", 1.0))
        groups.append(group)
    optimizers = {"main": torch.optim.SGD(groups, lr=sched["lr"], momentum=sched["momentum"],
                                          weight_decay=sched["weight_decay"],
                                          nesterov=bool(sched.get("nesterov", False)))}
    extra = method.extra_optimizers(sched)
    if "main" in extra:
        raise ValueError(f"method {method.algorithm!r}: an extra optimiser may not be called 'main'")
    optimizers.update(extra)
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return optimizers


def run_second_phase(method, optimizers: dict[str, torch.optim.Optimizer], ctx: StepContext) -> None:
    """The method's :meth:`~semiseg.methods.base.Method.second_phase` after the main step: each
    of its losses minimised by the optimiser it names alone (zeroed, back-propagated, stepped,
    zeroed again so the next main step finds no stale gradient)."""
    for name, loss in method.second_phase(ctx).items():
        if name == "main" or name not in optimizers:
            own = ", ".join(sorted(set(optimizers) - {"main"})) or "none"
            raise TrainingError(f"method {method.algorithm!r}: its second phase names optimiser {name!r}, "
                                f"not one of its extra_optimizers() ({own})")
        opt = optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


class _Run:
    """One training run: its paths, data, method, optimisers and progress (see :func:`train`)."""

    def __init__(self, spec: dict, store_path: Path, split_path: Path, out_dir: Path, *, sigterm: SigtermFlag,
                 checkpoint_dir: Path | None = None, code_fingerprint: str = "", progress: bool = True,
                 checkpoint_interval: int | None = None, stop_after: int | None = None):
        self.t_start = time.time()
        self.spec, self.sched, self.dataset = spec, spec["schedule"], spec["dataset"]
        self.store_path, self.split_path = Path(store_path), Path(split_path)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else self.out_dir / "checkpoints"
        self.state_path = self.ckpt_dir / "state.pt"
        self.best_path = self.ckpt_dir / "best.pt"  # the evaluated network: model.pt
        self.best_models_path = self.ckpt_dir / "best_models.pt"  # every trained network: models.pt
        self.log_path = self.ckpt_dir / "train.csv.partial"
        self.fingerprint = spec_hash({"spec": spec, "code": code_fingerprint})
        self.sigterm, self.show_progress, self.stop_after = sigterm, progress, stop_after
        # how often the resumable state is written: the job's setting, not the spec's (it does
        # not change the result; see semiseg.config.EXECUTION_FIELDS)
        self.every = int(checkpoint_interval or self.sched.get("checkpoint_interval") or DEFAULT_CHECKPOINT_INTERVAL)
        self.total = int(self.sched["iterations"])
        self.rows: list[dict] = []

    # ---- set-up

    def _build(self) -> None:
        self.device = select_device(self.spec["device"])
        self.seed = int(self.spec["seed"])
        seed_everything(self.seed)
        if self.device.type == "cpu":
            deterministic_algorithms()
        with open(self.split_path) as fh:
            self.split = json.load(fh)
        self.method = build_method(self.spec, lambda: network_for(self.spec)).to(self.device)
        _speed_switches(self.method, self.sched, self.dataset)
        self.optimizers = build_optimizers(self.method, self.sched)
        self.stages = sorted(self.method.stages(self.total), key=lambda s: s[1])

    def _load_data(self, store: Store) -> None:
        split, dataset, sched = self.split["cases"], self.dataset, self.sched
        if store.channels != dataset.get("channels", 1):
            raise TrainingError(f"{store.path}: the store holds {store.channels} channel(s) but the networks of "
                                f"dataset {dataset['name']!r} take {dataset.get('channels', 1)} (its entry's "
                                "source params.channel); rebuild the store (delete it, and the workflow "
                                "preprocesses again)")
        if self.method.uses_unlabeled and not split["unlabeled"]:
            raise TrainingError(f"{self.split_path}: method {self.spec['method']['name']!r} needs unlabeled data "
                                "but the split has none (a 100 % ratio); use a supervised method there")
        with explain_out_of_memory(self.device, "while loading the training set onto it",
                                   f"the whole training set is kept on the training device at patch_size "
                                   f"{dataset['patch_size']}; lower patch_size in config/datasets/", TrainingError):
            self.labeled = load_resident(store, split["labeled"], dataset["dims"], dataset["patch_size"],
                                         self.device, with_label=True)
            self.unlabeled = (load_resident(store, split["unlabeled"], dataset["dims"], dataset["patch_size"],
                                            self.device, with_label=False) if self.method.uses_unlabeled else None)
        self.val_cases = split["val"][: sched.get("max_val_cases") or None]
        self.lab_sampler = StreamSampler(len(self.labeled), sched["labeled_batch_size"], self.seed, stream=0)
        self.unl_sampler = (StreamSampler(len(self.unlabeled), sched["unlabeled_batch_size"], self.seed, stream=1)
                            if self.unlabeled is not None and sched["unlabeled_batch_size"] > 0 else None)

    def _resume(self) -> None:
        self.progress = load_state(self.state_path, self.fingerprint, self.method, self.optimizers, self.device)
        start = self.progress_start = self.progress.iteration
        if start and self.log_path.exists():
            with open(self.log_path) as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) < start]

    def _save_state(self, iteration: int) -> None:
        self.progress.iteration = iteration
        save_state(self.state_path, self.fingerprint, self.progress, self.method, self.optimizers, self.device)
        write_rows_csv(self.rows, self.log_path)

    # ---- the loop

    def run(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        with Store(self.store_path) as store:
            self._load_data(store)
            self._resume()
            self.method.train()
            start = self.progress.iteration
            bar = Progress(self.total, name=self.spec["method"]["name"], csv_path=self.out_dir / "train.csv",
                           bar=None if self.show_progress else False)
            bar.start(start, self.rows)
            finished = False
            try:
                # SIGTERM is checked once before the first iteration and after every one
                if self.sigterm.raised:
                    self._save_state(start)
                    self._preempted(start)
                for it in range(start, self.total):
                    row = self._iteration(it, store)
                    self.rows.append(row)
                    bar.update(row)
                    if "val_dice" in row:
                        bar.validation(row, self.progress.best, self.progress.best_iteration, self.rows)
                    done = it + 1
                    if done % self.every == 0 or self.sigterm.raised or done == self.stop_after:
                        self._save_state(done)
                    if self.sigterm.raised:
                        self._preempted(done)
                    if done == self.stop_after:
                        return {"stopped_at": done}
                finished = True
            finally:
                bar.close(finished=finished)
        return self._finish()

    @staticmethod
    def _preempted(done: int) -> None:
        log.warning("SIGTERM: checkpoint written at iteration %d; exiting to be resumed", done)
        raise Preempted()

    def _stage_start(self, it: int) -> int:
        """The first iteration of the stage ``it`` is in; runs the stage hook at a hand-off."""
        start = max((s for _, s in self.stages if s <= it), default=0)
        for name, first in self.stages:
            if first == it and it > 0:
                ctx = StageContext(best_models=self._best_models)
                self.method.on_stage_start(name, Step(it, self.total), ctx)
                if ctx.reset_optimizer:
                    for opt in self.optimizers.values():
                        opt.state.clear()
                if ctx.reset_best:
                    self.progress.best, self.progress.best_iteration = -1.0, -1
        return start

    def _best_models(self) -> dict | None:
        if not self.best_models_path.exists():
            return None
        return torch.load(self.best_models_path, map_location=self.device, weights_only=True)

    def _iteration(self, it: int, store: Store) -> dict:
        spec, device = self.spec, self.device
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + it)
        xl, yl = self.labeled.batch(self.lab_sampler.indices(it), g, with_label=True)
        batch = {"labeled_image": xl, "labeled_label": yl}
        if self.unl_sampler is not None:
            batch["unlabeled_image"], _ = self.unlabeled.batch(self.unl_sampler.indices(it), g, with_label=False)
        ctx = StepContext(Step(iteration=it, total=self.total), self.method.make_views(batch, g), g)
        factor = lr_factor(self.sched, it, self.total, self._stage_start(it))
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * (1.0 if group.get("fixed_lr") else factor)
        amp = bool(self.sched.get("amp"))
        with explain_out_of_memory(device, f"at iteration {it}", _memory_advice(spec), TrainingError):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                losses = self.method.training_step(ctx)
            # the statistics channel: what the step returned, then the rest of the context's
            losses.stats.update({k: v for k, v in ctx.stats.items() if k not in losses.stats})
            values = _loss_values(losses, it, spec["method"]["name"])
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            losses.total.backward()
            for opt in self.optimizers.values():
                opt.step()
            run_second_phase(self.method, self.optimizers, ctx)
        self.method.after_optimizer_step(ctx)

        row = {"iteration": it, "lr": self.sched["lr"] * factor, **values}
        row.update({k: float(v) for k, v in losses.stats.items()})
        done = it + 1
        if self.val_cases and (done % self.sched["val_interval"] == 0 or done == self.total):
            row["val_dice"] = self._validate(done, store)
        return row

    def _validate(self, done: int, store: Store) -> float:
        dataset = self.dataset
        with explain_out_of_memory(self.device, f"validating at iteration {done}",
                                   f"validation predicts each val volume in slices or windows of "
                                   f"patch_size {dataset['patch_size']}; lower patch_size in "
                                   "config/datasets/", TrainingError):
            score = validate(self.method.eval_network(), store, self.val_cases, dataset, self.device)
        if score > self.progress.best:
            self.progress.best, self.progress.best_iteration = score, done
            self._keep_current()
        return score

    def _keep_current(self) -> None:
        atomic_write(self.best_path, self.method.eval_network().state_dict())
        atomic_write(self.best_models_path, self.method.models.state_dict())

    # ---- the outputs

    def _cost_summary(self) -> dict:
        """What the summary says of this job's training: where it resumed, its wall time, device
        and cost figures (:func:`semiseg.engine.cost.training_cost`), and the spec hash it trained."""
        wall = time.time() - self.t_start
        return {"resumed_from": self.progress_start or None, "wall_seconds": round(wall, 2),
                "device": str(self.device),
                **training_cost(self.device, wall_seconds=wall, iterations=self.total - self.progress_start),
                "spec_hash": self.fingerprint}

    def _finish(self) -> dict:
        if not self.val_cases:  # no val split: the last weights are the result
            self._keep_current()
            self.progress.best_iteration = self.total
        best = self.progress.best
        summary = {"iterations": self.total, "best_val_dice": best if best >= 0 else None,
                   "best_iteration": self.progress.best_iteration, **self._cost_summary()}
        out = self.out_dir
        write_rows_csv(self.rows, out / "train.csv")
        atomic_write(out / "config.json", json.dumps({"spec": self.spec, "summary": summary}, indent=2))
        # copies, model.pt last (its presence means the run is complete): resumable if interrupted
        publish(self.ckpt_dir, out, [(self.best_models_path.name, "models.pt"), (self.best_path.name, "model.pt")])
        return summary


def _loss_values(losses, iteration: int, method: str) -> dict[str, float]:
    """The total and every named term as floats, read from the device in one transfer (one sync
    per iteration); stops on a NaN or infinite loss, naming every non-finite term (the total is
    only named when no term is: a bad term makes the total bad too, and the term is what one
    needs to know). Statistics given as tensors are read in the same transfer and replaced in
    ``losses.stats`` by their floats."""
    tensors = [losses.total, *losses.terms.values()]
    lazy = [k for k, v in losses.stats.items() if isinstance(v, torch.Tensor)]
    read = torch.stack([v.detach().float().reshape(()).to(losses.total.device)
                        for v in [*tensors, *(losses.stats[k] for k in lazy)]]).tolist()
    values = dict(zip(["total", *losses.terms], read))
    losses.stats.update(zip(lazy, read[len(tensors):]))
    if all(math.isfinite(v) for v in values.values()):
        return values
    bad = {name: v for name, v in values.items() if name != "total" and not math.isfinite(v)}
    bad = bad or {"total": values["total"]}
    named = ", ".join(f"{name!r} is {value}" for name, value in bad.items())
    raise TrainingError(f"iteration {iteration}: loss term {named} (method {method}); stopping. "
                        "Lower the lr or check the data.")


def _memory_advice(spec: dict) -> str:
    sched, dataset = spec["schedule"], spec["dataset"]
    return (f"labeled/unlabeled batch {sched['labeled_batch_size']}/{sched['unlabeled_batch_size']} of "
            f"patch_size {dataset['patch_size']}; lower labeled_batch_size/unlabeled_batch_size in the schedule "
            "(config/schedules.yaml or the method's `schedule:` overrides), lower patch_size in "
            "config/datasets/, or turn on `amp` (bf16 on a GPU)")
