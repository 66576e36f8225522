"""ResNeSt encoders (timm's resnest*, smp's tu-resnest* and timm-resnest*): parameter counts,
every checkpoint key in timm's and both smp layouts, the split attention's channel order,
dilated output strides, pretrained weights, and smp's encoders and models on them with equal
features and logits."""

import keras
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

# Trainable parameters of smp 0.6's tu-resnest* encoders (sum of numel, printed by smp).
SMP_ENCODER_PARAMS = {
    "resnest14d": 8_562_688, "resnest26d": 15_020_448, "resnest50d": 25_434_240,
    "resnest101e": 46_226_016, "resnest200e": 68_152_544, "resnest269e": 108_880_480,
    "resnest50d_4s2x40d": 28_368_592, "resnest50d_1s4x24d": 23_628_000,
}  # fmt: skip
# timm's model kwargs (timm/models/resnest.py): layers, stem_width, base_width, cardinality,
# radix; written out here independently of zoo.encoders.resnest.VARIANTS.
TIMM_ARGS = {
    "resnest14d": ((1, 1, 1, 1), 32, 64, 1, 2), "resnest26d": ((2, 2, 2, 2), 32, 64, 1, 2),
    "resnest50d": ((3, 4, 6, 3), 32, 64, 1, 2), "resnest101e": ((3, 4, 23, 3), 64, 64, 1, 2),
    "resnest200e": ((3, 24, 36, 3), 64, 64, 1, 2),
    "resnest269e": ((3, 30, 48, 8), 64, 64, 1, 2),
    "resnest50d_4s2x40d": ((3, 4, 6, 3), 32, 40, 2, 4),
    "resnest50d_1s4x24d": ((3, 4, 6, 3), 32, 24, 4, 1),
}  # fmt: skip
TINY = zoo.encoder_info("resnest14d").tiny_config


def timm_shapes(layers, stem_width, base_width, cardinality, radix, planes=(64, 128, 256, 512),
                classes=0):  # fmt: skip
    """Key -> shape of timm's ResNet with ``ResNestBottleneck``s (its code, written out)."""
    shapes = {}

    shapes["conv1.0.weight"] = (stem_width, 3, 3, 3)
    shapes |= batch_norm_shapes("conv1.1", stem_width)
    shapes["conv1.3.weight"] = (stem_width, stem_width, 3, 3)
    shapes |= batch_norm_shapes("conv1.4", stem_width)
    shapes["conv1.6.weight"] = (2 * stem_width, stem_width, 3, 3)
    shapes |= batch_norm_shapes("bn1", 2 * stem_width)
    cin = 2 * stem_width
    for s, (n, p) in enumerate(zip(layers, planes, strict=True), 1):
        for b in range(n):
            key, gw = f"layer{s}.{b}", int(p * base_width / 64) * cardinality
            # SplitAttn's make_divisible(gw * radix * 0.25, min_value=32, divisor=8)
            v = gw * radix * 0.25
            attn = max(32, int(v + 4) // 8 * 8)
            attn = attn + 8 if attn < 0.9 * v else attn
            shapes[f"{key}.conv1.weight"] = (gw, cin, 1, 1)
            shapes |= batch_norm_shapes(f"{key}.bn1", gw)
            shapes[f"{key}.conv2.conv.weight"] = (gw * radix, gw // (cardinality * radix), 3, 3)
            shapes |= batch_norm_shapes(f"{key}.conv2.bn0", gw * radix)
            shapes[f"{key}.conv2.fc1.weight"] = (attn, gw // cardinality, 1, 1)
            shapes[f"{key}.conv2.fc1.bias"] = (attn,)
            shapes |= batch_norm_shapes(f"{key}.conv2.bn1", attn)
            shapes[f"{key}.conv2.fc2.weight"] = (gw * radix, attn // cardinality, 1, 1)
            shapes[f"{key}.conv2.fc2.bias"] = (gw * radix,)
            shapes[f"{key}.conv3.weight"] = (4 * p, gw, 1, 1)
            shapes |= batch_norm_shapes(f"{key}.bn3", 4 * p)
            if b == 0:  # every stage's first block changes the channels (and stride)
                shapes[f"{key}.downsample.1.weight"] = (4 * p, cin, 1, 1)
                shapes |= batch_norm_shapes(f"{key}.downsample.2", 4 * p)
            cin = 4 * p
    if classes:
        shapes["fc.weight"], shapes["fc.bias"] = (classes, cin), (classes,)
    return shapes


def tiny_shapes(name, classes=0):
    layers, _, _, cardinality, radix = TIMM_ARGS[name]
    return timm_shapes(
        TINY["depths"], TINY["stem_width"], TINY["base_width"], cardinality, radix,
        TINY["widths"], classes,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    assert trainable_params(timm_shapes(*TIMM_ARGS[name])) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    got = sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)
    assert got == SMP_ENCODER_PARAMS[name]
    channels = [int(encoder.output[s].shape[-1]) for s in (2, 4, 8, 16, 32)]
    assert channels == [128 if name.endswith("e") else 64, 256, 512, 1024, 2048]  # smp's


@pytest.mark.parametrize("cardinality, radix", [(1, 2), (2, 4), (4, 1)])
def test_split_attention_orders_channels_as_timms_radix_softmax(cardinality, radix):
    from zoo.encoders.resnest import split_attention

    width = 16
    image = keras.Input((5, 6, 8))
    net = keras.Model(image, split_attention(image, width, 1, cardinality, radix, "sa"))
    rng = np.random.default_rng(0)
    for v in net.weights:  # random weights, positive variances
        v.assign(
            rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path else rng.normal(size=v.shape)
        )
    x = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
    y = np.asarray(keras.Model(image, net.get_layer("sa_relu0").output)(x), np.float64)

    def grouped_1x1(layer, v):  # (B, C) -> (B, out), `cardinality` groups
        kernel, bias = (np.asarray(w, np.float64) for w in net.get_layer(layer).weights)
        ins, outs = np.split(v, cardinality, -1), np.split(kernel[0, 0], cardinality, -1)
        return np.concatenate([a @ k for a, k in zip(ins, outs)], -1) + bias

    def bn(layer, v):
        gamma, beta, mean, var = (np.asarray(w, np.float64) for w in net.get_layer(layer).weights)
        return (v - mean) / np.sqrt(var + 1e-5) * gamma + beta

    # timm's SplitAttn.forward on channels-last arrays: splits are radix-major.
    splits = y.reshape(2, 5, 6, radix, width)
    gap = splits.sum(3).mean((1, 2))
    logits = grouped_1x1("sa_fc2", np.maximum(bn("sa_bn1", grouped_1x1("sa_fc1", gap)), 0))
    if radix > 1:  # rSoftMax: view(B, cardinality, radix, -1).transpose(1, 2), softmax dim 1
        z = logits.reshape(2, cardinality, radix, -1).transpose(0, 2, 1, 3)
        attn = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).reshape(2, radix, width)
    else:
        attn = 1 / (1 + np.exp(-logits.reshape(2, 1, width)))
    want = (splits * attn[:, None, None]).sum(3)
    np.testing.assert_allclose(np.asarray(net(x)), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_the_last_stages_as_timm(output_stride):
    encoder = zoo.create_encoder(
        "resnest50d_4s2x40d", input_shape=(64, 96, 3), output_stride=output_stride,
        **{**TINY, "widths": (8, 16, 24, 32), "depths": (1, 1, 2, 2)},
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(encoder.output) == strides
    for s in strides:
        assert encoder.output[s].shape[1:3] == (64 // s, 96 // s)
    assert encoder.output[output_stride].shape[-1] == 4 * 32
    names = {layer.name for layer in encoder.layers}

    def rate(stage, block):
        return encoder.get_layer(f"encoder_stage{stage}_block{block}_conv2_conv").dilation_rate[0]

    # timm: a dilated stage (stage 4 at 16; stages 3, 4 at 8) has no strided average pool,
    # its first block keeps the previous rate (1; 2 for stage 4 at 8), the others double it,
    # and its shortcut pools 2x2 at stride 1 over a bottom / right zero pad (AvgPool2dSame).
    dilated = {32: (), 16: (4,), 8: (3, 4)}[output_stride]
    want = {32: [1, 1, 1, 1, 1, 1], 16: [1, 1, 1, 1, 1, 2], 8: [1, 1, 1, 2, 2, 4]}
    assert [rate(1, 1), rate(2, 1), rate(3, 1), rate(3, 2), rate(4, 1), rate(4, 2)] == want[
        output_stride
    ]
    for stage in (2, 3, 4):
        block = f"encoder_stage{stage}_block1"
        assert (f"{block}_avd_pool" in names) == (stage not in dilated)
        assert (f"{block}_downsample_pad" in names) == (stage in dilated)
        assert encoder.get_layer(f"{block}_downsample_pool").strides == (
            (1, 1) if stage in dilated else (2, 2)
        )
    assert "encoder_stage1_block1_downsample_pool" not in names  # stride 1: timm's Identity


def test_pools_pad_as_pytorch_on_odd_maps():
    # 2x2/2 ceil_mode, count_include_pad=False at an odd edge: the partial window's mean.
    from zoo.encoders.resnest import _average_pool, _downsample

    x = keras.Input((3, 3, 1))
    net = keras.Model(x, [_average_pool(x, "a", 2), _downsample(x, 1, 2, 1, "d")])
    net.get_layer("d_downsample_conv").kernel.assign(np.ones((1, 1, 1, 1)))
    image = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    avd, down = (np.asarray(t)[0, ..., 0] for t in net(image, training=False))
    # 3x3/2 padding 1, zeros counted (PyTorch's AvgPool2d default): windows at -1 and 1.
    np.testing.assert_allclose(avd, [[8 / 9, 12 / 9], [20 / 9, 24 / 9]], rtol=1e-6)
    bn = 1 / np.sqrt(1 + 1e-5)  # fresh batch norm, inference: x / sqrt(1 + eps)
    np.testing.assert_allclose(down, np.array([[2, 3.5], [6.5, 8]]) * bn, rtol=1e-6)


@pytest.mark.parametrize("name", ["resnest14d", "resnest50d_4s2x40d", "resnest50d_1s4x24d"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    shapes = tiny_shapes(name, classes=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    checks = [
        ("encoder_stem1_conv", "kernel", "conv1.0.weight"),
        ("encoder_stem2_bn", "moving_variance", "conv1.4.running_var"),
        ("encoder_stem3_conv", "kernel", "conv1.6.weight"),
        ("encoder_stem_bn", "gamma", "bn1.weight"),
        ("encoder_stage2_block1_conv1_conv", "kernel", "layer2.0.conv1.weight"),
        ("encoder_stage3_block1_conv1_bn", "beta", "layer3.0.bn1.bias"),
        ("encoder_stage2_block1_conv2_conv", "kernel", "layer2.0.conv2.conv.weight"),
        ("encoder_stage1_block1_conv2_bn0", "moving_mean", "layer1.0.conv2.bn0.running_mean"),
        ("encoder_stage4_block1_conv2_fc1", "kernel", "layer4.0.conv2.fc1.weight"),
        ("encoder_stage4_block1_conv2_bn1", "gamma", "layer4.0.conv2.bn1.weight"),
        ("encoder_stage3_block1_conv2_fc2", "bias", "layer3.0.conv2.fc2.bias"),
        ("encoder_stage1_block1_conv3_conv", "kernel", "layer1.0.conv3.weight"),
        ("encoder_stage4_block1_conv3_bn", "moving_variance", "layer4.0.bn3.running_var"),
        ("encoder_stage1_block1_downsample_conv", "kernel", "layer1.0.downsample.1.weight"),
        ("encoder_stage3_block1_downsample_bn", "beta", "layer3.0.downsample.2.bias"),
    ]
    for layer, variable, key in checks:
        want = state[key].transpose(2, 3, 1, 0) if state[key].ndim == 4 else state[key]
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 2


@pytest.mark.parametrize("prefix", ["encoder.model.", "encoder."])
def test_smp_files_load_as_the_timm_file(tmp_path, prefix):
    # smp 0.6 (tu-resnest*): encoder.model.; older smp (timm-resnest*): encoder.
    state = identifiable_state_dict(tiny_shapes("resnest50d_4s2x40d"))
    smp_file_loads_as_timm_file(tmp_path, "resnest50d_4s2x40d", state, lambda k: prefix + k, **TINY)


def test_imagenet_weights_are_timms_default_from_the_cache(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("resnest14d")
    assert sources["imagenet"].url == sources["gluon_in1k"].url  # timm's default tag
    assert sources["imagenet"].url.endswith(
        "timm/resnest14d.gluon_in1k/resolve/main/model.safetensors"
    )
    assert set(zoo.pretrained.sources("resnest50d")) == {"imagenet", "in1k"}
    state = identifiable_state_dict(tiny_shapes("resnest14d", 1000))
    net = from_timm_cache(tmp_path, monkeypatch, "resnest14d", "gluon_in1k", state, **TINY)
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stage1_block1_conv1_conv").kernel),
        state["layer1.0.conv1.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"widths": (8, 16, 24)}, "widths"),
        ({"depths": (1, 0, 1, 1)}, "depths"),
        ({"stem_width": 0}, "stem_width"),
        ({"radix": 3}, "radix"),  # 8 planes: 8 channels in 3 splits' groups
        ({"cardinality": 0}, "cardinality"),
        ({"base_width": 4}, "base_width"),  # int(8 * 4 / 64) = 0 channels per group
        ({"output_stride": 4}, "output_stride"),
        ({"weights": "in1k"}, "gluon_in1k"),  # the message lists the tags
    ],
)
def test_bad_arguments_name_the_value(kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder("resnest14d", input_shape=(32, 32, 3), **{**TINY, **kwargs})


@pytest.mark.parametrize("name", ["resnest50d_4s2x40d", "resnest50d_1s4x24d"])
def test_unet_trains_saves_and_reloads(tmp_path, name):
    unet_trains_saves_and_reloads(tmp_path, name, "encoder_stage2_block1_conv2_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", ["resnest14d", "resnest50d_4s2x40d", "resnest50d_1s4x24d"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    # 72 x 104: odd maps from stride 8 on (the pools' and strided convs' edges). The random
    # 50-layer nets' features grow to ~1000 at stride 32 (torch's float32 then ~1e-4 off).
    features_match_smp_encoder(
        tmp_path, name, size=(72, 104), max_scale=2000.0, smp_name=f"tu-{name}"
    )


@pytest.mark.slow  # five smp models in two torch interpreters, ~1 min on 2 cores
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_resnests_port_with_equal_logits(tmp_path, monkeypatch):
    # smp 0.6's names and its older timm-resnest* (which it maps to tu-resnest*); DeepLabV3 at
    # output stride 8 and DeepLabV3Plus at 16 (dilated stages, stride-1 shortcut pools).
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-resnest14d", {}),
        ("FPN", "fpn", ".safetensors", 1, "tu-resnest14d", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-resnest14d", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-resnest14d", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)
    # Cardinality 2, radix 4, dilated: its random encoder's features reach ~800 at stride 16,
    # where smp's own float32 is ~1e-4 of that off float64 (measured): a looser bound.
    specs = [("DeepLabV3Plus", "deeplabv3plus", ".pth", 2, "tu-resnest50d_4s2x40d", {})]
    (tmp_path / "grouped").mkdir()
    check_parity(tmp_path / "grouped", monkeypatch, specs, (96, 128), rtol=1e-3)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "resnest50d"), ("deeplabv3plus", "DeepLabV3Plus", "resnest101e")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
