"""ConvNeXt encoders (timm's convnext_*, smp's tu-convnext_*): parameter counts, every
checkpoint key in timm's and smp's layouts, dilated output strides, pretrained weights, and
smp's encoder and its models on them with equal features and logits."""

import contextlib

import keras
import numpy as np
import pytest
from helpers import features_match_smp_encoder, unet_trains_saves_and_reloads
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo.build_context import shapes_only
from zoo.layers import ChannelMLP, LayerScale

# Trainable parameters of smp 0.6's tu-convnext_* encoders (sum of numel, printed by smp).
SMP_ENCODER_PARAMS = {
    "convnext_atto": 3_373_880,
    "convnext_femto": 4_832_016,
    "convnext_pico": 8_531_648,
    "convnext_nano": 14_951_280,
    "convnext_tiny": 27_818_592,
    "convnext_small": 49_453_152,
    "convnext_base": 87_564_416,
    "convnext_large": 196_227_264,
    "convnext_xlarge": 348_143_872,
}
# timm's variants that hold their MLPs as 1x1 convolutions (conv_mlp=True).
CONV_MLP = {"convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano"}
TINY = zoo.encoder_info("convnext_atto").tiny_config


def timm_shapes(dims, depths, conv_mlp, classes=0):
    """Key -> shape of timm's ``ConvNeXt`` (its code, written out), with a classifier head of
    `classes` outputs when given."""
    shapes = {"stem.0.weight": (dims[0], 3, 4, 4), "stem.0.bias": (dims[0],)}
    shapes["stem.1.weight"] = shapes["stem.1.bias"] = (dims[0],)
    for s, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        stage = f"stages.{s}"
        if s > 0:
            prev = dims[s - 1]
            shapes[f"{stage}.downsample.0.weight"] = (prev,)
            shapes[f"{stage}.downsample.0.bias"] = (prev,)
            shapes[f"{stage}.downsample.1.weight"] = (dim, prev, 2, 2)
            shapes[f"{stage}.downsample.1.bias"] = (dim,)
        for b in range(depth):
            block = f"{stage}.blocks.{b}"
            shapes[f"{block}.gamma"] = (dim,)
            shapes[f"{block}.conv_dw.weight"] = (dim, 1, 7, 7)
            shapes[f"{block}.conv_dw.bias"] = (dim,)
            shapes[f"{block}.norm.weight"] = shapes[f"{block}.norm.bias"] = (dim,)
            one = (1, 1) if conv_mlp else ()
            shapes[f"{block}.mlp.fc1.weight"] = (4 * dim, dim, *one)
            shapes[f"{block}.mlp.fc1.bias"] = (4 * dim,)
            shapes[f"{block}.mlp.fc2.weight"] = (dim, 4 * dim, *one)
            shapes[f"{block}.mlp.fc2.bias"] = (dim,)
    if classes:
        shapes["head.norm.weight"] = shapes["head.norm.bias"] = (dims[-1],)
        shapes["head.fc.weight"], shapes["head.fc.bias"] = (classes, dims[-1]), (classes,)
    return shapes


def _count(shapes):
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.startswith("head."))


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    from zoo.encoders.convnext import VARIANTS

    dims, depths = VARIANTS[name][:2]
    assert _count(timm_shapes(dims, depths, name in CONV_MLP)) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    got = sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)
    assert got == SMP_ENCODER_PARAMS[name]


@pytest.mark.parametrize(
    "output_stride, dilations",
    [(32, (1, 1, 1, 1)), (16, (1, 1, 1, 2)), (8, (1, 1, 2, 4))],
)
def test_output_strides_dilate_the_last_stages_as_timm(output_stride, dilations):
    encoder = zoo.create_encoder(
        "convnext_tiny", input_shape=(64, 96, 3), output_stride=output_stride, **TINY
    )
    strides = [s for s in (4, 8, 16, 32) if s <= output_stride]
    assert sorted(encoder.output) == strides
    for s in strides:
        assert encoder.output[s].shape[1:3] == (64 // s, 96 // s)
    assert encoder.output[output_stride].shape[-1] == 32  # the last stage, at that stride
    got = [encoder.get_layer(f"encoder_stage{s}_block0_conv_dw").dilation_rate for s in range(4)]
    assert got == [(d, d) for d in dilations]
    # timm's downsampling of a dilated stage: stride 1, its own dilation 1 then 2.
    downsample = [encoder.get_layer(f"encoder_stage{s}_downsample_conv") for s in (1, 2, 3)]
    want = {32: [2, 2, 2], 16: [2, 2, 1], 8: [2, 1, 1]}[output_stride]
    assert [layer.strides[0] for layer in downsample] == want
    if output_stride == 8:
        assert downsample[2].dilation_rate == (2, 2)


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    # atto holds its MLPs as 1x1 convolutions (out, in, 1, 1), tiny as linear layers.
    shapes = timm_shapes(TINY["dims"], TINY["depths"], name in CONV_MLP, classes=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    checks = [
        ("encoder_stem_conv", "kernel", "stem.0.weight", (2, 3, 1, 0)),
        ("encoder_stem_norm", "gamma", "stem.1.weight", None),
        ("encoder_stage2_downsample_norm", "beta", "stages.2.downsample.0.bias", None),
        ("encoder_stage3_downsample_conv", "kernel", "stages.3.downsample.1.weight", (2, 3, 1, 0)),
        ("encoder_stage1_block0_conv_dw", "kernel", "stages.1.blocks.0.conv_dw.weight", "dw"),
        ("encoder_stage2_block0_norm", "gamma", "stages.2.blocks.0.norm.weight", None),
        ("encoder_stage3_block0_mlp", "fc1_kernel", "stages.3.blocks.0.mlp.fc1.weight", "fc"),
        ("encoder_stage1_block0_mlp", "fc2_kernel", "stages.1.blocks.0.mlp.fc2.weight", "fc"),
        ("encoder_stage0_block0_mlp", "fc2_bias", "stages.0.blocks.0.mlp.fc2.bias", None),
        ("encoder_stage3_block0_gamma", "gamma", "stages.3.blocks.0.gamma", None),
    ]
    for layer, variable, key, order in checks:
        got = np.asarray(getattr(model.get_layer(layer), variable))
        want = state[key]
        if order == "dw":  # (C, 1, 7, 7) -> (7, 7, C, 1)
            want = want.transpose(2, 3, 0, 1)
        elif order == "fc":  # (out, in[, 1, 1]) -> (in, out)
            want = want.reshape(want.shape[:2]).T
        elif order:
            want = want.transpose(order)
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert len(model.variables) == len(shapes) - 4  # all but the classifier head's


def test_smp_layout_loads_as_the_timm_layout(tmp_path):
    # An smp model's file: timm's features-only names (stem_0, stages_1) under encoder.model.
    shapes = timm_shapes(TINY["dims"], TINY["depths"], False)
    state = identifiable_state_dict(shapes)
    timm_path, smp_path = tmp_path / "timm.safetensors", tmp_path / "smp.safetensors"
    save_file(state, str(timm_path))
    smp_state = {
        "encoder.model." + k.replace("stem.", "stem_").replace("stages.", "stages_"): v
        for k, v in state.items()
    }
    smp_state["decoder.blocks.0.conv1.0.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    save_file(smp_state, str(smp_path))
    nets = [
        zoo.create_encoder("convnext_tiny", input_shape=(32, 32, 3), weights=str(p), **TINY)
        for p in (timm_path, smp_path)
    ]
    for a, b in zip(nets[0].weights, nets[1].weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_imagenet_weights_are_timms_default_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    sources = zoo.pretrained.sources("convnext_tiny")
    assert sources["imagenet"].url == sources["in12k_ft_in1k"].url  # timm's default tag
    assert "timm/convnext_tiny.fb_in22k_ft_in1k/" in sources["fb_in22k_ft_in1k"].url
    state = identifiable_state_dict(timm_shapes(TINY["dims"], TINY["depths"], False, 1000))
    path = tmp_path / "weights" / "timm" / "convnext_tiny.in12k_ft_in1k" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("convnext_tiny", input_shape=(32, 32, 1), weights="imagenet", **TINY)
    assert net.get_layer("encoder_gray_to_rgb") is not None
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stem_conv").kernel),
        state["stem.0.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"dims": (8, 16, 24)}, "dims"),
        ({"depths": (1, 0, 1, 1)}, "depths"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"layer_scale_init": 0.0}, "layer_scale_init"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"output_stride": 4}, "output_stride"),
        ({"weights": "in22k"}, "fb_in22k_ft_in1k"),  # the message lists the tags
    ],
)
def test_bad_arguments_name_the_value(kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder("convnext_tiny", input_shape=(32, 32, 3), **kwargs)


def test_layer_scale_scales_channels_and_round_trips():
    layer = LayerScale(0.5, name="ls")
    x = np.arange(12, dtype="float32").reshape(1, 2, 2, 3)
    np.testing.assert_allclose(np.asarray(layer(x)), 0.5 * x)
    layer.gamma.assign([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(layer(x)), x * np.array([1.0, 2.0, 3.0]))
    again = LayerScale.from_config(layer.get_config())
    assert again.get_config() == layer.get_config() and again.init_value == 0.5
    with pytest.raises(ValueError, match="init_value=-1"):
        LayerScale(-1)


@pytest.mark.parametrize("mode", ["infer", "train", "export"])
def test_channel_mlp_is_the_gelu_mlp(mode):
    import math

    from zoo.build_context import exporting

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    with exporting() if mode == "export" else contextlib.nullcontext():
        layer = ChannelMLP(8, units=6)
    layer.build(x.shape)
    w1, b1, w2, b2 = (rng.standard_normal(v.shape).astype(np.float32) for v in layer.weights)
    layer.set_weights([w1, b1, w2, b2])
    h = x @ w1 + b1
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
    got = np.asarray(layer(x, training=mode == "train"))
    np.testing.assert_allclose(got, h @ w2 + b2, rtol=1e-5, atol=1e-5)
    again = ChannelMLP.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="hidden_units=0"):
        ChannelMLP(0)


def test_drop_path_rates_grow_linearly_as_timms():
    encoder = zoo.create_encoder(
        "convnext_atto", input_shape=(32, 32, 3), drop_path_rate=0.3,
        dims=(8, 8, 8, 8), depths=(1, 1, 2, 1),
    )  # fmt: skip
    # timm: linspace(0, 0.3, 5) over the blocks; the first (rate 0) has no DropPath.
    rates = [0.075, 0.15, 0.225, 0.3]
    names = ["stage1_block0", "stage2_block0", "stage2_block1", "stage3_block0"]
    for name, rate in zip(names, rates, strict=True):
        assert encoder.get_layer(f"encoder_{name}_drop_path").rate == pytest.approx(rate)
    assert "encoder_stage0_block0_drop_path" not in {la.name for la in encoder.layers}


def test_unet_trains_saves_and_reloads(tmp_path):
    # (Not a block's MLP: its gradient is scaled by the layer scale, 1e-6 at the start.)
    unet_trains_saves_and_reloads(tmp_path, "convnext_atto", "encoder_stage2_downsample_conv")


def test_mixed_bfloat16_features_close_to_float32():
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    full = zoo.create_encoder("convnext_atto", input_shape=(32, 32, 3), **TINY)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        half = zoo.create_encoder("convnext_atto", input_shape=(32, 32, 3), **TINY)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    half.set_weights(full.get_weights())
    want, got = np.asarray(full(x)[32]), np.asarray(half(x)[32], dtype=np.float32)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    # atto: 1x1-convolution MLPs in timm; tiny: linear ones.
    features_match_smp_encoder(tmp_path, name, smp_name=f"tu-{name}", strides=(4, 8, 16, 32))


@pytest.mark.slow  # eleven smp models in a torch interpreter, ~1 min on 2 cores
@requires_reference("torch", "segmentation_models_pytorch")
def test_every_smp_architecture_on_convnext_ports_with_equal_logits(tmp_path, monkeypatch):
    # The encoder has no stride-2 level (smp's is an empty map): every decoder's handling of
    # it, DeepLabV3's output stride 8 and DeepLabV3Plus' 16 (dilated stages) included. 128
    # pixels: smp's PAN pools the stride-32 map by 8.
    archs = {
        "Unet": "unet", "UnetPlusPlus": "unetplusplus", "MAnet": "manet",
        "Linknet": "linknet", "FPN": "fpn", "PSPNet": "pspnet", "PAN": "pan",
        "DeepLabV3": "deeplabv3", "DeepLabV3Plus": "deeplabv3plus", "UPerNet": "upernet",
        "Segformer": "segformer",
    }  # fmt: skip
    specs = [
        (arch, ours, ".safetensors" if i % 2 else ".pth", 2, "tu-convnext_atto", {})
        for i, (arch, ours) in enumerate(archs.items())
    ]
    check_parity(tmp_path, monkeypatch, specs, (128, 128))


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    from helpers import assert_params_equal_smp

    specs = [("unet", "Unet", "convnext_tiny"), ("fpn", "FPN", "convnext_small")]
    specs += [
        ("upernet", "UPerNet", "convnext_base"),
        ("deeplabv3plus", "DeepLabV3Plus", "convnext_nano"),
    ]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
