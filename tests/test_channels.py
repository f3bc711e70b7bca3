"""Several image channels as the networks' input: the store's (C, Z, Y, X) images, the nnunet
reader's channel list, augmentations that move channels together (and jitter each on its own),
both predictors, every method's step and a training run through to its predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers import LABELS, run_spec, tiny_step, tiny_store
from nnunet_data import CHANNELS, LABELS as NNUNET_LABELS, case_arrays, write_v1, write_v2
from semiseg.data.store import Case, Store, describe, write_store
from semiseg.errors import DataError
from semiseg.methods.base import METHODS


def _case(case_id: str, channels: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, (4, 6, 5)).astype(np.uint8)
    image = rng.normal(size=(channels, 4, 6, 5) if channels > 1 else (4, 6, 5)).astype(np.float32)
    return Case(case_id, case_id, image, label, spacing=(2.0, 1.0, 1.0))


# -- the store ------------------------------------------------------------------------------------------


def test_a_store_of_two_channels_round_trips(tmp_path):
    cases = [_case("a", 2, 0), _case("b", 2, 1)]
    write_store(tmp_path / "s.h5", name="two", dims=3, labels=LABELS, cases=cases)
    with Store(tmp_path / "s.h5") as store:
        assert store.channels == 2 and store.shape("a") == (4, 6, 5)
        for case in cases:
            image, label = store.read(case.case_id)
            assert image.shape == (2, 4, 6, 5)
            np.testing.assert_array_equal(image, case.image)
            np.testing.assert_array_equal(label, case.label)
            np.testing.assert_array_equal(store.read_image(case.case_id), case.image)
    desc = describe(tmp_path / "s.h5", patients={"train": ["a"], "val": [], "test": ["b"]})
    assert desc["channels"] == 2 and desc["cases"]["a"]["shape"] == [4, 6, 5]


def test_a_one_channel_store_keeps_its_form(tmp_path):
    write_store(tmp_path / "s.h5", name="one", dims=3, labels=LABELS, cases=[_case("a", 1)])
    with Store(tmp_path / "s.h5") as store:
        assert store.channels == 1 and store.read_image("a").shape == (4, 6, 5)
    assert "channels" not in describe(tmp_path / "s.h5", patients={"train": ["a"], "val": [], "test": []})


def test_cases_with_different_channel_counts_are_refused(tmp_path):
    b = _case("b", 3)
    b = Case(b.case_id, b.patient, b.image, b.label, source="imagesTr/b.nii.gz")
    with pytest.raises(DataError, match="'b' has 3 channel") as err:
        write_store(tmp_path / "s.h5", name="x", dims=3, labels=LABELS, cases=[_case("a", 2), b])
    assert err.value.path.endswith("imagesTr/b.nii.gz")
    assert not (tmp_path / "s.h5").exists()


def test_a_channel_axis_of_one_is_refused(tmp_path):
    one = _case("a", 1)
    with pytest.raises(DataError, match="2 or more channels"):
        write_store(tmp_path / "s.h5", name="x", dims=3, labels=LABELS,
                    cases=[Case("a", "a", one.image[None], one.label)])


# -- the nnunet reader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form, channel", [("v2", ["ADC", "T2"]), ("v1", [1, 0])])
def test_the_reader_stacks_the_chosen_channels_in_order(tmp_path, form, channel):
    from semiseg.data.nnunet import read_nnunet_raw

    root = (write_v2 if form == "v2" else write_v1)(tmp_path / form)
    cases, _ = read_nnunet_raw(root, "tiny", split={"seed": 0, "val": 1}, channel=channel, normalize="none")
    for case in cases:
        arrays, label = case_arrays(int(case.case_id.rsplit("_", 1)[1]))
        assert case.image.shape == (2, *label.shape)
        np.testing.assert_array_equal(case.image, np.stack([arrays[CHANNELS.index("ADC")], arrays[0]]))


def test_each_channel_is_z_scored_on_its_own(tmp_path):
    from semiseg.data.nnunet import read_nnunet_raw

    cases, _ = read_nnunet_raw(write_v2(tmp_path / "v2"), "tiny", split={"seed": 0, "val": 1}, channel=[0, 1])
    image = next(iter(cases)).image
    np.testing.assert_allclose(image.mean(axis=(1, 2, 3)), [0, 0], atol=1e-5)
    np.testing.assert_allclose(image.std(axis=(1, 2, 3)), [1, 1], atol=1e-4)


def test_a_list_of_one_channel_is_that_channel(tmp_path):
    from semiseg.data.nnunet import read_nnunet_raw

    root = write_v2(tmp_path / "v2")
    one = next(iter(read_nnunet_raw(root, "tiny", split={"seed": 0, "val": 1}, channel=["ADC"])[0]))
    alone = next(iter(read_nnunet_raw(root, "tiny", split={"seed": 0, "val": 1}, channel="ADC")[0]))
    assert one.image.shape == alone.image.shape == (8, 16, 16)
    np.testing.assert_array_equal(one.image, alone.image)


@pytest.mark.parametrize("channel, says", [(["T2", "DWI"], "'DWI'"), ([0, 2], "no channel 2"),
                                           (["T2", 0], "each once")])
def test_a_bad_channel_list_names_the_dataset_json_and_the_field(tmp_path, channel, says):
    from semiseg.data.nnunet import read_nnunet_raw

    with pytest.raises(DataError) as err:
        read_nnunet_raw(write_v2(tmp_path / "v2"), "mine", split={"seed": 0, "val": 1}, channel=channel)
    assert err.value.path.endswith("dataset.json") and says in str(err.value)
    assert "mine entry's params.channel" in str(err.value)


# -- augmentation: channels move together; intensity changes each on its own --------------------------------


def _coded(label: torch.Tensor) -> torch.Tensor:
    """Two channels that encode the label: ``1 + label`` and ``-10 · (1 + label)``."""
    base = (1 + label).float()
    return torch.stack([base, -10 * base], dim=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_augmentation_moves_every_channel_with_the_label(dims):
    from semiseg.engine.augment import augment_2d, augment_3d

    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (8, 16, 16) if dims == 2 else (8, 4, 12, 12), generator=g)
    augment = augment_2d if dims == 2 else augment_3d
    image, out = augment(_coded(label), label, torch.Generator().manual_seed(5))
    # zero where a rotation reaches outside the slice (image and label alike: 0 there)
    inside = image[:, 0] != 0
    assert torch.equal(image[:, 1], -10 * image[:, 0])
    assert torch.equal(image[:, 0][inside], (1 + out[inside]).float())
    assert not torch.equal(out, label)  # something moved


def test_colour_jitter_treats_each_channel_on_its_own():
    from semiseg.methods.unimatch.views import colour_jitter

    g = torch.Generator().manual_seed(0)
    first = torch.rand(6, 1, 8, 8, generator=g)
    a = torch.cat([first, torch.rand(6, 1, 8, 8, generator=g)], dim=1)
    b = torch.cat([first, 0.1 * torch.rand(6, 1, 8, 8, generator=g)], dim=1)
    ja, jb = (colour_jitter(x, torch.Generator().manual_seed(3), p=1.0) for x in (a, b))
    # the first channel's jitter does not see the second's values (its own contrast mean)
    assert torch.equal(ja[:, 0], jb[:, 0]) and not torch.equal(ja[:, 0], a[:, 0])
    # and draws its own factors: two copies of one channel come out different
    twice = colour_jitter(torch.cat([first, first], dim=1), torch.Generator().manual_seed(3), p=1.0)
    assert not torch.equal(twice[:, 0], twice[:, 1])


def test_crln_brightness_clips_each_channel_to_its_own_range():
    from semiseg.methods.crln.views import strong_view

    g = torch.Generator().manual_seed(0)
    first = torch.rand(4, 1, 16, 16, generator=g)
    label = torch.randint(0, 3, (4, 16, 16), generator=g)
    conf = torch.rand(4, 16, 16, generator=g)
    outs = [strong_view(torch.cat([first, scale * torch.rand(4, 1, 16, 16, generator=g)], dim=1), label, conf,
                        torch.Generator().manual_seed(1))[0] for scale in (1.0, 50.0)]
    assert torch.equal(outs[0][:, 0], outs[1][:, 0])


# -- prediction ---------------------------------------------------------------------------------------------


def _second_channel_net(dims: int) -> nn.Module:
    """Two classes from two channels: logits ``[0, x₁]``, so the label is ``x₁ > 0``."""
    net = (nn.Conv2d if dims == 2 else nn.Conv3d)(2, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 1] = 1.0
    return net


@pytest.mark.parametrize("dims", [2, 3])
def test_both_predictors_take_every_channel(dims):
    from semiseg.inference.predict import predict_volume

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 12, 10)).astype(np.float32)
    dataset = {"dims": dims, "num_classes": 2, "patch_size": [12, 10] if dims == 2 else [4, 8, 8],
               "stride": None if dims == 2 else [2, 4, 4]}
    pred = predict_volume(_second_channel_net(dims), image, dataset, "cpu")
    np.testing.assert_array_equal(pred, (image[1] > 0).astype(np.uint8))


# -- every method steps on two channels, and the second one reaches its loss --------------------------------


@pytest.mark.parametrize("algorithm", sorted(k for k in METHODS if not k.startswith(("test_", "_test"))))
def test_every_method_steps_on_two_channels(algorithm):
    m, ctx = tiny_step(algorithm, channels=2)
    losses = m.training_step(ctx)
    assert torch.isfinite(losses.total)
    losses.total.backward()
    m.second_phase(ctx)
    firsts = [c for c in m.modules() if isinstance(c, nn.modules.conv._ConvNd) and c.in_channels == 2]
    assert firsts, f"{algorithm}: no network takes two channels"
    grads = [c.weight.grad[:, 1] for c in firsts if c.weight.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), f"{algorithm}: the second channel gets no gradient"


# -- the run spec, the network and a training run ------------------------------------------------------------


def test_the_spec_carries_channels_only_when_several():
    from semiseg.config import input_channels
    from semiseg.nets import network_for

    source = {"layout": "nnunet", "params": {"split": {"seed": 0}}}
    assert input_channels({"source": {**source, "params": {"channel": "T2"}}}) == 1
    assert input_channels({"source": {**source, "params": {"channel": ["T2", "ADC", "DWI"]}}}) == 3
    assert input_channels({"source": {"layout": "la"}}) == 1
    spec = run_spec("supervised", 2)
    assert "channels" not in spec["dataset"]
    spec["dataset"]["channels"] = 3
    first = next(c for c in network_for(spec).modules() if isinstance(c, nn.Conv2d))
    assert first.in_channels == 3


@pytest.mark.parametrize("dims", [2, 3])
def test_a_run_on_two_channels_trains_and_predicts(tmp_path, dims):
    from semiseg.engine.loop import train
    from semiseg.inference.run import infer

    store, split = tiny_store(tmp_path / "store.h5", dims=dims, shape3d=(16, 24, 24), channels=2)
    spec = run_spec("supervised", 2, dims=dims, network="unet", val_interval=2)
    spec["dataset"]["channels"] = 2
    spec["method"]["network_args"] = {"channels": [4, 8, 16, 32, 64]} if dims == 2 else {"channels": [4, 8, 16]}
    if dims == 3:
        spec["method"]["network_args"]["dropout"] = [0.0, 0.0, 0.0]
    train(spec, store, split, tmp_path / "run", progress=False)
    model = torch.load(tmp_path / "run" / "model.pt")
    assert next(w for k, w in model.items() if k.endswith("weight") and w.dim() > 2).shape[1] == 2
    assert infer(tmp_path / "run", store, split, tmp_path / "run" / "predictions", device="cpu") == 1
    assert (tmp_path / "run" / "predictions" / "p5_frame01.nii.gz").is_file()


def test_a_store_whose_channels_differ_from_the_spec_is_named(tmp_path):
    from semiseg.engine.loop import TrainingError, train

    store, split = tiny_store(tmp_path / "store.h5", channels=2)
    with pytest.raises(TrainingError, match="holds 2 channel.*take 1") as err:
        train(run_spec("supervised", 2), store, split, tmp_path / "run", progress=False)
    assert str(store) in str(err.value)
    assert json.loads(split.read_text())  # the split is untouched


def test_a_two_channel_store_exports_to_nnunet_and_reads_back(tmp_path):
    from semiseg.data.nnunet import read_dataset_json, read_nnunet_raw
    from semiseg.data.preprocess import preprocess
    from semiseg.data.splits import make_split
    from semiseg.inference.export import export_nnunet

    params = {"channel": ["ADC", "T2"], "split": {"fold": 0}, "normalize": "none"}
    desc = preprocess("tiny", "nnunet", write_v2(tmp_path / "v2"), labels=NNUNET_LABELS, dims=3,
                      store_path=tmp_path / "store.h5", params=params)
    assert desc["channels"] == 2
    (tmp_path / "split.json").write_text(json.dumps(make_split(desc, 50, 2)))
    export_nnunet(tmp_path / "store.h5", tmp_path / "split.json", tmp_path / "out")
    assert read_dataset_json(tmp_path / "out").channels == {0: "channel_0", 1: "channel_1"}
    assert (tmp_path / "out" / "imagesTs" / "case_006_0001.nii.gz").is_file()
    cases, _ = read_nnunet_raw(tmp_path / "out", "back", split={"fold": 0}, channel=[0, 1], normalize="none",
                               labels=NNUNET_LABELS)
    with Store(tmp_path / "store.h5") as store:
        for case in cases:
            image, label = store.read(case.case_id)
            np.testing.assert_array_equal(case.image, image)
            np.testing.assert_array_equal(case.label, label)


@pytest.mark.parametrize("channel, ok", [("T2", True), (1, True), (["T2", 1], True), ([], False),
                                         (["T2", "T2"], False), ([["T2"]], False)])
def test_the_catalogue_takes_one_channel_or_a_list(channel, ok):
    from conftest import REPO
    from semiseg.schema import ConfigError, read_schema, validate

    entry = {"mine": {"description": "d", "source": {"layout": "nnunet", "params": {"channel": channel,
                                                                                   "split": {"seed": 0}}},
                      "dims": 3, "labels": {"background": 0, "a": 1}, "ratios": {"50": 1}, "patch_size": [8, 8, 8]}}
    schema = read_schema(REPO, "datasets")
    if ok:
        validate(entry, schema, "mine.yaml")
    else:
        with pytest.raises(ConfigError, match="channel"):
            validate(entry, schema, "mine.yaml")
