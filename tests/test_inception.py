"""Inception-v4 and Inception-ResNet-v2 encoders (pretrainedmodels layout with smp's
padding): parameter counts, every checkpoint key, pretrained weights, and smp models on them
ported with equal logits."""

import numpy as np
import pytest
from helpers import (
    assert_params_equal_smp,
    features_match_smp_encoder,
    unet_trains_saves_and_reloads,
)
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import pretrained
from zoo.build_context import shapes_only


class Shapes:
    """Key -> shape of pretrainedmodels' modules, written from its code (BasicConv2d: conv
    without bias + BN; a residual block's ``conv2d``: 1x1 with bias)."""

    def __init__(self, scale=1.0):
        self.shapes, self.scale = {}, scale

    def w(self, c):
        return max(1, int(round(c * self.scale)))

    def conv(self, path, cin, cout, kh, kw=None):
        cout = self.w(cout)
        self.shapes[f"{path}.conv.weight"] = (cout, cin, kh, kw or kh)
        for p in ("weight", "bias", "running_mean", "running_var"):
            self.shapes[f"{path}.bn.{p}"] = (cout,)
        self.shapes[f"{path}.bn.num_batches_tracked"] = ()
        return cout

    def chain(self, path, cin, *specs):
        for i, (cout, kh, kw) in enumerate(specs):
            cin = self.conv(f"{path}.{i}", cin, cout, kh, kw)
        return cin

    def residual(self, path, cin, cat):
        self.shapes[f"{path}.conv2d.weight"] = (cin, cat, 1, 1)
        self.shapes[f"{path}.conv2d.bias"] = (cin,)


def inceptionv4_shapes(scale=1.0):
    s = Shapes(scale)
    c = s.conv("features.0", 3, 32, 3)
    c = s.conv("features.1", c, 32, 3)
    c = s.conv("features.2", c, 64, 3)
    c = c + s.conv("features.3.conv", c, 96, 3)  # Mixed_3a: maxpool + conv
    c = s.chain("features.4.branch0", c, (64, 1, 1), (96, 3, 3)) + s.chain(
        "features.4.branch1", c, (64, 1, 1), (64, 1, 7), (64, 7, 1), (96, 3, 3)
    )
    c = c + s.conv("features.5.conv", c, 192, 3)  # Mixed_5a: conv + maxpool
    for i in range(6, 10):  # Inception_A
        p = f"features.{i}"
        c = (
            s.conv(f"{p}.branch0", c, 96, 1)
            + s.chain(f"{p}.branch1", c, (64, 1, 1), (96, 3, 3))
            + s.chain(f"{p}.branch2", c, (64, 1, 1), (96, 3, 3), (96, 3, 3))
            + s.conv(f"{p}.branch3.1", c, 96, 1)
        )
    c = (
        s.conv("features.10.branch0", c, 384, 3)
        + s.chain("features.10.branch1", c, (192, 1, 1), (224, 3, 3), (256, 3, 3))
        + c
    )
    for i in range(11, 18):  # Inception_B
        p = f"features.{i}"
        b2 = ((192, 1, 1), (192, 7, 1), (224, 1, 7), (224, 7, 1), (256, 1, 7))
        c = (
            s.conv(f"{p}.branch0", c, 384, 1)
            + s.chain(f"{p}.branch1", c, (192, 1, 1), (224, 1, 7), (256, 7, 1))
            + s.chain(f"{p}.branch2", c, *b2)
            + s.conv(f"{p}.branch3.1", c, 128, 1)
        )
    c = (
        s.chain("features.18.branch0", c, (192, 1, 1), (192, 3, 3))
        + s.chain("features.18.branch1", c, (256, 1, 1), (256, 1, 7), (320, 7, 1), (320, 3, 3))
        + c
    )
    for i in range(19, 22):  # Inception_C
        p = f"features.{i}"
        b1 = s.conv(f"{p}.branch1_0", c, 384, 1)
        b2 = s.conv(f"{p}.branch2_0", c, 384, 1)
        b2 = s.conv(f"{p}.branch2_1", b2, 448, 3, 1)
        b2 = s.conv(f"{p}.branch2_2", b2, 512, 1, 3)
        c = (
            s.conv(f"{p}.branch0", c, 256, 1)
            + s.conv(f"{p}.branch1_1a", b1, 256, 1, 3)
            + s.conv(f"{p}.branch1_1b", b1, 256, 3, 1)
            + s.conv(f"{p}.branch2_3a", b2, 256, 1, 3)
            + s.conv(f"{p}.branch2_3b", b2, 256, 3, 1)
            + s.conv(f"{p}.branch3.1", c, 256, 1)
        )
    return s.shapes


def inceptionresnetv2_shapes(scale=1.0):
    s = Shapes(scale)
    c = s.conv("conv2d_1a", 3, 32, 3)
    c = s.conv("conv2d_2a", c, 32, 3)
    c = s.conv("conv2d_2b", c, 64, 3)
    c = s.conv("conv2d_3b", c, 80, 1)
    c = s.conv("conv2d_4a", c, 192, 3)
    c = (
        s.conv("mixed_5b.branch0", c, 96, 1)
        + s.chain("mixed_5b.branch1", c, (48, 1, 1), (64, 5, 5))
        + s.chain("mixed_5b.branch2", c, (64, 1, 1), (96, 3, 3), (96, 3, 3))
        + s.conv("mixed_5b.branch3.1", c, 64, 1)
    )
    for i in range(10):
        p = f"repeat.{i}"
        cat = (
            s.conv(f"{p}.branch0", c, 32, 1)
            + s.chain(f"{p}.branch1", c, (32, 1, 1), (32, 3, 3))
            + s.chain(f"{p}.branch2", c, (32, 1, 1), (48, 3, 3), (64, 3, 3))
        )
        s.residual(p, c, cat)
    c = (
        s.conv("mixed_6a.branch0", c, 384, 3)
        + s.chain("mixed_6a.branch1", c, (256, 1, 1), (256, 3, 3), (384, 3, 3))
        + c
    )
    for i in range(20):
        p = f"repeat_1.{i}"
        cat = s.conv(f"{p}.branch0", c, 192, 1) + s.chain(
            f"{p}.branch1", c, (128, 1, 1), (160, 1, 7), (192, 7, 1)
        )
        s.residual(p, c, cat)
    c = (
        s.chain("mixed_7a.branch0", c, (256, 1, 1), (384, 3, 3))
        + s.chain("mixed_7a.branch1", c, (256, 1, 1), (288, 3, 3))
        + s.chain("mixed_7a.branch2", c, (256, 1, 1), (288, 3, 3), (320, 3, 3))
        + c
    )
    for p in [f"repeat_2.{i}" for i in range(9)] + ["block8"]:
        cat = s.conv(f"{p}.branch0", c, 192, 1) + s.chain(
            f"{p}.branch1", c, (192, 1, 1), (224, 1, 3), (256, 3, 1)
        )
        s.residual(p, c, cat)
    s.conv("conv2d_7b", c, 1536, 1)
    return s.shapes


SHAPES = {"inceptionv4": inceptionv4_shapes, "inceptionresnetv2": inceptionresnetv2_shapes}
# timm's model cards (1000 classes: a 1536 -> 1000 classifier of 1,537,000 parameters).
PUBLISHED = {"inceptionv4": 42_679_816, "inceptionresnetv2": 55_843_464}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_params_equal_the_published_totals(name):
    want = sum(int(np.prod(s)) for k, s in SHAPES[name]().items() if not k.endswith(BUFFERS))
    assert want == PUBLISHED[name] - 1_537_000
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == want


@pytest.mark.parametrize(
    "name, channels",
    [
        ("inceptionv4", [64, 192, 384, 1024, 1536]),
        ("inceptionresnetv2", [64, 192, 320, 1088, 1536]),
    ],
)
def test_feature_maps_are_smps(name, channels):
    # smp's out_channels, each map half the last one's size (smp pads every 3x3 conv / pool).
    with shapes_only():  # output shapes only: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(64, 96, 3))
    assert [tuple(encoder.output[s].shape[1:]) for s in (2, 4, 8, 16, 32)] == [
        (64 // s, 96 // s, c) for s, c in zip((2, 4, 8, 16, 32), channels, strict=True)
    ]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_key_lands_in_its_variable(tmp_path, name):
    scale = zoo.encoder_info(name).tiny_config["width_scale"]
    state = identifiable_state_dict(SHAPES[name](scale))
    state["last_linear.weight"] = np.zeros((1001, 96), np.float32)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), width_scale=scale, weights=str(path),
        input_normalization=None,
    )  # fmt: skip
    # Every variable holds its key's tensor (kernels OIHW -> HWIO).
    names = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    names |= {"moving_mean": "running_mean", "moving_variance": "running_var"}
    for v in model.variables:
        layer, var = v.path.split("/")
        key = layer.removeprefix("encoder_").replace("__", ".") + "." + names[var]
        want = state[key].transpose(2, 3, 1, 0) if var == "kernel" else state[key]
        np.testing.assert_array_equal(np.asarray(v), want, err_msg=v.path)
    assert len(model.variables) == sum(1 for k in state if not k.endswith("tracked")) - 1


def test_background_weights_come_from_smps_dashed_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    source = pretrained.sources("inceptionresnetv2")["imagenet+background"]
    assert "smp-hub/inceptionresnetv2.imagenet-background/resolve/" in source.url
    scale = zoo.encoder_info("inceptionresnetv2").tiny_config["width_scale"]
    state = identifiable_state_dict(inceptionresnetv2_shapes(scale))
    path = tmp_path / "weights" / source.file
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder(
        "inceptionresnetv2", input_shape=(32, 32, 3), width_scale=scale,
        weights="imagenet+background",
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(net.get_layer("encoder_preprocess").scale), 2.0)
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_block8__conv2d").bias), state["block8.conv2d.bias"]
    )


@pytest.mark.slow  # 800 layers even when tiny: about a minute to build, fit and reload
def test_unet_trains_saves_and_reloads(tmp_path):
    # Inception-ResNet-v2 has every layer kind of both (its residuals' Rescaling and Add too).
    unet_trains_saves_and_reloads(tmp_path, "inceptionresnetv2", "encoder_repeat__3__conv2d")


@pytest.mark.slow  # full Inception encoders in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name)


@pytest.mark.slow  # full Inception models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_inceptions_port_with_equal_logits(tmp_path, monkeypatch):
    # The decoders' wiring to these encoders; the encoders' own exactness is proven above
    # against float64 (their round-off reaches ~3e-3 of the logits here, torch's included).
    specs = [
        ("Unet", "unet", ".pth", 2, "inceptionv4", {}),
        ("FPN", "fpn", ".safetensors", 1, "inceptionresnetv2", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (64, 96), rtol=1e-2)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", name) for name in sorted(SHAPES)])
