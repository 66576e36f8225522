"""GENet encoders (timm's gernet_s/m/l, smp's tu- and timm- names): parameter counts, every
checkpoint key in timm's and smp's layouts, dilated output strides, pretrained weights, and
smp's encoders and models on them with equal features and logits."""

import re

import numpy as np
import pytest
from helpers import (
    assert_params_equal_smp,
    batch_norm_shapes,
    features_match_smp_encoder,
    from_timm_cache,
    smp_file_loads_as_timm_file,
    trainable_params,
    unet_trains_saves_and_reloads,
)
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo.build_context import shapes_only

# Trainable parameters and out_channels of smp 0.6's tu-gernet_* encoders (printed by smp).
SMP_ENCODER = {
    "gernet_s": (6_252_761, (13, 48, 48, 384, 1920)),
    "gernet_m": (18_581_920, (32, 128, 192, 640, 2560)),
    "gernet_l": (28_517_280, (32, 128, 192, 640, 2560)),
}
# timm's ByoModelCfg: stem channels, (type, depth, channels, stride, group size, bottle ratio)
# per stage, final conv channels.
TIMM_CFG = {
    "gernet_s": (13, [("basic", 1, 48, 2, 0, 1.0), ("basic", 3, 48, 2, 0, 1.0),
                      ("bottle", 7, 384, 2, 0, 0.25), ("bottle", 2, 560, 2, 1, 3.0),
                      ("bottle", 1, 256, 1, 1, 3.0)], 1920),
    "gernet_m": (32, [("basic", 1, 128, 2, 0, 1.0), ("basic", 2, 192, 2, 0, 1.0),
                      ("bottle", 6, 640, 2, 0, 0.25), ("bottle", 4, 640, 2, 1, 3.0),
                      ("bottle", 1, 640, 1, 1, 3.0)], 2560),
    "gernet_l": (32, [("basic", 1, 128, 2, 0, 1.0), ("basic", 2, 192, 2, 0, 1.0),
                      ("bottle", 6, 640, 2, 0, 0.25), ("bottle", 5, 640, 2, 1, 3.0),
                      ("bottle", 4, 640, 1, 1, 3.0)], 2560),
}  # fmt: skip
TINY = zoo.encoder_info("gernet_s").tiny_config


def timm_shapes(stem, stages, final, head=0):
    """Key -> shape of timm's ByobNet for a GENet config (its code, written out)."""
    shapes = {}

    def conv_bn(key, out, cin, k, groups=1):
        shapes[f"{key}.conv.weight"] = (out, cin // groups, k, k)
        shapes.update(batch_norm_shapes(f"{key}.bn", out))

    conv_bn("stem", stem, 3, 3)
    cin = stem
    for s, (kind, depth, c, stride, gs, br) in enumerate(stages):
        mid = max(8, int(c * br + 4) // 8 * 8)  # timm's make_divisible (none 10% below here)
        for b in range(depth):
            k = f"stages.{s}.{b}"
            if cin != c or (b == 0 and stride > 1):
                conv_bn(f"{k}.shortcut", c, cin, 1)
            if kind == "basic":
                conv_bn(f"{k}.conv1_kxk", mid, cin, 3)
                conv_bn(f"{k}.conv2_kxk", c, mid, 3)
            else:
                conv_bn(f"{k}.conv1_1x1", mid, cin, 1)
                conv_bn(f"{k}.conv2_kxk", mid, mid, 3, groups=mid // gs if gs else 1)
                conv_bn(f"{k}.conv3_1x1", c, mid, 1)
            cin = c
    conv_bn("final_conv", final, cin, 1)
    if head:
        shapes["head.fc.weight"], shapes["head.fc.bias"] = (head, final), (head,)
    return shapes


def _tiny_cfg():
    stages = [
        (kind, d, w, stride, gs, br)
        for (kind, _, _, stride, gs, br), d, w in zip(
            TIMM_CFG["gernet_s"][1], TINY["depths"], TINY["widths"], strict=True
        )
    ]
    return TINY["stem_width"], stages, TINY["num_features"]


@pytest.mark.parametrize("name", sorted(SMP_ENCODER))
def test_params_equal_timm_and_smp(name):
    params, channels = SMP_ENCODER[name]
    assert trainable_params(timm_shapes(*TIMM_CFG[name])) == params
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == params
    assert tuple(encoder.output[s].shape[-1] for s in (2, 4, 8, 16, 32)) == channels


def test_every_key_lands_in_its_variable(tmp_path):
    shapes = timm_shapes(*_tiny_cfg(), head=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / "gernet.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        "gernet_s", input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    checks = [
        ("encoder_stem_conv", "kernel", "stem.conv.weight"),
        ("encoder_stages0_0_shortcut_bn", "beta", "stages.0.0.shortcut.bn.bias"),
        ("encoder_stages1_0_conv2_kxk_conv", "kernel", "stages.1.0.conv2_kxk.conv.weight"),
        ("encoder_stages2_0_conv1_1x1_bn", "moving_mean", "stages.2.0.conv1_1x1.bn.running_mean"),
        ("encoder_stages3_0_conv2_kxk_conv", "kernel", "stages.3.0.conv2_kxk.conv.weight"),
        ("encoder_stages4_0_conv3_1x1_conv", "kernel", "stages.4.0.conv3_1x1.conv.weight"),
        ("encoder_final_conv_bn", "gamma", "final_conv.bn.weight"),
    ]
    for layer, variable, key in checks:
        want = state[key]
        if want.ndim == 4:  # depthwise OIHW (C, 1, k, k) -> (k, k, C, 1), else HWIO
            depthwise = key.startswith(("stages.3", "stages.4")) and "conv2_kxk" in key
            want = want.transpose(2, 3, 0, 1) if depthwise else want.transpose(2, 3, 1, 0)
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 2


def test_smp_file_loads_as_the_timm_file(tmp_path):
    # smp 0.6 holds timm's feature wrapper: stages.{s} flattened to stages_{s}
    def smp_key(key):
        return "encoder.model." + re.sub(r"^stages\.", "stages_", key)

    assert (
        smp_key("stages.3.0.conv3_1x1.conv.weight")
        == "encoder.model.stages_3.0.conv3_1x1.conv.weight"
    )
    state = identifiable_state_dict(timm_shapes(*_tiny_cfg()))
    smp_file_loads_as_timm_file(tmp_path, "gernet_s", state, smp_key, **TINY)


def test_odd_width_stem_trains_at_full_size():
    # gernet_s's 13-channel stem feeds a strided 1x1 shortcut, whose oneDNN weight gradient
    # corrupts the heap below 16 input channels at this size (uxlfoundation/oneDNN#6035:
    # the process aborted): the zoo subsamples first, then convolves at stride 1.
    import tensorflow as tf

    net = zoo.create_encoder("gernet_s", input_shape=(128, 128, 3), **{**TINY, "stem_width": 13})
    assert net.get_layer("encoder_stages0_0_shortcut_subsample").strides == (2, 2)
    images = np.random.default_rng(0).random((8, 128, 128, 3), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_mean(f) for f in net(images, training=True).values())
    grads = tape.gradient(loss, net.trainable_variables)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_as_timm(output_stride):
    net = zoo.create_encoder(
        "gernet_m", input_shape=(64, 96, 3), output_stride=output_stride,
        **{**TINY, "depths": (1, 1, 2, 2, 2)},
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(net.output) == strides
    for s in strides:
        assert net.output[s].shape[1:3] == (64 // s, 96 // s)
    assert net.output[output_stride].shape[-1] == TINY["num_features"]  # the final conv

    def rate(stage, block):
        return net.get_layer(f"encoder_stages{stage}_{block}_conv2_kxk_conv").dilation_rate[0]

    # Stages 2 and 3 downsample to 16 and 32. timm: every dilated stage's first block takes
    # half the rate (1 for 2, 2 for 4), the unstrided stage 4 too.
    want = {
        32: {(2, 1): 1, (3, 0): 1, (3, 1): 1, (4, 0): 1, (4, 1): 1},
        16: {(2, 1): 1, (3, 0): 1, (3, 1): 2, (4, 0): 1, (4, 1): 2},
        8: {(2, 0): 1, (2, 1): 2, (3, 0): 2, (3, 1): 4, (4, 0): 2, (4, 1): 4},
    }[output_stride]
    assert {k: rate(*k) for k in want} == want


def test_imagenet_weights_are_timms_from_the_cache(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("gernet_s")
    assert sources["imagenet"].url == sources["idstcv_in1k"].url
    state = identifiable_state_dict(timm_shapes(*_tiny_cfg(), head=1000))
    net = from_timm_cache(tmp_path, monkeypatch, "gernet_s", "idstcv_in1k", state, **TINY)
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_final_conv_conv").kernel),
        state["final_conv.conv.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"widths": (8, 8, 16, 16)}, "widths"),
        ({"depths": (1, 1, 0, 1, 1)}, "depths"),
        ({"stem_width": 0}, "stem_width"),
        ({"output_stride": 4}, "output_stride"),
        ({"weights": "in1k"}, "idstcv_in1k"),  # the message lists the names
    ],
)
def test_bad_arguments_name_the_value(kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder("gernet_s", input_shape=(32, 32, 3), **{**TINY, **kwargs})


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "gernet_s", "encoder_stages3_0_conv2_kxk_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", ["gernet_s", "gernet_m"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name, smp_name=f"tu-{name}")


@pytest.mark.slow  # four smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_gernets_port_with_equal_logits(tmp_path, monkeypatch):
    # smp 0.6's tu- names and its older timm-gernet_* (mapped to tu-gernet_*); DeepLabV3 at
    # output stride 8 and DeepLabV3Plus at 16 (dilated stages).
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-gernet_s", {}),
        ("FPN", "fpn", ".safetensors", 1, "tu-gernet_s", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-gernet_s", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-gernet_m", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "gernet_l"), ("fpn", "FPN", "gernet_s")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
