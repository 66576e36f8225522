"""Res2Net / Res2NeXt encoders (timm's res2net* / res2next50, smp's tu- and timm- names):
parameter counts, every checkpoint key in timm's and smp's layouts (plain and deep-stem ``d``
variants), timm's pools, dilated output strides, pretrained weights, and smp's encoders and
models on them with equal features and logits."""

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
from zoo.layers import ChannelSplit

# Trainable parameters of smp 0.6's tu-* encoders (sum of numel, printed by smp).
SMP_ENCODER_PARAMS = {
    "res2net50_26w_4s": 23_650_120, "res2net50_26w_6s": 35_002_448,
    "res2net50_26w_8s": 46_354_776, "res2net50_48w_2s": 23_238_304,
    "res2net50_14w_8s": 23_010_816, "res2net101_26w_4s": 43_157_688,
    "res2next50": 22_622_464, "res2net50d": 23_669_352, "res2net101d": 43_176_920,
}  # fmt: skip
# timm's model arguments: layers, base_width, scale, cardinality, deep stem / avg_down.
TIMM_ARGS = {
    "res2net50_26w_4s": ([3, 4, 6, 3], 26, 4, 1, False),
    "res2net50_26w_6s": ([3, 4, 6, 3], 26, 6, 1, False),
    "res2net50_26w_8s": ([3, 4, 6, 3], 26, 8, 1, False),
    "res2net50_48w_2s": ([3, 4, 6, 3], 48, 2, 1, False),
    "res2net50_14w_8s": ([3, 4, 6, 3], 14, 8, 1, False),
    "res2net101_26w_4s": ([3, 4, 23, 3], 26, 4, 1, False),
    "res2next50": ([3, 4, 6, 3], 4, 4, 8, False),
    "res2net50d": ([3, 4, 6, 3], 26, 4, 1, True),
    "res2net101d": ([3, 4, 23, 3], 26, 4, 1, True),
}
TINY = zoo.encoder_info("res2net50_26w_4s").tiny_config


def timm_shapes(layers, base_width, scale, cardinality, deep, planes=(64, 128, 256, 512), fc=0):
    """Key -> shape of timm's ResNet with ``Bottle2neck`` blocks (its code, written out)."""
    shapes = {}

    if deep:
        shapes["conv1.0.weight"] = (32, 3, 3, 3)
        shapes |= batch_norm_shapes("conv1.1", 32)
        shapes["conv1.3.weight"] = (32, 32, 3, 3)
        shapes |= batch_norm_shapes("conv1.4", 32)
        shapes["conv1.6.weight"] = (64, 32, 3, 3)
    else:
        shapes["conv1.weight"] = (64, 3, 7, 7)
    shapes |= batch_norm_shapes("bn1", 64)
    cin = 64
    for s, (n, p) in enumerate(zip(layers, planes), 1):
        width, out = int(np.floor(p * base_width / 64)) * cardinality, p * 4
        for b in range(n):
            k = f"layer{s}.{b}"
            shapes[f"{k}.conv1.weight"] = (width * scale, cin, 1, 1)
            shapes |= batch_norm_shapes(f"{k}.bn1", width * scale)
            for i in range(max(1, scale - 1)):
                shapes[f"{k}.convs.{i}.weight"] = (width, width // cardinality, 3, 3)
                shapes |= batch_norm_shapes(f"{k}.bns.{i}", width)
            shapes[f"{k}.conv3.weight"] = (out, width * scale, 1, 1)
            shapes |= batch_norm_shapes(f"{k}.bn3", out)
            if b == 0:
                first = 1 if deep else 0  # avg_down: downsample.0 is the (parameter-free) pool
                shapes[f"{k}.downsample.{first}.weight"] = (out, cin, 1, 1)
                shapes |= batch_norm_shapes(f"{k}.downsample.{first + 1}", out)
            cin = out
    if fc:
        shapes["fc.weight"], shapes["fc.bias"] = (fc, cin), (fc,)
    return shapes


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    assert trainable_params(timm_shapes(*TIMM_ARGS[name])) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    got = sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)
    assert got == SMP_ENCODER_PARAMS[name]
    assert [encoder.output[s].shape[-1] for s in (2, 4, 8, 16, 32)] == [64, 256, 512, 1024, 2048]


@pytest.mark.parametrize("name", ["res2next50", "res2net50d"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    layers, base_width, scale, cardinality, deep = TIMM_ARGS[name]
    shapes = timm_shapes(TINY["depths"], base_width, scale, cardinality, deep, TINY["planes"], 10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    checks = [
        ("encoder_layer1_0_conv1_conv", "kernel", "layer1.0.conv1.weight"),
        ("encoder_layer2_0_convs2_conv", "kernel", "layer2.0.convs.2.weight"),
        ("encoder_layer3_0_convs0_bn", "moving_mean", "layer3.0.bns.0.running_mean"),
        ("encoder_layer4_0_conv3_bn", "gamma", "layer4.0.bn3.weight"),
    ]
    if deep:
        checks += [("encoder_stem1_conv", "kernel", "conv1.0.weight")]
        checks += [("encoder_stem2_bn", "beta", "conv1.4.bias")]
        checks += [("encoder_stem3_bn", "moving_variance", "bn1.running_var")]
        checks += [("encoder_layer2_0_downsample_conv", "kernel", "layer2.0.downsample.1.weight")]
        checks += [("encoder_layer1_0_downsample_bn", "beta", "layer1.0.downsample.2.bias")]
    else:
        checks += [("encoder_stem_conv", "kernel", "conv1.weight")]
        checks += [("encoder_layer2_0_downsample_conv", "kernel", "layer2.0.downsample.0.weight")]
        checks += [("encoder_layer3_0_downsample_bn", "beta", "layer3.0.downsample.1.bias")]
    for layer, variable, key in checks:
        want = state[key].transpose(2, 3, 1, 0) if state[key].ndim == 4 else state[key]
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 2


def test_smp_file_loads_as_the_timm_file(tmp_path):
    state = identifiable_state_dict(timm_shapes((1, 1, 1, 1), 26, 4, 1, False, TINY["planes"]))
    smp_file_loads_as_timm_file(
        tmp_path, "res2net50_26w_4s", state, lambda k: "encoder.model." + k, **TINY
    )


def test_first_block_pools_its_last_scale_counting_the_padding():
    # timm's AvgPool2d(3, stride, padding=1) counts the zero padding: at a corner the
    # window holds 4 of 9 pixels, so a map of ones averages to 4/9 there and 1 inside.
    net = zoo.create_encoder("res2net50_26w_4s", input_shape=(32, 32, 3), **TINY)
    split = net.get_layer("encoder_layer2_0_split")
    assert isinstance(split, ChannelSplit)
    pad, pool = net.get_layer("encoder_layer2_0_pool_pad"), net.get_layer("encoder_layer2_0_pool")
    assert pad.input is split.output[-1]  # the last scale
    ones = np.ones((1, 8, 8, int(split.output[-1].shape[-1])), np.float32)
    pooled = np.asarray(pool(pad(ones)))
    assert pooled.shape[1:3] == (4, 4)  # stride 2 with padding 1: ceil(8 / 2)
    np.testing.assert_allclose(pooled[0, 0, 0], 4 / 9, rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 1, 1], 1.0, rtol=1e-6)


def test_channel_split_cuts_consecutive_channels():
    x = np.arange(2 * 3 * 3 * 12, dtype=np.float32).reshape(2, 3, 3, 12)
    parts = ChannelSplit(4)(x)
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(np.asarray(part), x[..., 3 * i : 3 * i + 3])
    assert ChannelSplit.from_config(ChannelSplit(4).get_config()).num_splits == 4
    with pytest.raises(ValueError, match="num_splits"):
        ChannelSplit(1)
    with pytest.raises(ValueError, match="divisible"):
        ChannelSplit(5)(x)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_as_timm(output_stride):
    net = zoo.create_encoder(
        "res2net50d", input_shape=(64, 96, 3), output_stride=output_stride,
        depths=(1, 1, 2, 2), planes=(16, 32, 48, 64),
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(net.output) == strides
    for s in strides:
        assert net.output[s].shape[1:3] == (64 // s, 96 // s)

    def rate(stage, block, conv):
        return net.get_layer(f"encoder_layer{stage}_{block}_convs{conv}_conv").dilation_rate[0]

    # (stage, block, scale conv) -> rate. timm: a newly dilated stage's first block keeps
    # the previous rate.
    want = {
        32: {(3, 0, 0): 1, (3, 1, 0): 1, (4, 0, 0): 1, (4, 1, 1): 1},
        16: {(3, 0, 0): 1, (3, 1, 0): 1, (4, 0, 0): 1, (4, 1, 1): 2},
        8: {(3, 0, 0): 1, (3, 1, 0): 2, (4, 0, 0): 2, (4, 1, 1): 4},
    }[output_stride]  # fmt: skip
    assert {k: rate(*k) for k in want} == want
    # avg_down in a dilated stage: a 2x2 stride-1 pool after one zero row / column.
    names = {layer.name for layer in net.layers}
    assert ("encoder_layer4_0_downsample_pool_pad" in names) == (output_stride < 32)


def test_imagenet_weights_are_timms_in1k_from_the_cache(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("res2next50")
    assert sources["imagenet"].url == sources["in1k"].url
    assert "timm/res2next50.in1k" in sources["imagenet"].url
    _, base_width, scale, cardinality, deep = TIMM_ARGS["res2next50"]
    shapes = timm_shapes(TINY["depths"], base_width, scale, cardinality, deep, TINY["planes"], 1000)
    state = identifiable_state_dict(shapes)
    net = from_timm_cache(tmp_path, monkeypatch, "res2next50", "in1k", state, **TINY)
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_layer1_0_conv1_conv").kernel),
        state["layer1.0.conv1.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"depths": (1, 1, 1)}, "depths"),
        ({"planes": (16, 32, 48, 0)}, "planes"),
        ({"planes": (2, 32, 48, 64)}, "planes"),  # 2 * 26 / 64 rounds to no channel
        ({"output_stride": 4}, "output_stride"),
        ({"weights": "in21k"}, "in1k"),  # the message lists the names
    ],
)
def test_bad_arguments_name_the_value(kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder("res2net50_26w_4s", input_shape=(32, 32, 3), **{**TINY, **kwargs})


@pytest.mark.parametrize("name", ["res2next50", "res2net50d"])
def test_unet_trains_saves_and_reloads(tmp_path, name):
    unet_trains_saves_and_reloads(tmp_path, name, "encoder_layer2_0_convs1_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", ["res2next50", "res2net50d"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name, smp_name=f"tu-{name}")


@pytest.mark.slow  # four ResNet-50-sized smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_res2nets_port_with_equal_logits(tmp_path, monkeypatch):
    # smp 0.6's tu- names and its older timm-res2net* (mapped to tu-res2net*); DeepLabV3 at
    # output stride 8 (with the d variant's dilated average-pool shortcuts), DeepLabV3Plus 16.
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-res2net50_14w_8s", {}),
        ("FPN", "fpn", ".safetensors", 1, "tu-res2net50_48w_2s", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-res2net50d", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-res2next50", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "res2net50_26w_4s"), ("fpn", "FPN", "res2net101d")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
