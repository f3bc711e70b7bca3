"""Record short training trajectories with the official code of a method (parity records).

    python benchmarks/parity_record.py [--ssl4mis PATH] [--alhvr PATH] [--bcp PATH] [--unimatch PATH]
                                       [--ss-net PATH] [--mcnet PATH] [--mcf PATH] [--sgrs PATH]
                                       [--dtc PATH] [--sassnet PATH] [--caml PATH]
                                       [--methods NAME ...] [--out DIR]

Each ``PATH`` is a checkout of a reference repository: https://github.com/HiLab-git/SSL4MIS
(Mean Teacher, CPS, UA-MT, URPC: ``code/train_*_2D.py``), https://github.com/ziziyao/ALHVR
(``train_ALHVR/code/train_ALHVR_acdc.py``), https://github.com/DeepMed-Lab-ECNU/BCP
(``code/ACDC_BCP_train.py``, and ``code/LA_BCP_train.py`` in 3D: :func:`record_bcp_la`; both
import scikit-image), https://github.com/LiheYoung/UniMatch
(``more-scenarios/medical/unimatch.py``, run by a runner of its own: see ``record_unimatch``) and
https://github.com/ycwu1997/SS-Net (``code/train_ss_2d.py``; its memory's two bugs mended in the
modules it imports, :data:`SS_NET_MENDS`) and https://github.com/ycwu1997/MC-Net
(``code/train_mcnet_2d.py``, MC-Net and MC-Net+) and https://github.com/WYC-321/MCF
(``code/train_MCF.py``, 3D: :func:`record_mcf`) and https://github.com/ortonwang/SGRS-Net
(``code/train.py``, 3D, the ``sgrs_code`` entry: :func:`record_sgrs`; it imports scikit-image),
https://github.com/HiLab-git/DTC (``code/train_la_dtc.py``) and https://github.com/kleinzcy/SASSnet
(``code/train_gan_sdfloss.py``; both 3D, both import scikit-image: :func:`run_sdf_script`) and
https://github.com/Herschel555/CAML (``code/train_caml.py``, 3D: :func:`record_caml`).
Its scripts' folder is put on ``sys.path`` at run time and the training script is executed from
the checkout: its own ``train()`` (BCP: ``pre_train``, its checkpoint, ``self_train``) with its
network, losses, ramp, EMA and lr policy, on CPU in float64, with what needs a GPU, a dataset or
a logger replaced by stand-ins:

- ``.cuda()`` is the identity; the data loader yields the fixed batches of
  ``tests/parity/inputs.py`` (2 + 2 synthetic 32 × 32 slices per iteration, no augmentation;
  at 16 × 16 batch norm normalises two values at the 1 × 1 bottleneck, where rounding errors
  grow ×30 per step and no two implementations stay within 1e-6);
- every network the script builds gets the seeded initial weights of
  :func:`~parity.inputs.seeded_init`; ``torch.randn_like`` (the teacher's input noise) is the
  seeded :class:`~parity.inputs.NoiseStream`, ALHVR's and URPC's feature-perturbation draws and BCP's
  paste-block corners a :class:`~parity.inputs.PerturbStream`; the global generator (dropout)
  is seeded before every iteration;
- the loss modules, the SGD optimisers and the TensorBoard writer record what they see: each
  loss call's value, the lr of each step and the training loop's scalars at that step, the
  logged scalars;
- the run is shortened by source edits named in the record (``setup.edits``): the ramp's
  150-iteration "epoch" becomes 2 iterations, Mean Teacher's consistency delay 1000
  iterations 6; BCP runs 8 pre-training and 16 self-training iterations.

It writes ``<out>/<method>.json`` (default ``tests/parity/records``): the reference repository
and commit, the setup, per iteration the lr, the total loss, each loss term and the
consistency weight, and statistics of the final weights (:func:`~parity.inputs.weight_stats`).
``tests/test_parity_trajectories.py`` replays each record with the project's method;
``docs/fidelity.md`` says what they prove.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from parity.inputs import (NoiseStream, PerturbStream, batch_at, box_stand_in, seed_iteration,  # noqa: E402
                           seeded_init, shapes_digest, slices, stream_dropout, strong_stand_in,
                           volumes, weight_stats)

#: The fixed input every SSL4MIS record trains on.
SETUP = {"size": 32, "n_labeled": 4, "n_unlabeled": 4, "labeled_bs": 2, "unlabeled_bs": 2, "iterations": 24,
         "data_seed": 31, "init_seed": 7, "rng_seed": 11, "noise_seed": 13, "num_classes": 4}
#: Parameters (by declaration order) whose final values a record checks one by one: the first
#: convolution, the bottleneck block's last convolution and the output convolution.
NAMED = [0, 36, -2]


def git_commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"{path}: not a git checkout (the record names the commit it came from)") from None


class Recorder:
    """What one run saw, per iteration: loss calls, the lr of each optimiser step, logged scalars."""

    def __init__(self):
        self.iterations: list[dict] = []
        self.nets: list[torch.nn.Module] = []  # every network the script built, in order

    def start(self, t: int) -> None:
        self.iterations.append({"iteration": t, "calls": [], "lrs": [], "scalars": {}, "locals": {}})

    @property
    def now(self) -> dict:
        return self.iterations[-1]


def recording_forward(cls, rec: Recorder, kind: str):
    """``cls.forward`` that also records each call's value (patched onto the class, so that the
    script's own ``super(DiceLoss, self)`` calls still resolve)."""
    forward = cls.forward

    def recorded(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if out.numel() == 1:  # a loss (not a per-pixel map)
            rec.now["calls"].append((kind, float(out.detach())))
        return out

    return recorded


def recording_sgd(rec: Recorder, optimizers: list):
    class RecordingSGD(torch.optim.SGD):
        def __init__(self, params, *args, **kwargs):
            params = list(params)
            super().__init__(params, *args, **kwargs)
            optimizers.append(self)

        def step(self, closure=None):
            rec.now["lrs"].append(self.param_groups[0]["lr"])
            if not rec.now["locals"]:  # the training loop's scalars (loss terms), as it holds them
                frame = sys._getframe(1)
                while frame is not None and "iter_num" not in frame.f_locals:
                    frame = frame.f_back
                rec.now["locals"] = {k: float(v) for k, v in frame.f_locals.items()
                                     if isinstance(v, float) or (isinstance(v, torch.Tensor) and v.dim() == 0)}
            return super().step(closure)

    return RecordingSGD


class FixedLoader:
    """The training loader: iteration ``t``'s fixed batch, labeled first; seeds dropout per iteration."""

    def __init__(self, rec: Recorder, setup: dict):
        self.rec, self.setup = rec, setup
        n = setup["n_labeled"] + setup["n_unlabeled"]
        self.images, self.labels = slices(n, setup["size"], setup["data_seed"])

    def __len__(self):
        return self.setup["iterations"]

    def __iter__(self):
        s = self.setup
        for t in range(len(self.rec.iterations), s["iterations"]):  # a second stage goes on from the first
            xl, yl, xu = batch_at(t, self.images, self.labels, s["n_labeled"], s["labeled_bs"], s["unlabeled_bs"])
            self.rec.start(t)
            seed_iteration(s["rng_seed"], t)
            # the unlabeled slices' labels are loaded by the script but never read
            yield {"image": torch.cat([xl, xu]), "label": torch.cat([yl, torch.zeros_like(yl[: len(xu)])])}


class Writer:
    def __init__(self, rec: Recorder):
        self.rec = rec

    def add_scalar(self, tag, value, step):
        self.rec.now["scalars"][tag] = float(value)

    def __getattr__(self, name):  # add_image, close
        return lambda *a, **k: None


#: The 2D networks of the scripts' ``net_factory``, by ``net_type``: their class in ``networks/unet.py``.
NETWORKS = {"unet": "UNet", "unet_fea_aux": "UNet_fea_aux", "unet_2d": "UNet_2d"}


def stub_modules(rec: Recorder, setup: dict, init_seeds: list[int], code: Path) -> dict[str, types.ModuleType]:
    """Stand-ins for the modules that need a dataset, a GPU or a logger; the network is the real one."""
    sys.path.insert(0, str(code))
    from networks import unet  # the official networks

    seeds = iter(init_seeds)

    def net_factory(net_type="unet", in_chns=1, class_num=3, **kwargs):
        if net_type not in NETWORKS:
            raise SystemExit(f"parity records know the networks {sorted(NETWORKS)}; the script asked for {net_type!r}")
        rec.nets.append(seeded_init(getattr(unet, NETWORKS[net_type])(in_chns=in_chns, class_num=class_num),
                                    next(seeds)))
        return rec.nets[-1]

    def bcp_net(in_chns=1, class_num=2, ema=False):
        net = net_factory("unet_2d", in_chns, class_num)
        for p in net.parameters() if ema else []:
            p.detach_()
        return net

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    class Dataset:
        def __init__(self, *a, split="train", **k):
            self.n = 2000 if split == "train" else 0

        def __len__(self):
            return self.n

    def loader(dataset, *a, batch_sampler=None, **k):
        return FixedLoader(rec, setup) if batch_sampler is not None else []

    return {
        "tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
        "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x),
                              utils=module("utils", make_grid=lambda *a, **k: None)),
        "torchvision.utils": module("torchvision.utils", make_grid=lambda *a, **k: None),
        "dataloaders": module("dataloaders", utils=module("dataloaders.utils")),
        "dataloaders.dataset": module("dataloaders.dataset", BaseDataSets=Dataset,
                                      RandomGenerator=lambda *a, **k: None,
                                      TwoStreamBatchSampler=lambda *a, **k: "fixed",
                                      ThreeStreamBatchSampler=lambda *a, **k: "fixed"),
        "networks.net_factory": module("networks.net_factory", net_factory=net_factory, BCP_net=bcp_net),
        # imported by BCP's script, unused by the functions it runs here
        "cv2": module("cv2"), "imageio": module("imageio"),
        "_loader": module("_loader", DataLoader=loader),
    }


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def patched_item(mapping: dict, key, value):
    old = mapping[key]
    mapping[key] = value
    try:
        yield
    finally:
        mapping[key] = old


def run_script(code: Path, script: str, argv: list[str], edits: list[tuple[str, str]], init_seeds: list[int],
               setup: dict, patches=None, entry=None, on_recorder=None) -> tuple[Recorder, list]:
    """Run ``code/script``'s ``train()`` (or ``entry(namespace, optimisers)``) with the stand-ins;
    return what it recorded and its optimisers. ``patches(stack, setup, namespace)`` adds a
    method's own stand-ins."""
    source = (code / script).read_text()
    for old, new in edits:
        if source.count(old) != 1:
            raise SystemExit(f"{code / script}: expected {old!r} once, found it {source.count(old)} times "
                             "(another version of the script?)")
        source = source.replace(old, new)
    rec, optimizers = Recorder(), []
    if on_recorder is not None:
        on_recorder(rec)
    stubs = stub_modules(rec, setup, init_seeds, code)
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    torch.set_default_dtype(torch.float64)
    try:
        from utils import losses
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(sys, "argv", [script, *argv]))
            ns = {"__name__": "parity_" + Path(script).stem, "__file__": str(code / script)}
            exec(compile(source, str(code / script), "exec"), ns)
            ns["DataLoader"] = stubs["_loader"].DataLoader
            for cls, kind in ((ns["CrossEntropyLoss"], "ce"), (losses.DiceLoss, "dice")):
                stack.enter_context(patched(cls, "forward", recording_forward(cls, rec, kind)))
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, optimizers)))
            stack.enter_context(patched(torch, "randn_like", NoiseStream(setup["noise_seed"])))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            if patches is not None:
                patches(stack, setup, ns)
            if entry is None:
                ns["train"](ns["args"], "/nonexistent-parity-run")
            else:
                entry(ns, optimizers)
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "val_2D", "dataloaders")]:
            del sys.modules[k]
    return rec, optimizers


def ssl4mis_argv(setup: dict, labeled_num: str = "labeled_num", **extra) -> list[str]:
    """The scripts' arguments for the setup (``labeled_num``: the option's name, ALHVR's is ``labelnum``;
    7 patients, a key of their slice table whatever the stand-in data)."""
    argv = ["--max_iterations", str(setup["iterations"]), "--batch_size",
            str(setup["labeled_bs"] + setup["unlabeled_bs"]), "--labeled_bs", str(setup["labeled_bs"]),
            "--num_classes", str(setup["num_classes"]), f"--{labeled_num}", "7"]
    for k, v in extra.items():
        argv += [f"--{k}", str(v)]
    return argv


#: The ramp's "epoch" of 150 iterations shortened to 2, over 10 such epochs (20 of 24 iterations).
RAMP_EDIT = [("iter_num//150", "iter_num//2")]
RAMP = {"consistency_rampup": 10, "rampup_block": 2}


def teacher_rows(rec: Recorder) -> list[dict]:
    """Mean Teacher / UA-MT: the logged scalars, CE and Dice from the loss calls."""
    rows = []
    for it in rec.iterations:
        calls, sc = it["calls"], it["scalars"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": sc["info/total_loss"],
                     "ce": calls[0][1], "dice": calls[1][1], "consistency": sc["info/consistency_loss"],
                     "consistency_weight": sc["info/consistency_weight"]})
    return rows


def _teacher_record(code: Path, method: str, script: str, edits: list, **extra_setup) -> dict:
    """The record of an SSL4MIS teacher-student script (Mean Teacher, UA-MT): student and teacher
    start from the same seeded weights; the student's final weights are recorded."""
    setup = dict(SETUP)
    rec, _ = run_script(code, script, ssl4mis_argv(setup, consistency_rampup=10), edits,
                        [setup["init_seed"]] * 2, setup)
    return {"method": method, "script": f"code/{script}",
            "setup": {**setup, **RAMP, **extra_setup, "edits": edits,
                      "init": "student and teacher: seeded_init(init_seed)",
                      "shapes": shapes_digest(rec.nets[0])},
            "iterations": teacher_rows(rec),
            "final": {"student": weight_stats(list(rec.nets[0].named_parameters()), NAMED)}}


def record_mean_teacher(code: Path) -> dict:
    return _teacher_record(code, "mean_teacher", "train_mean_teacher_2D.py",
                           RAMP_EDIT + [("if iter_num < 1000:", "if iter_num < 6:")], consistency_start_iterations=6)


def record_ua_mt(code: Path) -> dict:
    return _teacher_record(code, "ua_mt", "train_uncertainty_aware_mean_teacher_2D.py",
                           [("get_current_consistency_weight(iter_num//150)", "get_current_consistency_weight(iter_num//2)")])


def record_cps(code: Path) -> dict:
    setup = dict(SETUP)
    edits = [("get_current_consistency_weight(iter_num // 150)", "get_current_consistency_weight(iter_num // 2)")]
    rec, _ = run_script(code, "train_cross_pseudo_supervision_2D.py", ssl4mis_argv(setup, consistency_rampup=10),
                        edits, [setup["init_seed"], setup["init_seed"] + 1], setup)
    rows = []
    for it in rec.iterations:
        (_, ce1), (_, dice1), (_, ce2), (_, dice2), (_, cps1), (_, cps2) = it["calls"]
        sc = it["scalars"]
        if it["lrs"][0] != it["lrs"][1]:
            raise SystemExit("CPS: the two optimisers stepped with different lrs")
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0],
                     "total": sc["loss/model1_loss"] + sc["loss/model2_loss"], "ce1": ce1, "dice1": dice1,
                     "ce2": ce2, "dice2": dice2, "cps1": cps1, "cps2": cps2,
                     "consistency_weight": sc["consistency_weight/consistency_weight"]})
    return {"method": "cps", "script": "code/train_cross_pseudo_supervision_2D.py",
            "setup": {**setup, **RAMP, "edits": edits,
                      "init": "model1: seeded_init(init_seed), model2: seeded_init(init_seed + 1)",
                      "shapes": shapes_digest(rec.nets[0])},
            "iterations": rows,
            "final": {f"model{k + 1}": weight_stats(list(net.named_parameters()), NAMED)
                      for k, net in enumerate(rec.nets)}}


def alhvr_perturbations(stack: contextlib.ExitStack, setup: dict, ns: dict) -> None:
    """ALHVR's ``UNet_fea_aux`` draws its coin with ``random.random()``, feature dropout's γ with
    ``np.random.uniform`` and feature noise with ``Uniform.sample``: all three from one
    :class:`~parity.inputs.PerturbStream`."""
    from networks import unet

    stream = PerturbStream(setup["perturb_seed"])

    class Uniform:
        def __init__(self, low, high):
            self.low, self.high = low, high

        def sample(self, shape):
            return self.low + (self.high - self.low) * stream.tensor(shape)

    numpy = types.SimpleNamespace(random=types.SimpleNamespace(uniform=stream.scalar))
    stack.enter_context(patched(unet, "random", types.SimpleNamespace(random=lambda: stream.scalar(0.0, 1.0))))
    stack.enter_context(patched(unet, "np", numpy))
    stack.enter_context(patched(unet, "Uniform", Uniform))


def record_alhvr(code: Path) -> dict:
    setup = {**SETUP, "perturb_seed": 17}
    edits = [("get_current_consistency_weight(iter_num // 150)", "get_current_consistency_weight(iter_num // 2)")]
    rec, _ = run_script(code, "train_ALHVR_acdc.py", ssl4mis_argv(setup, "labelnum", consistency_rampup=10), edits,
                        [setup["init_seed"], setup["init_seed"] + 1], setup, patches=alhvr_perturbations)
    rows = []
    for it in rec.iterations:
        v = it["locals"]
        row = {"iteration": it["iteration"], "lr": it["lrs"][0], "total": v["loss"],
               "consistency_weight": v["consistency_weight"]}
        for k, net in (("1", "a"), ("2", "b")):
            row.update({f"ce_{net}": v[f"loss_ce{k}"], f"dice_{net}": v[f"loss_dice{k}"],
                        f"pc_ce_{net}": v[f"loss_pro_ce{k}"], f"pc_cos_{net}": v[f"loss_pro_cos{k}"],
                        f"mh_mse_{net}": v[f"mse{k}"], f"mh_ent_{net}": v[f"loss_focus{k}"] - v[f"mse{k}"]})
        rows.append(row)
    return {"method": "alhvr_code", "script": "train_ALHVR/code/train_ALHVR_acdc.py",
            "setup": {**setup, **RAMP, "edits": edits,
                      "init": "model1: seeded_init(init_seed), model2: seeded_init(init_seed + 1)",
                      "shapes": shapes_digest(rec.nets[0])},
            "iterations": rows,
            "final": {f"model{k + 1}": weight_stats(list(net.named_parameters()), NAMED)
                      for k, net in enumerate(rec.nets)}}


#: Where each repository keeps the training scripts.
CODE = {"ssl4mis": "code", "alhvr": "train_ALHVR/code", "bcp": "code", "unimatch": "more-scenarios/medical",
        "ss_net": "code",
        "mcf": "code", "sgrs": "code", "dtc": "code", "sassnet": "code"}

class _NumpyWithStream:
    """``numpy`` whose ``random.randint`` is a :class:`~parity.inputs.PerturbStream`'s."""

    def __init__(self, stream: PerturbStream):
        import numpy
        self._numpy = numpy
        self.random = types.SimpleNamespace(randint=stream.integer)

    def __getattr__(self, name):
        return getattr(self._numpy, name)


def record_bcp_acdc(code: Path) -> dict:
    """BCP's ACDC script: ``pre_train`` (8 iterations), its checkpoint written by the script's own
    ``save_net_opt`` at the end (no validation here: the last state is the "best"), then
    ``self_train`` (16 iterations) from it, as its ``__main__`` runs them."""
    import tempfile

    pre, self_train = 8, 16
    setup = {**SETUP, "iterations": pre + self_train, "pretrain_iterations": pre, "mask_seed": 19}
    argv = ssl4mis_argv(setup, "labelnum") + ["--pre_iterations", str(pre)]
    argv[argv.index("--max_iterations") + 1] = str(self_train)

    def patches(stack, setup, ns):
        stack.enter_context(patched_item(ns, "np", _NumpyWithStream(PerturbStream(setup["mask_seed"]))))

    def entry(ns, optimizers):
        args = ns["args"]
        with tempfile.TemporaryDirectory() as tmp:
            ns["pre_snapshot_path"] = tmp
            ns["pre_train"](args, tmp)
            ns["save_net_opt"](rec_box[0].nets[0], optimizers[0], Path(tmp) / f"{args.model}_best_model.pth")
            ns["self_train"](args, tmp, tmp)

    rec_box = []
    rec, _ = run_script(code, "ACDC_BCP_train.py", argv, [], [setup["init_seed"]] * 3, setup, patches=patches,
                        entry=entry, on_recorder=rec_box.append)
    rows = []
    for it in rec.iterations:
        sc = it["scalars"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": sc["info/total_loss"],
                     "ce": sc["info/mix_ce"], "dice": sc["info/mix_dice"], "stage": int(it["iteration"] >= pre)})

    def unet(net):  # the U-Net's own parameters (UNet_2d also holds heads this script never uses)
        return [(n, p) for n, p in net.named_parameters() if n.startswith(("encoder.", "decoder."))]

    student, teacher = rec.nets[1], rec.nets[2]  # self_train's model and ema_model
    return {"method": "bcp", "script": "code/ACDC_BCP_train.py",
            "setup": {**setup, "edits": [], "init": "student: seeded_init(init_seed) (the teacher is the "
                                                   "pre-trained student at the hand-off)",
                      "shapes": shapes_digest(torch.nn.ModuleList([student.encoder, student.decoder]))},
            "iterations": rows,
            "final": {"student": weight_stats(unet(student), NAMED), "teacher": weight_stats(unet(teacher), NAMED)}}

# ---- SS-Net (ycwu1997/SS-Net code/train_ss_2d.py)
#: The two lines of SS-Net's memory code that the project does not reproduce (bugs, listed in
#: src/semiseg/methods/ss_net.py), mended in the modules the script imports: the memory keeps
#: the features its selector scores highest, the memory-side weights are rescaled over the
#: memory's entries. And its Dice losses' ``target.float()``, a no-op in float32 training, is
#: left out so that the float64 run stays float64.
SS_NET_MENDS = {
    "feature_memory": ("utils/feature_memory.py",
                       [("_, indices = torch.sort(rank[:, 0], dim=0)",
                         "_, indices = torch.sort(rank[:, 0], dim=0, descending=True)")]),
    "contrastive_losses": ("utils/contrastive_losses.py",
                           [("(learned_weights_features_memory.shape[0] / learned_weights_features_memory.sum(dim=0))",
                             "(learned_weights_features_memory.shape[1] / "
                             "learned_weights_features_memory.sum(dim=1, keepdim=True))")]),
    "losses": ("utils/losses.py", [("        target = target.float()\n", "")] * 2),
}


def _mended(code: Path, name: str) -> types.ModuleType:
    """A fresh module of ``code/<path>`` with :data:`SS_NET_MENDS`' edits (each expected as written)."""
    path, edits = SS_NET_MENDS[name]
    source = (code / path).read_text()
    for old, new in edits:
        if old not in source:
            raise SystemExit(f"{code / path}: expected {old!r} (another version of the code?)")
        source = source.replace(old, new, 1)
    module = types.ModuleType(f"utils.{name}")
    exec(compile(source, str(code / path), "exec"), module.__dict__)
    return module


def ss_net_patches(stack: contextlib.ExitStack, setup: dict, ns: dict) -> None:
    """The mended modules in the script's namespace; VAT's initial ``torch.rand(x.shape)`` from a
    :class:`~parity.inputs.PerturbStream` (the replay substitutes the method's draw with the same)."""
    code = Path(ns["__file__"]).parent
    for name in SS_NET_MENDS:
        stack.enter_context(patched_item(ns, name, _mended(code, name)))
    stream, rand = PerturbStream(setup["direction_seed"]), torch.rand

    def direction(*size, **kwargs):
        if len(size) == 1 and isinstance(size[0], torch.Size) and not kwargs:
            return stream.tensor(size[0])
        return rand(*size, **kwargs)

    stack.enter_context(patched(torch, "rand", direction))


def record_ss_net(code: Path) -> dict:
    setup = {**SETUP, "direction_seed": 23}
    edits = [("get_current_consistency_weight(iter_num//150)", "get_current_consistency_weight(iter_num//2)")]
    rec, _ = run_script(code, "train_ss_2d.py", ssl4mis_argv(setup, "labelnum", consistency_rampup=10), edits,
                        [setup["init_seed"]], setup, patches=ss_net_patches)
    rows = []
    for it in rec.iterations:
        v = it["locals"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": v["loss"],
                     "dice": v["loss_seg_dice"], "lds": v["loss_lds"], "sep_l": v["loss_contr_labeled"],
                     "sep_u": v["loss_contr_unlabeled"], "consistency_weight": v["consistency_weight"]})
    net = rec.nets[0]
    return {"method": "ss_net", "script": "code/train_ss_2d.py",
            "setup": {**setup, **RAMP, "edits": edits, "mends": {k: v[1] for k, v in SS_NET_MENDS.items()},
                      "init": "the network with its heads: seeded_init(init_seed)", "shapes": shapes_digest(net)},
            "iterations": rows,
            "final": {"model": weight_stats(list(net.named_parameters()), NAMED)}}


# ---- UniMatch (LiheYoung/UniMatch more-scenarios/medical/unimatch.py): a runner of its own. The
# script is not SSL4MIS-shaped: a main() over three loaders (labeled, unlabeled, CutMix partners)
# whose dataset makes the strong views with PIL, DistributedDataParallel, a val-and-test loop.

#: 2 labeled slices and 2 + 2 unlabeled (images and partners) per iteration; τ lowered from 0.95 so
#: that the seeded network's pseudo labels count from the first steps.
UNIMATCH_SETUP = {**SETUP, "unlabeled_bs": 4, "conf_thresh": 0.6, "fp_seed": 29, "view_seed": 23}


class _UniMatchDone(Exception):
    """Raised by the validation loader: the training loop has run every iteration."""


def unimatch_loaders(rec: Recorder, setup: dict):
    """The script's dataset and ``DataLoader``: iteration ``t``'s labeled batch, its unlabeled
    images with their stand-in strong views and boxes (:func:`~parity.inputs.strong_stand_in`,
    :func:`~parity.inputs.box_stand_in`, calls ``2t`` and ``2t + 1``) and the partners'; the
    validation loader ends the run."""
    images, labels = slices(setup["n_labeled"] + setup["n_unlabeled"], setup["size"], setup["data_seed"])
    half, made = setup["unlabeled_bs"] // 2, []

    class Dataset:
        def __init__(self, name, root, mode, size=None, id_path=None, nsample=None):
            self.mode, self.ids = mode, ["slice"] * setup["iterations"]

    class Loader:
        def __init__(self, dataset, *a, sampler=None, **k):
            made.append(dataset.mode)
            self.sampler = sampler
            self.part = "mix" if made.count("train_u") == 2 and dataset.mode == "train_u" else dataset.mode

        def __len__(self):
            return setup["iterations"]

        def __iter__(self):
            s = setup
            if self.part == "val":
                raise _UniMatchDone()
            for t in range(s["iterations"]):
                xl, yl, xu = batch_at(t, images, labels, s["n_labeled"], s["labeled_bs"], s["unlabeled_bs"])
                if self.part == "train_l":
                    rec.start(t)
                    seed_iteration(s["rng_seed"], t)
                    yield xl, yl
                    continue
                part = slice(0, half) if self.part == "train_u" else slice(half, None)
                views = [strong_stand_in(xu, s["view_seed"], 2 * t + k)[part] for k in (0, 1)]
                boxes = [box_stand_in(half, s["size"], s["size"], s["view_seed"], 2 * t + k).double() for k in (0, 1)]
                yield xu[part], *views, *boxes

    class Sampler:
        def __init__(self, *a, **k):
            pass

        def set_epoch(self, epoch):
            pass

    return Dataset, Loader, Sampler


def unimatch_fp_dropout(stream: PerturbStream):
    """``nn.Dropout2d`` whose channel masks come from ``stream`` (``u ≥ p`` kept, ``×1/(1 − p)``),
    so that the global generator's dropout draws line up with the project's."""
    class FixedDropout2d(torch.nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            keep = (stream.tensor(x.shape[:2]) >= self.p).to(x.dtype)
            return x * (keep / (1 - self.p)).view(*x.shape[:2], *([1] * (x.dim() - 2)))

    return FixedDropout2d


def _unimatch_run(code: Path, setup: dict, rec: Recorder, tmp: str) -> None:
    import os
    import yaml

    sys.path.insert(0, str(code))
    from model import unet
    from util import utils

    cfg = Path(tmp) / "acdc.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "acdc", "nclass": setup["num_classes"], "crop_size": setup["size"],
                                   "data_root": tmp, "epochs": 1, "batch_size": setup["labeled_bs"], "lr": 0.01,
                                   "conf_thresh": setup["conf_thresh"]}))
    Dataset, Loader, Sampler = unimatch_loaders(rec, setup)
    stubs = {"dataset": types.ModuleType("dataset"), "dataset.acdc": types.ModuleType("dataset.acdc"),
             "util.dist_helper": types.ModuleType("util.dist_helper"),
             "torch.utils.tensorboard": types.ModuleType("torch.utils.tensorboard")}
    stubs["dataset.acdc"].ACDCDataset = Dataset
    stubs["util.dist_helper"].setup_distributed = lambda **k: (0, 1)
    stubs["torch.utils.tensorboard"].SummaryWriter = lambda *a, **k: Writer(rec)

    class LrSGD(torch.optim.SGD):
        def step(self, closure=None):
            rec.now["lrs"].append(self.param_groups[0]["lr"])
            return super().step(closure)

    def network(**kwargs):
        rec.nets.append(seeded_init(unet.UNet(**kwargs), setup["init_seed"]))
        return rec.nets[-1]

    source = (code / "unimatch.py").read_text()
    with contextlib.ExitStack() as stack:
        for name, module in stubs.items():
            stack.enter_context(patched_item(sys.modules, name, module) if name in sys.modules
                                else _added_module(name, module))
        stack.enter_context(patched(sys, "argv", ["unimatch.py", "--config", str(cfg), "--labeled-id-path", "l",
                                                  "--unlabeled-id-path", "u", "--save-path", tmp]))
        stack.enter_context(patched_item(os.environ, "LOCAL_RANK", "0") if "LOCAL_RANK" in os.environ
                            else _added_item(os.environ, "LOCAL_RANK", "0"))
        stack.enter_context(patched(torch.nn.SyncBatchNorm, "convert_sync_batchnorm", staticmethod(lambda m: m)))
        stack.enter_context(patched(torch.nn.parallel, "DistributedDataParallel", lambda m, **k: m))
        stack.enter_context(patched(torch.distributed, "barrier", lambda *a, **k: None))
        stack.enter_context(patched(torch.utils.data.distributed, "DistributedSampler", Sampler))
        stack.enter_context(patched(torch.nn, "Dropout2d", unimatch_fp_dropout(PerturbStream(setup["fp_seed"]))))
        stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
        stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
        for cls, kind in ((torch.nn.CrossEntropyLoss, "ce"), (utils.DiceLoss, "dice")):
            stack.enter_context(patched(cls, "forward", recording_forward(cls, rec, kind)))
        ns = {"__name__": "parity_unimatch", "__file__": str(code / "unimatch.py")}
        exec(compile(source, str(code / "unimatch.py"), "exec"), ns)
        ns.update(DataLoader=Loader, SGD=LrSGD, UNet=network)
        try:
            ns["main"]()
        except _UniMatchDone:
            pass


@contextlib.contextmanager
def _added_module(name, module):
    sys.modules[name] = module
    try:
        yield
    finally:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def _added_item(mapping, key, value):
    mapping[key] = value
    try:
        yield
    finally:
        mapping.pop(key, None)


def record_unimatch(code: Path) -> dict:
    """UniMatch's medical script, 24 iterations of 2 + 2 + 2 slices in one epoch, on CPU in float64."""
    import tempfile

    setup, rec = dict(UNIMATCH_SETUP), Recorder()
    torch.set_default_dtype(torch.float64)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _unimatch_run(code, setup, rec, tmp)
    finally:
        torch.set_default_dtype(torch.float32)
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("model", "util", "dataset")]:
            del sys.modules[k]
    rows = []
    for it in rec.iterations:
        (_, ce), (_, dice), (_, s1), (_, s2), (_, fp) = it["calls"]
        sc = it["scalars"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": sc["train/loss_all"], "ce": ce,
                     "dice": dice, "strong1": s1, "strong2": s2, "fp": fp, "mask_ratio": sc["train/mask_ratio"]})
    return {"method": "unimatch", "script": "more-scenarios/medical/unimatch.py",
            "setup": {**setup, "edits": [], "init": "seeded_init(init_seed)", "shapes": shapes_digest(rec.nets[0]),
                      "views": "strong_stand_in / box_stand_in(view_seed, 2t + k) for the two strong views of "
                               "iteration t; nn.Dropout2d's channel masks from PerturbStream(fp_seed)"},
            "iterations": rows,
            "final": {"model": weight_stats(list(rec.nets[0].named_parameters()), NAMED)}}


# ---- URPC (SSL4MIS train_uncertainty_rectified_pyramid_consistency_2D.py): the `urpc_code` entry

def urpc_parts(net: torch.nn.Module) -> torch.nn.ModuleList:
    """``UNet_URPC``'s parameters that its forward reads, in declaration order: all but
    ``out_conv_dp4``, which ``Decoder_URPC`` declares and never uses (the project has no such head)."""
    d = net.decoder
    return torch.nn.ModuleList([net.encoder, d.up1, d.up2, d.up3, d.up4, d.out_conv, d.out_conv_dp3,
                                d.out_conv_dp2, d.out_conv_dp1])


def record_urpc(code: Path) -> dict:
    """Its network ``UNet_URPC`` seeded through :func:`urpc_parts`; the 1/4 head's feature-dropout
    γ (``np.random.uniform``) and the 1/2 head's feature noise (``Uniform.sample``) from one
    :class:`~parity.inputs.PerturbStream` (as ALHVR's), the 1/8 head's dropout from the global
    generator. CE and Dice are the means of its four heads' calls."""
    setup = {**SETUP, "perturb_seed": 17}
    edits = [("get_current_consistency_weight(iter_num//150)", "get_current_consistency_weight(iter_num//2)")]
    box = []

    def patches(stack, setup, ns):
        from networks import unet

        stream = PerturbStream(setup["perturb_seed"])
        stack.enter_context(patched(unet, "np", types.SimpleNamespace(random=types.SimpleNamespace(
            uniform=stream.scalar))))
        stack.enter_context(patched(unet, "Uniform", lambda low, high: types.SimpleNamespace(
            sample=lambda shape: low + (high - low) * stream.tensor(shape))))

        def net_factory(net_type="unet_urpc", in_chns=1, class_num=4):
            net = unet.UNet_URPC(in_chns=in_chns, class_num=class_num)
            seeded_init(urpc_parts(net), setup["init_seed"])
            box[0].nets.append(net)
            return net
        stack.enter_context(patched_item(ns, "net_factory", net_factory))

    rec, _ = run_script(code, "train_uncertainty_rectified_pyramid_consistency_2D.py",
                        ssl4mis_argv(setup, consistency_rampup=10), edits, [], setup, patches=patches,
                        on_recorder=box.append)
    rows = []
    for it in rec.iterations:
        calls, sc = it["calls"], it["scalars"]
        ce, dice = [v for k, v in calls if k == "ce"], [v for k, v in calls if k == "dice"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": sc["info/total_loss"],
                     "ce": sum(ce) / len(ce), "dice": sum(dice) / len(dice), "ce_heads": ce, "dice_heads": dice,
                     "consistency": sc["info/consistency_loss"], "consistency_weight": sc["info/consistency_weight"]})
    parts = urpc_parts(rec.nets[0])
    return {"method": "urpc_code", "script": "code/train_uncertainty_rectified_pyramid_consistency_2D.py",
            "setup": {**setup, **RAMP, "edits": edits,
                      "init": "seeded_init(init_seed) of every parameter but out_conv_dp4 (urpc_parts)",
                      "shapes": shapes_digest(parts)},
            "iterations": rows,
            "final": {"model": weight_stats(list(parts.named_parameters()), NAMED)}}


# ---- MC-Net / MC-Net+ (ycwu1997/MC-Net code/train_mcnet_2d.py)

NETWORKS.update({"mcnet2d_v1": "MCNet2d_v1", "mcnet2d_v2": "MCNet2d_v2"})
CODE["mcnet"] = "code"


def record_mc_net_2d(code: Path, method: str, model: str) -> dict:
    """MC-Net's 2D script (``--model mcnet2d_v1``: two decoders; ``mcnet2d_v2``: three): the
    loss terms as the training loop holds them when it steps (``loss_seg_dice``, the summed
    Dice of the decoders; ``loss_consist``; the weight, read after its counter is incremented).
    Its cross-entropy is computed and logged but not in the loss; it is recorded too."""
    setup = dict(SETUP)
    edits = [("get_current_consistency_weight(iter_num//150)", "get_current_consistency_weight(iter_num//2)")]
    argv = ssl4mis_argv(setup, "labelnum", consistency_rampup=10, model=model)
    rec, _ = run_script(code, "train_mcnet_2d.py", argv, edits, [setup["init_seed"]], setup)
    rows = [{"iteration": it["iteration"], "lr": it["lrs"][0], "total": it["locals"]["loss"],
             "dice": it["locals"]["loss_seg_dice"], "consistency": it["locals"]["loss_consist"],
             "ce": it["locals"]["loss_seg"], "consistency_weight": it["locals"]["consistency_weight"]}
            for it in rec.iterations]
    return {"method": method, "script": f"code/train_mcnet_2d.py --model {model}",
            "setup": {**setup, **RAMP, "edits": edits, "init": "the network: seeded_init(init_seed)",
                      "shapes": shapes_digest(rec.nets[0])},
            "iterations": rows,
            "final": {"model": weight_stats(list(rec.nets[0].named_parameters()), NAMED)}}


RECORDERS_MC_NET = {
    "mc_net_code": ("mcnet", "ycwu1997/MC-Net", lambda code: record_mc_net_2d(code, "mc_net_code", "mcnet2d_v1")),
    "mc_net_plus_code": ("mcnet", "ycwu1997/MC-Net",
                         lambda code: record_mc_net_2d(code, "mc_net_plus_code", "mcnet2d_v2")),
}


# ---- MCF (WYC-321/MCF code/train_MCF.py): 3D, two networks, run from its `__main__` block

#: MCF's fixed input: 2 + 2 volumes of 16³ per iteration (each 16 of the synthetic slices stacked,
#: their label binarised: foreground = any class), 8 iterations, no lr drop (the script's first
#: is after 2,500), the ramp's 150-iteration block shortened to 2, over 3 blocks. 16³, not the
#: 2D records' 32², because a float64 step of the two 3D networks on a CPU takes seconds.
MCF_SETUP = {"size": 16, "depth": 16, "n_labeled": 4, "n_unlabeled": 4, "labeled_bs": 2, "unlabeled_bs": 2,
             "iterations": 8, "data_seed": 31, "init_seed": 7, "rng_seed": 11, "rampup_block": 2,
             "consistency_rampup": 3}
#: Its main block becomes ``train()``; each network it builds gets the seeded weights.
MCF_EDITS = [('if __name__ == "__main__":', "def train():"), ("iter_num//150", "iter_num//2"),
             ("        return model\n", "        return _parity_init(model)\n")]
#: The parameters whose final values MCF's record names, in the official declaration order: the
#: first convolution, a batch norm of the decoder (``block_seven``) and the output convolution.
MCF_NAMED = [0, -24, -2]


class _MCFLoader:
    """The script's loader: the fixed volumes as its two "views" of a batch (one crop, two
    ``ToTensor`` copies); seeds dropout per iteration."""

    def __init__(self, rec: Recorder, setup: dict):
        self.rec, self.setup = rec, setup
        self.images, self.labels = volumes(setup["n_labeled"] + setup["n_unlabeled"], setup["depth"], setup["size"],
                                           setup["data_seed"])

    def __len__(self):
        return self.setup["iterations"]

    def __iter__(self):
        s = self.setup
        for t in range(len(self.rec.iterations), s["iterations"]):
            xl, yl, xu = batch_at(t, self.images, self.labels, s["n_labeled"], s["labeled_bs"], s["unlabeled_bs"])
            self.rec.start(t)
            seed_iteration(s["rng_seed"], t)
            sample = {"image": torch.cat([xl, xu]), "label": torch.cat([yl, torch.zeros_like(yl[: len(xu)])])}
            yield [sample, sample]


def run_mcf_script(code: Path, setup: dict) -> Recorder:
    """``code/train_MCF.py`` with :data:`MCF_EDITS`, on CPU in float64; nothing written."""
    import logging
    import os
    import shutil
    import types

    source = (code / "train_MCF.py").read_text()
    for old, new in MCF_EDITS:
        if source.count(old) != 1:
            raise SystemExit(f"{code}/train_MCF.py: expected {old!r} once (another version of the script?)")
        source = source.replace(old, new)
    rec, seeds = Recorder(), iter([setup["init_seed"], setup["init_seed"] + 1])

    def init(net):
        rec.nets.append(seeded_init(net, next(seeds)))
        return net

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    stubs = {"tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
             "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x)),
             "dataloaders": module("dataloaders"),
             "dataloaders.la_heart": module("dataloaders.la_heart", LAHeart=lambda *a, **k: None,
                                            RandomCrop=lambda *a: None, ToTensor=lambda *a: None,
                                            TwoStreamBatchSampler=lambda *a: "fixed")}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, str(code))
    torch.set_default_dtype(torch.float64)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(sys, "argv", ["train_MCF.py", "--max_iterations", str(setup["iterations"]),
                                                      "--consistency_rampup", str(setup["consistency_rampup"])]))
            ns = {"__name__": "parity_train_MCF", "__file__": str(code / "train_MCF.py"), "_parity_init": init}
            exec(compile(source, str(code / "train_MCF.py"), "exec"), ns)
            ns["DataLoader"] = lambda *a, **k: _MCFLoader(rec, setup)
            for obj, name in ((os, "makedirs"), (shutil, "copytree"), (logging, "basicConfig"), (torch, "save")):
                stack.enter_context(patched(obj, name, lambda *a, **k: None))
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, [])))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            ns["train"]()
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "dataloaders")]:
            del sys.modules[k]
    return rec


def record_mcf(code: Path) -> dict:
    setup = dict(MCF_SETUP)
    rec = run_mcf_script(code, setup)
    rows = []
    for it in rec.iterations:
        lc, sc = it["locals"], it["scalars"]
        if it["lrs"][0] != it["lrs"][1]:
            raise SystemExit("MCF: the two optimisers stepped with different lrs")
        teacher = int(sc["train/Good_student"])
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": lc["v_loss"] + lc["r_loss"],
                     "ce_a": lc["v_loss_seg"], "dice_a": lc["v_loss_seg_dice"], "cdr_a": lc["v_mse"],
                     "ce_b": lc["r_loss_seg"], "dice_b": lc["r_loss_seg_dice"], "cdr_b": lc["r_mse"],
                     "cons": lc["r_consistency_loss" if teacher == 0 else "v_consistency_loss"],
                     "teacher": teacher, "consistency_weight": lc["consistency_weight"]})
    return {"method": "mcf", "script": "code/train_MCF.py",
            "setup": {**setup, "edits": MCF_EDITS,
                      "init": "V-Net: seeded_init(init_seed), ResNet: seeded_init(init_seed + 1), in the official "
                              "declaration order", "shapes": [shapes_digest(net) for net in rec.nets]},
            "iterations": rows,
            "final": {name: weight_stats(list(net.named_parameters()), MCF_NAMED)
                      for name, net in zip(("vnet", "resnet"), rec.nets)}}


# ---- BCP on Left Atrium (DeepMed-Lab-ECNU/BCP code/LA_BCP_train.py): 3D, pre-training, the
# hand-off, self-training, run from its own functions as record_bcp_acdc runs the ACDC script

#: 1 + 1 labeled and 1 + 1 unlabeled volumes of 16 x 32 x 32 per iteration (the script's halves:
#: one volume each, so each forward sees one volume and its bottleneck 2 x 2 x 1 voxels; 32³
#: would take four times longer), 6 iterations of pre-training then 14 of self-training, the lr
#: drop every 2,500 self-training iterations shortened to every 10.
BCP_LA_SETUP = {"size": 32, "depth": 16, "n_labeled": 4, "n_unlabeled": 4, "labeled_bs": 2, "unlabeled_bs": 2,
                "iterations": 20, "pretrain_iterations": 6, "lr_step_every": 10, "data_seed": 31, "init_seed": 7,
                "rng_seed": 11, "mask_seed": 19, "u_weight": 0.5}
BCP_LA_EDITS = [("if iter_num % 2500 == 0:", "if iter_num % 10 == 0:"),
                ("lr_ = base_lr * 0.1 ** (iter_num // 2500)", "lr_ = base_lr * 0.1 ** (iter_num // 10)")]
#: The paste block's corner in ``utils/BCP_utils.py``'s ``context_mask`` is drawn for the
#: script's 112 x 112 x 80 patches whatever the patch (``np.random.randint(0, 112 - side)``);
#: mended to the patch's own size, which is the same at 112 x 112 x 80.
BCP_LA_MENDS = [("112 - patch_pixel_x", "img_x - patch_pixel_x"), ("112 - patch_pixel_y", "img_y - patch_pixel_y"),
                ("80 - patch_pixel_z", "img_z - patch_pixel_z")]


class _VolumeLoader(FixedLoader):
    """:class:`FixedLoader` over the synthetic volumes of :func:`~parity.inputs.volumes`."""

    def __init__(self, rec: Recorder, setup: dict):
        self.rec, self.setup = rec, setup
        self.images, self.labels = volumes(setup["n_labeled"] + setup["n_unlabeled"], setup["depth"], setup["size"],
                                           setup["data_seed"])


def vnet_parts(net: torch.nn.Module) -> torch.nn.ModuleList:
    """A V-Net's encoder and decoder (BCP's ``VNet`` also declares heads its LA script never uses)."""
    return torch.nn.ModuleList([net.encoder, net.decoder])


def run_bcp_la_script(code: Path, setup: dict) -> Recorder:
    """``code/LA_BCP_train.py`` with :data:`BCP_LA_EDITS` and its ``utils/BCP_utils.py`` with
    :data:`BCP_LA_MENDS`, on CPU in float64: ``pre_train``, its checkpoint written by the
    script's own ``save_net_opt`` at the end (no validation here: the last state is the "best"),
    then ``self_train`` from it, as its ``__main__`` runs them; nothing written outside a
    temporary folder. Every V-Net it builds gets :func:`~parity.inputs.seeded_init` of its
    encoder and decoder; its pooled bottleneck features, which the script discards, are not
    computed (``MaxPool3d(3)`` needs three voxels per axis, the bottleneck here has 2 x 2 x 1)."""
    import logging
    import tempfile

    source = (code / "LA_BCP_train.py").read_text()
    for old, new in BCP_LA_EDITS:
        if source.count(old) != 1:
            raise SystemExit(f"{code}/LA_BCP_train.py: expected {old!r} once (another version of the script?)")
        source = source.replace(old, new)
    rec = Recorder()

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    def net_factory(net_type="VNet", in_chns=1, class_num=2, mode="train", tsne=0):
        from networks.VNet import VNet
        net = VNet(n_channels=in_chns, n_classes=class_num, normalization="batchnorm", has_dropout=mode == "train")
        net.pool = torch.nn.Identity()
        seeded_init(vnet_parts(net), setup["init_seed"])
        rec.nets.append(net)
        return net

    none = lambda *a, **k: None  # noqa: E731
    stubs = {"tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
             "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x)),
             "medpy": module("medpy", metric=None),
             "dataloaders": module("dataloaders"),
             "dataloaders.dataset": module("dataloaders.dataset", LAHeart=none, RandomRotFlip=none, RandomCrop=none,
                                           ToTensor=none, TwoStreamBatchSampler=lambda *a: "fixed"),
             "networks.net_factory": module("networks.net_factory", net_factory=net_factory),
             "utils.test_3d_patch": module("utils.test_3d_patch")}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, str(code))
    torch.set_default_dtype(torch.float64)
    try:
        from utils import losses
        mended = (code / "utils" / "BCP_utils.py").read_text()
        for old, new in BCP_LA_MENDS:
            if mended.count(old) != 1:
                raise SystemExit(f"{code}/utils/BCP_utils.py: expected {old!r} once (another version of the code?)")
            mended = mended.replace(old, new)
        utils = types.ModuleType("utils.BCP_utils")
        exec(compile(mended, str(code / "utils" / "BCP_utils.py"), "exec"), utils.__dict__)
        utils.np = _NumpyWithStream(PerturbStream(setup["mask_seed"]))
        sys.modules["utils.BCP_utils"] = utils
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            stack.enter_context(patched(sys, "argv", [
                "LA_BCP_train.py", "--pre_max_iteration", str(setup["pretrain_iterations"]),
                "--self_max_iteration", str(setup["iterations"] - setup["pretrain_iterations"]),
                "--labeled_bs", str(setup["labeled_bs"]),
                "--batch_size", str(setup["labeled_bs"] + setup["unlabeled_bs"]),
                "--u_weight", str(setup["u_weight"])]))
            ns = {"__name__": "parity_LA_BCP_train", "__file__": str(code / "LA_BCP_train.py")}
            exec(compile(source, str(code / "LA_BCP_train.py"), "exec"), ns)
            ns["DataLoader"] = lambda *a, **k: _VolumeLoader(rec, setup)
            stack.enter_context(patched(logging, "info", lambda *a, **k: None))
            stack.enter_context(patched(losses.mask_DiceLoss, "forward",
                                        recording_forward(losses.mask_DiceLoss, rec, "dice")))
            optimizers = []
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, optimizers)))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            args = ns["args"]
            ns["pre_train"](args, tmp)
            ns["save_net_opt"](rec.nets[0], optimizers[0], Path(tmp) / f"{args.model}_best_model.pth")
            ns["self_train"](args, tmp, tmp)
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "dataloaders")]:
            del sys.modules[k]
    return rec


def record_bcp_la(code: Path) -> dict:
    """Per iteration the lr, the total, CE and Dice (pre-training: the script's ``loss_ce`` and
    ``loss_dice``; self-training: the two mixes' ``mix_loss`` summed, its Dice from the four
    ``mask_DiceLoss`` calls weighted as ``mix_loss`` weighs them, CE the rest of ``2 · loss``),
    the stage; the final student and teacher (parameters: the teacher's batch-norm buffers are
    its own forward passes', which train mode never reads)."""
    setup = dict(BCP_LA_SETUP)
    rec = run_bcp_la_script(code, setup)
    pre, u = setup["pretrain_iterations"], setup["u_weight"]
    rows = []
    for it in rec.iterations:
        lc, dice = it["locals"], [v for _, v in it["calls"]]
        if it["iteration"] < pre:
            ce, dc = lc["loss_ce"], lc["loss_dice"]
        else:  # mix_loss (l): Dice(y_a, M) + u · Dice(p_a, 1 − M); (u): u · Dice(p_b, M) + Dice(y_b, 1 − M)
            dc = dice[0] + u * dice[1] + u * dice[2] + dice[3]
            ce = 2 * (lc["loss_l"] + lc["loss_u"]) - dc
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": lc["loss"], "ce": ce, "dice": dc,
                     "stage": int(it["iteration"] >= pre)})
    student, teacher = rec.nets[1], rec.nets[2]  # self_train's model and ema_model
    return {"method": "bcp_la", "script": "code/LA_BCP_train.py",
            "setup": {**setup, "edits": BCP_LA_EDITS, "mends": {"utils/BCP_utils.py": BCP_LA_MENDS},
                      "init": "student: seeded_init(init_seed) of the V-Net's encoder and decoder (vnet_parts, the "
                              "official declaration order; the teacher is the pre-trained student at the hand-off)",
                      "shapes": shapes_digest(vnet_parts(student))},
            "iterations": rows,
            "final": {"student": weight_stats(list(vnet_parts(student).named_parameters()), MCF_NAMED),
                      "teacher": weight_stats(list(vnet_parts(teacher).named_parameters()), MCF_NAMED)}}


# ---- SGRS-Net (ortonwang/SGRS-Net code/train.py): 3D, the `sgrs_code` entry, run from its
# `__main__` block

#: 2 labeled and 2 unlabeled volumes of 16³ per iteration (the student's forward sees 6, the
#: teacher's 2), 20 iterations, the ramp's 150-iteration block shortened to 2 over 10 blocks.
SGRS_SETUP = {"size": 16, "depth": 16, "n_labeled": 4, "n_unlabeled": 4, "labeled_bs": 2, "unlabeled_bs": 2,
              "iterations": 20, "data_seed": 31, "init_seed": 7, "rng_seed": 11, "noise_seed": 13,
              "beta_seed": 17, "perm_seed": 19, "dropout_seed": 41, "rampup_block": 2, "consistency_rampup": 10}
#: Its main block becomes ``train()`` (the LA settings' 15k iterations left to the option); each
#: network it builds gets the seeded weights and the stand-in dropout.
SGRS_EDITS = [('if __name__ == "__main__":', "def train():"),
              ("    args.max_samples = 80\n    args.max_iteration = 15000\n", "    args.max_samples = 80\n"),
              ("iter_num // 150", "iter_num // 2"),
              ("        model = net.cuda()\n", "        model = _parity_init(net)\n")]
#: MixMatch's ``WeightEMA`` (``utils/util2.py``) updates the tensors of dtype float32, those of a
#: GPU run; in the float64 run, those of float64.
SGRS_MENDS = [("if ema_param.dtype == torch.float32:", "if ema_param.dtype == torch.float64:")]
#: The script's Θ-mask broadcast, a bug that ``sgrs_code`` keeps out (docs/fidelity.md): its
#: ``(B, 1, D, H, W)`` mask times the ``(B, D, H, W)`` cross-entropy is ``(B, B, D, H, W)``, each
#: image's loss masked by every image's region; mended to the image's own region.
SGRS_SCRIPT_MENDS = [("ce_loss_soft2(output_all_u, U_data_pseudo.long()) * diff_pre1)",
                      "ce_loss_soft2(output_all_u, U_data_pseudo.long()) * diff_pre1[:, 0])"),
                     ("ce_loss_soft2(output_all_u_mix, U_data_pseudo.long()) * diff_pre1)",
                      "ce_loss_soft2(output_all_u_mix, U_data_pseudo.long()) * diff_pre1[:, 0])")]


class _SGRSDraws:
    """``torch`` and ``numpy`` of ``utils/mixmatch_util.py`` with its draws from seeded streams:
    the unlabeled images' noise (``randn_like``) of iteration ``t`` is draw ``2t`` of
    :class:`~parity.inputs.NoiseStream`'s seeds, the labeled images' (``randn`` per image) the
    image's part of draw ``2t + 1`` for the labeled batch; each mix's ``np.random.beta`` a
    :class:`~parity.inputs.PerturbStream` scalar, the partners' permutation the argsort of another's."""

    def __init__(self, rec: Recorder, setup: dict):
        import numpy
        self.rec, self.setup, self.seen = rec, setup, {}
        beta, perm = PerturbStream(setup["beta_seed"]), PerturbStream(setup["perm_seed"])
        self.torch = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
        self.torch.randn, self.torch.randn_like = self.randn, self.randn_like
        self.np = types.SimpleNamespace(**{k: getattr(numpy, k) for k in dir(numpy) if not k.startswith("__")})
        self.np.random = types.SimpleNamespace(
            beta=lambda a, b: beta.scalar(0.0, 1.0),
            permutation=lambda r: perm.tensor((len(r),)).argsort().numpy())

    def _draw(self, k: int, shape) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.setup["noise_seed"] * 1000 + k)
        return torch.randn(tuple(shape), generator=g, dtype=torch.float64)

    def randn_like(self, x):
        return self._draw(2 * self.rec.now["iteration"], x.shape)

    def randn(self, *shape):
        t = self.rec.now["iteration"]
        i = self.seen[t] = self.seen.get(t, -1) + 1
        return self._draw(2 * t + 1, (self.setup["labeled_bs"], *shape))[i]


def run_sgrs_script(code: Path, setup: dict) -> Recorder:
    """``code/train.py --dataset_name LA`` with :data:`SGRS_EDITS` and :data:`SGRS_SCRIPT_MENDS`,
    its ``utils/util2.py`` with :data:`SGRS_MENDS`, on CPU in float64; nothing written."""
    import logging
    import os

    source = (code / "train.py").read_text()
    for old, new in SGRS_EDITS + SGRS_SCRIPT_MENDS:
        if source.count(old) != 1:
            raise SystemExit(f"{code}/train.py: expected {old!r} once (another version of the script?)")
        source = source.replace(old, new)
    rec = Recorder()
    seeds = iter([setup["dropout_seed"], setup["dropout_seed"] + 1])

    def init(net):
        seeded_init(torch.nn.ModuleList([net.encoder, net.decoder1]), setup["init_seed"])
        stream_dropout(net, PerturbStream(next(seeds)))
        rec.nets.append(net)
        return net

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    import random

    import numpy
    none = lambda *a, **k: None  # noqa: E731
    stubs = {"tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
             "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x)),
             "dataloaders": module("dataloaders"),
             "dataloaders.dataset": module("dataloaders.dataset", LAHeart_no_read=none, Pancreas_no_read=none,
                                           BraTS2019_no_read=none, RandomRotFlip=none, RandomCrop=none, ToTensor=none,
                                           TwoStreamBatchSampler=lambda *a: "fixed", torch=torch, np=numpy,
                                           random=random),
             "utils.test_patch": module("utils.test_patch")}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, str(code))
    torch.set_default_dtype(torch.float64)
    try:
        mended = (code / "utils" / "util2.py").read_text()
        for old, new in SGRS_MENDS:
            if mended.count(old) != 1:
                raise SystemExit(f"{code}/utils/util2.py: expected {old!r} once (another version of the code?)")
            mended = mended.replace(old, new)
        util2 = types.ModuleType("utils.util2")
        exec(compile(mended, str(code / "utils" / "util2.py"), "exec"), util2.__dict__)
        sys.modules["utils.util2"] = util2
        from utils import mixmatch_util
        draws = _SGRSDraws(rec, setup)
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(mixmatch_util, "torch", draws.torch))
            stack.enter_context(patched(mixmatch_util, "np", draws.np))
            stack.enter_context(patched(sys, "argv", [
                "train.py", "--dataset_name", "LA", "--max_iteration", str(setup["iterations"]),
                "--labeled_bs", str(setup["labeled_bs"]),
                "--batch_size", str(setup["labeled_bs"] + setup["unlabeled_bs"]),
                "--consistency_rampup", str(setup["consistency_rampup"])]))
            ns = {"__name__": "parity_sgrs_train", "__file__": str(code / "train.py"), "_parity_init": init}
            exec(compile(source, str(code / "train.py"), "exec"), ns)
            ns["DataLoader"] = lambda *a, **k: _VolumeLoader(rec, setup)
            for obj, name in ((os, "makedirs"), (logging, "basicConfig"), (torch, "save")):
                stack.enter_context(patched(obj, name, lambda *a, **k: None))
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, [])))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            ns["train"]()
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "dataloaders")]:
            del sys.modules[k]
    return rec


def record_sgrs(code: Path) -> dict:
    """Per iteration the lr, the total, the supervised CE and Dice, the pseudo-label CE and Dice
    as the loss weighs them (``0.5 ×`` the code's ``loss_seg_ce_unlab``, ``loss_seg_dice_unlab``)
    and the ramp's weight; the final student's and teacher's parameters."""
    setup = dict(SGRS_SETUP)
    rec = run_sgrs_script(code, setup)
    rows = [{"iteration": it["iteration"], "lr": it["lrs"][0], "total": it["locals"]["loss"],
             "ce": it["locals"]["loss_seg_ce_lab"], "dice": it["locals"]["loss_seg_dice_lab"],
             "unsup_ce": 0.5 * it["locals"]["loss_seg_ce_unlab"],
             "unsup_dice": 0.5 * it["locals"]["loss_seg_dice_unlab"],
             "consistency_weight": it["locals"]["consistency_weight"]} for it in rec.iterations]
    parts = [torch.nn.ModuleList([net.encoder, net.decoder1]) for net in rec.nets]
    return {"method": "sgrs_code", "script": "code/train.py --dataset_name LA",
            "setup": {**setup, "edits": SGRS_EDITS,
                      "mends": {"code/train.py": SGRS_SCRIPT_MENDS, "utils/util2.py": SGRS_MENDS},
                      "init": "student and teacher: seeded_init(init_seed) of encoder and decoder1 (the official "
                              "declaration order); each network's Dropout3d masks from "
                              "PerturbStream(dropout_seed + k), "
                              "k = 0 the student, 1 the teacher (stream_dropout)",
                      "shapes": shapes_digest(parts[0])},
            "iterations": rows,
            "final": {name: weight_stats(list(p.named_parameters()), MCF_NAMED)
                      for name, p in zip(("student", "teacher"), parts)}}


# ---- DTC (HiLab-git/DTC code/train_la_dtc.py) and SASSNet (kleinzcy/SASSnet code/train_gan_sdfloss.py):
# ---- 3D, one V-Net with a signed-distance head (SASSNet: and its discriminator), run from their `__main__` blocks

#: The two scripts' fixed input: MCF's 2 + 2 volumes of 16³ per iteration, 24 iterations, the
#: ramp's 150-iteration block shortened to 2 over 10 blocks (20 iterations) and the lr's ×0.1
#: every 2,500 iterations shortened to every 16 (one drop, at iteration 16). The V-Net 4 channels
#: wide at its first stage (the scripts' 16) and the discriminator 8 (the script's 64): a float64
#: step of the full widths on a CPU takes seconds, and the replay of 24 of them would too.
SDF_SETUP = {**MCF_SETUP, "iterations": 24, "consistency_rampup": 10, "lr_step_every": 16, "n_filters": 4,
             "discriminator_width": 8}
#: Each script's main block becomes ``train()``; the network (and SASSNet's discriminator) gets the
#: seeded weights; the maps' ``.float()``, a no-op in float32 training, is left out so that the
#: float64 run stays float64.
SDF_EDITS = [('if __name__ == "__main__":', "def train():"), ("iter_num//150", "iter_num//2"),
             ("iter_num % 2500 == 0", "iter_num % 16 == 0"), ("iter_num // 2500", "iter_num // 16"),
             ("torch.from_numpy(gt_dis).float()", "torch.from_numpy(gt_dis)"),
             ("normalization='batchnorm', has_dropout=True)",
              "normalization='batchnorm', has_dropout=True, n_filters=4)"),
             ("        model = net.cuda()\n", "        model = _parity_init(net)\n")]
#: DTC's script run with ``--base_lr 0.001 --consistency 0.01`` (its defaults 0.01 and 1): its
#: consistency term's ``σ(−1500·s)`` at full weight makes the trajectory chaotic: the replay's float64
#: rounding difference, 1e-16 at step 1, grows tens of times a step at the defaults (1e-6 at step 6,
#: 1e-2 at step 9); here it stays ≤ 1.5e-8 over the 24 steps.
DTC_ARGUMENTS = {"base_lr": 0.001, "consistency": 0.01}
SASSNET_EDITS = SDF_EDITS + [("FC3DDiscriminator(num_classes=num_classes - 1)",
                              "FC3DDiscriminator(num_classes=num_classes - 1, ndf=8)"),
                             ("    D = D.cuda()\n", "    D = _parity_init(D)\n")]
#: The discriminator's average pooling is over the 7 × 7 × 5 map its 112 × 112 × 80 patches leave;
#: 16³ patches leave 1³.
SASSNET_MENDS = {"networks/discriminator.py": [("nn.AvgPool3d((7, 7, 5))", "nn.AvgPool3d((1, 1, 1))")]}
#: The network's parameters whose final values the records name, in the official declaration
#: order: the first convolution, a batch norm of the decoder (``block_seven``) and the
#: segmentation head (``out_conv2``); of the discriminator: its first convolution and its classifier.
SDF_NAMED, DISCRIMINATOR_NAMED = [0, -26, -2], [0, -2]


class _SDFLoader(_MCFLoader):
    """MCF's loader, one view per batch."""

    def __iter__(self):
        for sample, _ in super().__iter__():
            yield sample


def run_sdf_script(code: Path, script: str, edits: list, mends: dict, setup: dict) -> Recorder:
    """``code/<script>`` with ``edits`` (and ``mends``, ``{path: edits}`` of the modules it imports),
    on CPU in float64, the scipy / scikit-image signed distance maps of its ``utils/util.py``;
    nothing written."""
    import logging
    import os
    import shutil

    def edited(path: str, changes: list) -> str:
        source = (code / path).read_text()
        for old, new in changes:
            if source.count(old) != 1:
                raise SystemExit(f"{code / path}: expected {old!r} once (another version of the code?)")
            source = source.replace(old, new)
        return source

    source = edited(script, edits)
    rec, seeds = Recorder(), iter([setup["init_seed"], setup["init_seed"] + 1])

    def init(net):
        rec.nets.append(seeded_init(net, next(seeds)))
        return net

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    stubs = {"tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
             "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x)),
             "torchvision.utils": module("torchvision.utils", make_grid=lambda *a, **k: None),
             "dataloaders": module("dataloaders", utils=module("dataloaders.utils")),
             "dataloaders.la_heart": module("dataloaders.la_heart", LAHeart=lambda *a, **k: None,
                                            RandomCrop=lambda *a: None, CenterCrop=lambda *a: None,
                                            RandomRotFlip=lambda *a: None, ToTensor=lambda *a: None,
                                            TwoStreamBatchSampler=lambda *a: "fixed")}
    for path, changes in mends.items():
        name = path.removesuffix(".py").replace("/", ".")
        stubs[name] = module(name)
        exec(compile(edited(path, changes), str(code / path), "exec"), stubs[name].__dict__)
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, str(code))
    torch.set_default_dtype(torch.float64)
    try:
        with contextlib.ExitStack() as stack:
            argv = {"max_iterations": setup["iterations"], "consistency_rampup": setup["consistency_rampup"],
                    **setup.get("arguments", {})}
            argv = [script, *(str(a) for k, v in argv.items() for a in (f"--{k}", v))]
            stack.enter_context(patched(sys, "argv", argv))
            ns = {"__name__": "parity_" + Path(script).stem, "__file__": str(code / script), "_parity_init": init}
            exec(compile(source, str(code / script), "exec"), ns)
            ns["DataLoader"] = lambda *a, **k: _SDFLoader(rec, setup)
            for obj, name in ((os, "makedirs"), (shutil, "copytree"), (logging, "basicConfig"), (torch, "save")):
                stack.enter_context(patched(obj, name, lambda *a, **k: None))
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, [])))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            ns["train"]()
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "dataloaders")]:
            del sys.modules[k]
    return rec


def _sdf_record(code: Path, method: str, script: str, edits: list, mends: dict, terms: dict[str, str],
                **setup_extra) -> dict:
    """The record of a signed-distance script: per iteration its lr and the logged scalars named by
    ``terms`` (record figure: tag); the network's final weights (and the discriminator's)."""
    setup = {**SDF_SETUP, **setup_extra}
    rec = run_sdf_script(code, script, edits, mends, setup)
    rows = [{"iteration": it["iteration"], "lr": it["lrs"][0], **{k: it["scalars"][tag] for k, tag in terms.items()}}
            for it in rec.iterations]
    final = {"network": weight_stats(list(rec.nets[0].named_parameters()), SDF_NAMED)}
    if len(rec.nets) > 1:
        final["discriminator"] = weight_stats(list(rec.nets[1].named_parameters()), DISCRIMINATOR_NAMED)
    return {"method": method, "script": f"code/{script}",
            "setup": {**setup, "edits": edits, **({"mends": mends} if mends else {}),
                      "init": "network: seeded_init(init_seed) in the official declaration order"
                              + (", discriminator: seeded_init(init_seed + 1)" if len(rec.nets) > 1 else ""),
                      "shapes": [shapes_digest(net) for net in rec.nets]},
            "iterations": rows, "final": final}


def record_dtc(code: Path) -> dict:
    return _sdf_record(code, "dtc", "train_la_dtc.py", SDF_EDITS, {},
                       {"total": "loss/loss", "dice": "loss/loss_dice", "sdf": "loss/loss_hausdorff",
                        "consistency": "loss/consistency_loss", "consistency_weight": "loss/consistency_weight"},
                       arguments=DTC_ARGUMENTS)


def record_sassnet(code: Path) -> dict:
    return _sdf_record(code, "sassnet", "train_gan_sdfloss.py", SASSNET_EDITS, SASSNET_MENDS,
                       {"total": "loss/loss", "dice": "loss/loss_dice", "sdf": "loss/loss_hausdorff",
                        "adversarial": "GAN/loss_adv", "consistency_weight": "train/consistency_weight",
                        "discriminator_loss": "GAN/D_loss"})


RECORDERS = {"mean_teacher": ("ssl4mis", "HiLab-git/SSL4MIS", record_mean_teacher),
             "cps": ("ssl4mis", "HiLab-git/SSL4MIS", record_cps),
             "ua_mt": ("ssl4mis", "HiLab-git/SSL4MIS", record_ua_mt),
             "alhvr_code": ("alhvr", "ziziyao/ALHVR", record_alhvr),
             "bcp": ("bcp", "DeepMed-Lab-ECNU/BCP", record_bcp_acdc),
             "unimatch": ("unimatch", "LiheYoung/UniMatch", record_unimatch),
             "ss_net": ("ss_net", "ycwu1997/SS-Net", record_ss_net),
             "urpc_code": ("ssl4mis", "HiLab-git/SSL4MIS", record_urpc),
             **RECORDERS_MC_NET,
             "mcf": ("mcf", "WYC-321/MCF", record_mcf),
             "bcp_la": ("bcp", "DeepMed-Lab-ECNU/BCP", record_bcp_la),
             "sgrs_code": ("sgrs", "ortonwang/SGRS-Net", record_sgrs),
             "dtc": ("dtc", "HiLab-git/DTC", record_dtc),
             "sassnet": ("sassnet", "kleinzcy/SASSnet", record_sassnet)}


# ---- CAML (Herschel555/CAML code/train_caml.py): 3D, one model of two V-Nets, run from its `__main__` block

#: CAML's fixed input: MCF's 16³ volumes, 2 + 2 per iteration (dataset indices 0-3 labeled), 18
#: iterations: a ramp of 8 blocks of 2, then 2 at full weight; the script's 12,800
#: top-confidence voxels per class cut to 64 and its 256 memory features per class to 16 (a class
#: with fewer stored features gives no columns, as in the script). V-Nets of 8 filters (the
#: script's 16: a float64 step of the two 16-filter networks and their attention takes seconds on
#: a CPU), heads of 8 features (the network's 32) and lr 0.001 (the script's 0.01): the OCC term
#: (a temperature-0.1 softmax against ``log(p + 1e-8)``) and the top-k and agreement masks make
#: rounding differences between two float64 implementations grow about tenfold per iteration at
#: the script's lr and head width, past 1e-6 after 11 iterations; at these settings they stay
#: below 1e-7 for 18.
CAML_SETUP = {"size": 16, "depth": 16, "n_labeled": 4, "n_unlabeled": 4, "labeled_bs": 2, "unlabeled_bs": 2,
              "iterations": 18, "data_seed": 31, "init_seed": 7, "rng_seed": 11, "rampup_block": 2,
              "consistency_rampup": 8, "n_filters": 8, "feat_dim": 8, "num_filtered": 64, "memory_num": 16,
              "lr": 0.001}
#: Its main block becomes ``train()``; the ramp's 150-iteration block becomes 2 and counts from
#: iteration 0 (the script increments ``iter_num`` first: its blocks start one iteration later,
#: a known difference, docs/fidelity.md); its bug mended: the auxiliary network's labeled
#: embedding is moved channels-last before it is viewed as rows of channels for the projection.
CAML_EDITS = [('if __name__ == "__main__":', "def train():"),
              ("get_lambda_c(iter_num // 150)", "get_lambda_c((iter_num - 1) // 2)"),
              ("get_lambda_o(iter_num // 150)", "get_lambda_o((iter_num - 1) // 2)"),
              ("model.projection_head2(labeled_features_a.view(-1, labeled_features_dim))",
               "model.projection_head2(labeled_features_a.permute(0, 2, 3, 4, 1).contiguous()"
               ".view(-1, labeled_features_dim))")]
#: The parameters whose final values CAML's record names, in the official declaration order: the
#: vanilla encoder's first convolution, the auxiliary's inter-sample attention's first linear
#: layer and the second prediction head's last linear layer.
CAML_NAMED = [0, 144, -2]


def _dropout_off(net: torch.nn.Module) -> torch.nn.Module:
    """Every dropout of ``net`` (its Dropout3d, the attention layers' dropouts) set to 0."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0  # a float, not a module
    return net


def _whole_memory(self, num_sampled_per_cls):
    """The stand-in for ``MemoryBank.sample_labeled_features``: every stored feature of a class
    (None where fewer than asked), not a random draw of them."""
    import numpy as np

    feats = np.concatenate([f for f in self.memory_feature if f is not None])
    labels = np.concatenate([l for l in self.memory_label if l is not None])
    return [feats[labels == c] if int((labels == c).sum()) >= num_sampled_per_cls else None
            for c in range(self.num_cls)]


class _CAMLLoader(_MCFLoader):
    """The script's loader: the fixed volumes with their dataset indices; seeds each iteration."""

    def __iter__(self):
        s = self.setup
        for t in range(len(self.rec.iterations), s["iterations"]):
            xl, yl, xu = batch_at(t, self.images, self.labels, s["n_labeled"], s["labeled_bs"], s["unlabeled_bs"])
            idx = [(t * s["labeled_bs"] + k) % s["n_labeled"] for k in range(s["labeled_bs"])]
            idx += [s["n_labeled"] + (t * s["unlabeled_bs"] + k) % s["n_unlabeled"] for k in range(s["unlabeled_bs"])]
            self.rec.start(t)
            seed_iteration(s["rng_seed"], t)
            yield {"image": torch.cat([xl, xu]), "label": torch.cat([yl, torch.zeros_like(yl[: len(xu)])]),
                   "idx": torch.tensor(idx)}


def run_caml_script(code: Path, setup: dict) -> Recorder:
    """``code/train_caml.py`` with :data:`CAML_EDITS`, on CPU in float64; nothing written."""
    import importlib.machinery
    import logging
    import os
    import random
    import shutil

    import numpy as np

    source = (code / "train_caml.py").read_text()
    for old, new in CAML_EDITS:
        if source.count(old) != 1:
            raise SystemExit(f"{code}/train_caml.py: expected {old!r} once (another version of the script?)")
        source = source.replace(old, new)
    rec = Recorder()

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch's compiler looks modules up
        return m

    def net_factory(net_type="caml3d_v1", in_chns=1, class_num=2, mode="train", **kwargs):
        from networks.VNet import CAML3d_v1
        if (net_type, mode) != ("caml3d_v1", "train"):
            raise SystemExit(f"CAML's record knows caml3d_v1 in training mode; the script asked for {net_type!r}")
        net = CAML3d_v1(n_channels=in_chns, n_classes=class_num, n_filters=setup["n_filters"],
                        normalization="batchnorm", has_dropout=True, feat_dim=setup["feat_dim"])
        rec.nets.append(seeded_init(_dropout_off(net), setup["init_seed"]))
        return net

    class Bar(list):
        def close(self):
            pass

    dataset = module("dataloaders.dataset", LAHeart=lambda *a, **k: None, RandomRotFlip=lambda *a: None,
                     RandomCrop=lambda *a: None, ToTensor=lambda *a: None, TwoStreamBatchSampler=lambda *a: "fixed",
                     torch=torch, np=np, random=random)
    dataset.__all__ = list(vars(dataset))
    stubs = {"tensorboardX": module("tensorboardX", SummaryWriter=lambda *a, **k: Writer(rec)),
             "torchvision": module("torchvision", transforms=module("transforms", Compose=lambda x: x)),
             "tqdm": module("tqdm", tqdm=lambda it, **k: Bar(it)),
             "dataloaders": module("dataloaders"), "dataloaders.dataset": dataset,
             "utils.test_patch": module("utils.test_patch"),  # validation only (from iteration 800)
             "networks.net_factory": module("networks.net_factory", net_factory=net_factory)}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, str(code))
    torch.set_default_dtype(torch.float64)
    try:
        from utils import feature_memory
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(sys, "argv", [
                "train_caml.py", "--max_iteration", str(setup["iterations"]), "--labeled_bs", str(setup["labeled_bs"]),
                "--batch_size", str(setup["labeled_bs"] + setup["unlabeled_bs"]),
                "--labelnum", str(setup["n_labeled"]), "--consistency_rampup", str(setup["consistency_rampup"]),
                "--memory_num", str(setup["memory_num"]), "--num_filtered", str(setup["num_filtered"]),
                "--base_lr", str(setup["lr"])]))
            ns = {"__name__": "parity_train_caml", "__file__": str(code / "train_caml.py")}
            exec(compile(source, str(code / "train_caml.py"), "exec"), ns)
            ns["DataLoader"] = lambda *a, **k: _CAMLLoader(rec, setup)
            for obj, name in ((os, "makedirs"), (shutil, "rmtree"), (logging, "basicConfig"), (torch, "save")):
                stack.enter_context(patched(obj, name, lambda *a, **k: None))
            stack.enter_context(patched(feature_memory.MemoryBank, "sample_labeled_features", _whole_memory))
            dice = ns["losses"].Binary_dice_loss  # each network's supervised Dice, as the loop calls it

            def recorded_dice(*args, **kwargs):
                out = dice(*args, **kwargs)
                rec.now["calls"].append(("dice", float(out.detach())))
                return out

            stack.enter_context(patched(ns["losses"], "Binary_dice_loss", recorded_dice))
            stack.enter_context(patched(torch.optim, "SGD", recording_sgd(rec, [])))
            stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
            stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            ns["train"]()
    finally:
        torch.set_default_dtype(torch.float32)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in ("utils", "networks", "dataloaders")]:
            del sys.modules[k]
    return rec


def record_caml(code: Path) -> dict:
    setup = dict(CAML_SETUP)
    rec = run_caml_script(code, setup)
    rows = []
    for it in rec.iterations:
        lc = it["locals"]
        (_, dice_v), (_, dice_a) = it["calls"]
        rows.append({"iteration": it["iteration"], "lr": it["lrs"][0], "total": lc["loss"], "dice_v": dice_v,
                     "dice_a": dice_a, "dice": lc["loss_s"],
                     "consistency": lc["loss_c"], "occ": lc.get("loss_o", 0.0),  # the int 0 where no class gave a row
                     "consistency_weight": lc["lambda_c"], "occ_weight": lc["lambda_o"]})
    return {"method": "caml", "script": "code/train_caml.py",
            "setup": {**setup, "edits": CAML_EDITS,
                      "init": "CAML3d_v1: seeded_init(init_seed) in the official declaration order",
                      "arguments": "--base_lr 0.001 (the script's 0.01), n_filters 8 and feat_dim 8 (16 and 32): "
                                   "at the script's values rounding differences between two float64 implementations "
                                   "pass 1e-6 after 11 iterations (the OCC's temperature-0.1 softmax against "
                                   "log(p + 1e-8), the top-k and agreement masks)",
                      "dropout": "off on both sides (every Dropout3d and attention dropout p = 0): the two cannot "
                                 "share draws (the script runs both encoders, then both decoders, ours one "
                                 "network after the other; its attention layers draw (N, B, C) masks, ours (B, N, C))",
                      "memory": "MemoryBank.sample_labeled_features replaced by the whole memory of each class "
                                "(None under memory_num), on both sides: the two memories store a class's rows in "
                                "different orders, so a seeded draw of positions would pick different features; "
                                "the loss does not depend on the columns' order",
                      "shapes": shapes_digest(rec.nets[0])},
            "iterations": rows,
            "final": {"model": weight_stats(list(rec.nets[0].named_parameters()), CAML_NAMED)}}


CODE["caml"] = "code"
RECORDERS["caml"] = ("caml", "Herschel555/CAML", record_caml)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ssl4mis", type=Path, help="a checkout of HiLab-git/SSL4MIS")
    ap.add_argument("--alhvr", type=Path, help="a checkout of ziziyao/ALHVR")
    ap.add_argument("--bcp", type=Path, help="a checkout of DeepMed-Lab-ECNU/BCP (its scripts need scikit-image)")
    ap.add_argument("--unimatch", type=Path, help="a checkout of LiheYoung/UniMatch (its medical script needs PyYAML)")
    ap.add_argument("--ss-net", type=Path, help="a checkout of ycwu1997/SS-Net")
    ap.add_argument("--mcnet", type=Path, help="a checkout of ycwu1997/MC-Net")
    ap.add_argument("--mcf", type=Path, help="a checkout of WYC-321/MCF")
    ap.add_argument("--sgrs", type=Path, help="a checkout of ortonwang/SGRS-Net (its script needs scikit-image)")
    ap.add_argument("--dtc", type=Path, help="a checkout of HiLab-git/DTC (its utils need scikit-image)")
    ap.add_argument("--sassnet", type=Path, help="a checkout of kleinzcy/SASSnet (its utils need scikit-image)")
    ap.add_argument("--caml", type=Path, help="a checkout of Herschel555/CAML")
    ap.add_argument("--methods", nargs="+", choices=list(RECORDERS),
                    help="default: every method whose repository's checkout is given")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "parity" / "records")
    args = ap.parse_args(argv)
    methods = args.methods or [name for name, (option, _, _) in RECORDERS.items() if getattr(args, option)]
    if not methods:
        raise SystemExit("pass at least one checkout: --ssl4mis, --alhvr, --bcp, --unimatch, --ss-net, --mcnet, "
                         "--mcf, --sgrs, --dtc, --sassnet or --caml PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in methods:
        option, repository, recorder = RECORDERS[name]
        checkout = getattr(args, option)
        if checkout is None:
            raise SystemExit(f"{name}: pass --{option.replace('_', '-')} PATH (a checkout of {repository})")
        record = {"reference": {"repository": repository, "commit": git_commit(checkout)},
                  **recorder(checkout.resolve() / CODE[option])}
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{path}: {len(record['iterations'])} iterations, final total {record['iterations'][-1]['total']:.6f}")


if __name__ == "__main__":
    main()
