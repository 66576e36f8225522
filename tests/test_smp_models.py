"""The smp-parity models beyond the registry-driven checks: their documented options, encoders
without some strides, PAN's use of the stage before its dilated one, and the gradient of
smp's redundant conv biases."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import build_tiny, count_model_trainable, count_trainable, fixed_batch, pixel_loss

import zoo

NEW = ["deeplabv3", "deeplabv3plus", "linknet", "manet", "pan", "pspnet", "unetplusplus", "upernet"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("pspnet", {"encoder_depth": 5, "output_stride": 8}),
        ("pspnet", {"encoder_depth": 4}),
        ("pan", {"output_stride": 8, "decoder_interpolation": "nearest"}),
        ("pan", {"output_stride": 32}),
        ("manet", {"pab_attention": "standard"}),
        ("upernet", {"feature_norm": False}),
        ("deeplabv3", {"output_stride": 16, "atrous_rates": [6, 12, 18], "aspp_separable": True}),
        ("deeplabv3plus", {"output_stride": 8, "atrous_rates": [6, 12, 18]}),
        ("linknet", {"encoder_depth": 4, "prefinal_channels": 8}),
        ("unetplusplus", {"decoder_channels": [16, 8, 8]}),
    ],
)
def test_documented_options_build_and_run(name, kwargs):
    model = build_tiny(name, **kwargs)
    d = model.divisor
    out = model(np.random.default_rng(0).random((1, 2 * d, 3 * d, 3), dtype=np.float32))
    assert tuple(out.shape) == (1, 2 * d, 3 * d, 2)
    assert np.all(np.isfinite(np.asarray(out)))
    clone = type(model).from_config(model.get_config())
    assert count_trainable(clone) == count_trainable(model)


def test_option_parameter_differences():
    # Closed forms: what each option adds or removes with resnet34 and one class.
    base = {n: count_model_trainable(n) for n in ("pspnet", "upernet", "pan")}
    # The paper's PSPNet: the full ResNet-34 encoder (21,284,672) and a pyramid on 512
    # channels (four 512->128 1x1 convs, BN on three, bias on the 1x1 grid), a 1024->512
    # fusion with BN and the 3x3 head.
    paper = 21_284_672 + 4 * 512 * 128 + 128 + 3 * 256 + 1024 * 512 + 1024 + 512 * 9 + 1
    assert count_model_trainable("pspnet", encoder_depth=5, output_stride=8) == paper
    # UPerNet's LayerNorms: gamma and beta over 64 + 128 + 256 + 512 channels.
    no_norm = count_model_trainable("upernet", feature_norm=False)
    assert base["upernet"] - no_norm == 2 * (64 + 128 + 256 + 512)
    # PAN's pre-BN biases: FPA 32 + 32 + 6 x 1, each GAU 32 + 32.
    no_bias = count_model_trainable("pan", decoder_conv_bias=False)
    assert base["pan"] - no_bias == 32 + 32 + 6 + 3 * 64
    # Options without weights of their own leave the count alone.
    assert count_model_trainable("manet", pab_attention="standard") == 31_783_633
    assert count_model_trainable("deeplabv3plus", atrous_rates=(6, 12, 18)) == 22_437_457


@pytest.mark.parametrize(
    "name, kwargs, bad",
    [
        ("pspnet", {"output_stride": 16}, "output_stride=16"),
        ("pspnet", {"encoder_depth": 2}, "encoder_depth=2"),
        ("pan", {"output_stride": 4}, "output_stride=4"),
        ("pan", {"decoder_interpolation": "bicubic"}, "decoder_interpolation='bicubic'"),
        ("manet", {"pab_attention": "global"}, "pab_attention='global'"),
        ("deeplabv3", {"atrous_rates": [6, 12]}, r"atrous_rates=\[6, 12\]"),
        ("deeplabv3plus", {"dropout": 1.0}, "dropout=1.0"),
        ("upernet", {"feature_norm": "yes"}, "feature_norm='yes'"),
        ("linknet", {"encoder_depth": True}, "encoder_depth=True"),
        ("deeplabv3", {"encoder_kwargs": {"output_stride": 8}}, "encoder_kwargs="),
    ],
)
def test_bad_arguments_are_named(name, kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        build_tiny(name, **kwargs)


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus", "pan"])
def test_dilation_needs_an_encoder_that_can(name):
    with pytest.raises(ValueError, match=r"'keras_mobilenetv2' supports output strides \[32\]"):
        build_tiny(name, encoder="keras_mobilenetv2", encoder_kwargs={"alpha": 0.35})


def _strided_encoder(strides):
    def builder(x, **kwargs):
        features = {}
        for i, stride in enumerate((2, 4, 8, 16, 32)):
            x = keras.layers.Conv2D(4 * (i + 1), 3, strides=2, padding="same", name=f"fake{i}")(x)
            if stride in strides:
                features[stride] = x
        return features

    return builder


@pytest.fixture
def fake_encoders(monkeypatch):
    """`fake_no2` (strides 4-32, like ConvNeXt) and `fake_4_8` (strides 4 and 8 only),
    registered for one test (the registry's entries are restored afterwards)."""
    registry = zoo.registry.ENCODERS
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    for name, strides in (("fake_no2", (4, 8, 16, 32)), ("fake_4_8", (4, 8))):
        zoo.register_encoder(name, strides=strides, tiny_config={})(_strided_encoder(strides))


@pytest.mark.parametrize("name", ["unetplusplus", "linknet", "manet", "upernet", "pspnet"])
def test_missing_stride_is_named(name, fake_encoders):
    with pytest.raises(ValueError, match=r"needs encoder features at strides .* provides \[4, 8\]"):
        zoo.create_model(
            name, encoder="fake_4_8", **({"encoder_depth": 4} if name == "pspnet" else {})
        )


@pytest.mark.parametrize("name", ["unetplusplus", "linknet", "manet"])
def test_encoder_without_stride_2(name, fake_encoders):
    kwargs = {k: v for k, v in zoo.model_info(name).tiny_config.items() if "encoder" not in k}
    model = zoo.create_model(name, num_classes=2, encoder="fake_no2", **kwargs)
    assert model(np.zeros((1, 64, 96, 3), np.float32)).shape == (1, 64, 96, 2)
    names = {layer.name for layer in model.layers}
    if name == "unetplusplus":  # the stride-2 column keeps only its row-0 node (smp)
        assert "decoder_x_0_3_conv1_conv" in names
        assert not {"decoder_x_1_3_conv1_conv", "decoder_x_3_3_conv1_conv"} & names
    if name == "linknet":  # no skip added at stride 2
        assert "decoder_blocks_3_add" not in names and "decoder_blocks_2_add" in names
    if name == "manet":  # a plain block where the skip is missing
        assert "decoder_blocks_3_se_ll_pool" not in names and "decoder_blocks_2_se_ll_pool" in names


def test_pan_fuses_the_stage_before_the_dilated_one():
    # smp's PAN at output stride 16 feeds the third stage's output (stride 16, undilated) to
    # gau3 and the dilated last stage to the FPA.
    model = build_tiny("pan")
    gau3 = model.get_layer("decoder_gau3_conv2_conv").input
    fpa = model.get_layer("decoder_fpa_mid_conv").input
    assert gau3 is model.get_layer("encoder_stage3_block2_relu").output
    assert fpa is model.get_layer("encoder_stage4_block2_relu").output
    # At output stride 8 gau2 gets the second stage's output (dilation keeps the names).
    model = build_tiny("pan", output_stride=8)
    gau2 = model.get_layer("decoder_gau2_conv2_conv").input
    assert gau2 is model.get_layer("encoder_stage2_block2_relu").output


def test_pan_default_biases_before_batch_norm_get_no_gradient():
    # smp's PAN convs have biases although a BN follows each: in training the BN subtracts
    # the batch mean, so their gradient is zero (in inference they do shift the output).
    # Every other weight learns.
    keras.utils.set_random_seed(0)
    model = build_tiny("pan", decoder_conv_bias=True)
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    with tf.GradientTape() as tape:
        loss = pixel_loss(masks, model(images, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads)
    for v, g in zip(model.trainable_variables, grads):
        g = np.abs(np.asarray(g)).max()
        pre_bn_bias = v.path.startswith("decoder_") and v.path.endswith("_conv/bias")
        if pre_bn_bias:
            # zero but for float32 round-off of the BN backward's batch sums (~1e-6 relative
            # with oneDNN's kernel; a learning weight's is of the order of the scale)
            assert g <= 1e-5 * scale, v.path
        else:
            assert g > 0, v.path


def test_mixed_precision_logits_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for name in NEW:
            model = build_tiny(name)
            d = model.divisor
            out = model(np.zeros((1, 2 * d, 2 * d, 3), np.float32))
            assert out.dtype == "float32", name
    finally:
        keras.mixed_precision.set_global_policy("float32")
