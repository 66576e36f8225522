"""EfficientNetV2 encoders (timm's tf_efficientnetv2_* / efficientnetv2_*, smp's tu- names):
parameter counts, every checkpoint key in timm's and smp's layouts, both paddings, dilated
output strides, pretrained weights, and smp's encoders and models on them with equal
features and logits."""

import math

import numpy as np
import pytest
from helpers import (
    assert_params_equal_smp,
    batch_norm_shapes,
    divisible,
    features_match_smp_encoder,
    from_timm_cache,
    smp_file_loads_as_timm_file,
    stem_top_left_tap,
    trainable_params,
    unet_trains_saves_and_reloads,
)
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo.build_context import shapes_only

# Trainable parameters of smp 0.6's tu-* encoders (sum of numel, printed by smp).
SMP_ENCODER_PARAMS = {
    "tf_efficientnetv2_b0": 5_610_384, "tf_efficientnetv2_b1": 6_611_732,
    "tf_efficientnetv2_b2": 8_391_406, "tf_efficientnetv2_b3": 12_461_982,
    "tf_efficientnetv2_s": 19_847_248, "tf_efficientnetv2_m": 52_200_436,
    "tf_efficientnetv2_l": 116_412_512, "tf_efficientnetv2_xl": 206_017_048,
    "efficientnetv2_rw_t": 12_409_348, "efficientnetv2_rw_s": 21_657_288,
    "efficientnetv2_rw_m": 50_373_282, "efficientnetv2_s": 19_847_248,
    "efficientnetv2_m": 52_200_436, "efficientnetv2_l": 116_412_512,
    "efficientnetv2_xl": 206_017_048,
}  # fmt: skip
# smp's out_channels (stride 2 ... 32).
SMP_CHANNELS = {
    "tf_efficientnetv2_b0": (16, 32, 48, 112, 192),
    "tf_efficientnetv2_b3": (16, 40, 56, 136, 232),
    "tf_efficientnetv2_m": (24, 48, 80, 176, 512),
    "efficientnetv2_rw_t": (24, 40, 48, 128, 208),
    "efficientnetv2_rw_m": (32, 56, 80, 192, 328),
}
# timm's arch_def strings (timm/models/efficientnet.py), decoded independently of our plans,
# with the stem width and whether round_chs_fn rounds to the nearest (round_limit=0, B0-B3).
_S = [
    "cn_r2_k3_s1_e1_c24_skip",
    "er_r4_k3_s2_e4_c48",
    "er_r4_k3_s2_e4_c64",
    "ir_r6_k3_s2_e4_c128_se0.25",
    "ir_r9_k3_s1_e6_c160_se0.25",
    "ir_r15_k3_s2_e6_c256_se0.25",
]
TIMM_ARCH = {
    "base": (32, True, ["cn_r1_k3_s1_e1_c16_skip", "er_r2_k3_s2_e4_c32", "er_r2_k3_s2_e4_c48",
                        "ir_r3_k3_s2_e4_c96_se0.25", "ir_r5_k3_s1_e6_c112_se0.25",
                        "ir_r8_k3_s2_e6_c192_se0.25"]),
    "s": (24, False, _S),
    "rw_s": (24, False, ["er_r2_k3_s1_e1_c24", *_S[1:-1], "ir_r15_k3_s2_e6_c272_se0.25"]),
    "m": (24, False, ["cn_r3_k3_s1_e1_c24_skip", "er_r5_k3_s2_e4_c48", "er_r5_k3_s2_e4_c80",
                      "ir_r7_k3_s2_e4_c160_se0.25", "ir_r14_k3_s1_e6_c176_se0.25",
                      "ir_r18_k3_s2_e6_c304_se0.25", "ir_r5_k3_s1_e6_c512_se0.25"]),
    "l": (32, False, ["cn_r4_k3_s1_e1_c32_skip", "er_r7_k3_s2_e4_c64", "er_r7_k3_s2_e4_c96",
                      "ir_r10_k3_s2_e4_c192_se0.25", "ir_r19_k3_s1_e6_c224_se0.25",
                      "ir_r25_k3_s2_e6_c384_se0.25", "ir_r7_k3_s1_e6_c640_se0.25"]),
    "xl": (32, False, ["cn_r4_k3_s1_e1_c32_skip", "er_r8_k3_s2_e4_c64", "er_r8_k3_s2_e4_c96",
                       "ir_r16_k3_s2_e4_c192_se0.25", "ir_r24_k3_s1_e6_c256_se0.25",
                       "ir_r32_k3_s2_e6_c512_se0.25", "ir_r8_k3_s1_e6_c640_se0.25"]),
}  # fmt: skip
# timm's generator arguments of each variant: (arch, channel multiplier, depth multiplier).
TIMM_VARIANTS = {
    "tf_efficientnetv2_b0": ("base", 1.0, 1.0), "tf_efficientnetv2_b1": ("base", 1.0, 1.1),
    "tf_efficientnetv2_b2": ("base", 1.1, 1.2), "tf_efficientnetv2_b3": ("base", 1.2, 1.4),
    "efficientnetv2_rw_t": ("s", 0.8, 0.9), "efficientnetv2_rw_s": ("rw_s", 1.0, 1.0),
    "efficientnetv2_rw_m": ("rw_s", 1.2, (1.2,) * 4 + (1.6,) * 2),
}  # fmt: skip
for _size in ("s", "m", "l", "xl"):
    TIMM_VARIANTS[f"efficientnetv2_{_size}"] = TIMM_VARIANTS[f"tf_efficientnetv2_{_size}"] = (
        _size, 1.0, 1.0,
    )  # fmt: skip


def timm_shapes(name, width_scale=1.0, head=0):
    """Key -> shape of timm's EfficientNetV2 `name` (its builder, written out), its channel
    multiplier times `width_scale`."""
    arch, mult, depth = TIMM_VARIANTS[name]
    mult *= width_scale
    stem, nearest, strings = TIMM_ARCH[arch]
    depths = depth if isinstance(depth, tuple) else (depth,) * len(strings)
    shapes = {}

    def conv(key, out, cin, k, groups=1, bias=False):
        shapes[f"{key}.weight"] = (out, cin // groups, k, k)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    def bn(key, channels):
        shapes.update(batch_norm_shapes(key, channels))

    cin = divisible(stem * mult, limit=0.0 if nearest else 0.9)
    conv("conv_stem", cin, 3, 3)
    bn("bn1", cin)
    for s, (text, d) in enumerate(zip(strings, depths)):
        opts = {o[:2] if o.startswith("se") else o[0]: o[2:] if o.startswith("se") else o[1:]
                for o in text.split("_")[1:] if o != "skip"}  # fmt: skip
        out = divisible(int(opts["c"]) * mult, limit=0.0 if nearest else 0.9)
        kind, e = text[:2], float(opts["e"])
        for i in range(math.ceil(int(opts["r"]) * d)):
            p = f"blocks.{s}.{i}"
            mid = divisible(cin * e)
            if kind == "cn":
                conv(f"{p}.conv", out, cin, 3)
                bn(f"{p}.bn1", out)
            elif kind == "er":
                conv(f"{p}.conv_exp", mid, cin, 3)
                bn(f"{p}.bn1", mid)
                conv(f"{p}.conv_pwl", out, mid, 1)
                bn(f"{p}.bn2", out)
            else:
                conv(f"{p}.conv_pw", mid, cin, 1)
                bn(f"{p}.bn1", mid)
                conv(f"{p}.conv_dw", mid, mid, 3, groups=mid)
                bn(f"{p}.bn2", mid)
                rd = round(mid * (float(opts["se"]) / e))  # SE from the block's input width
                conv(f"{p}.se.conv_reduce", rd, mid, 1, bias=True)
                conv(f"{p}.se.conv_expand", mid, rd, 1, bias=True)
                conv(f"{p}.conv_pwl", out, mid, 1)
                bn(f"{p}.bn3", out)
            cin = out
    if head:
        conv("conv_head", 1280, cin, 1)
        bn("bn2", 1280)
        shapes["classifier.weight"], shapes["classifier.bias"] = (head, 1280), (head,)
    return shapes


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    shapes = timm_shapes(name)
    assert trainable_params(shapes) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == trainable_params(
        shapes
    )
    if name in SMP_CHANNELS:
        assert tuple(encoder.output[s].shape[-1] for s in (2, 4, 8, 16, 32)) == SMP_CHANNELS[name]


def _check_keys(model, state, checks):
    for layer, variable, key in checks:
        want = state[key]
        if want.ndim == 4:  # depthwise OIHW (C, 1, k, k) -> (k, k, C, 1), else HWIO
            want = want.transpose(2, 3, 0, 1) if "conv_dw" in key else want.transpose(2, 3, 1, 0)
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize(
    "name, width_scale",
    [
        ("tf_efficientnetv2_b0", 1.0),  # conv-BN-SiLU, fused and SE blocks, B0 at full size
        ("efficientnetv2_rw_s", 0.25),  # a fused first stage; timm's x0.25 keys
    ],
)
def test_every_key_lands_in_its_variable(tmp_path, name, width_scale):
    shapes = timm_shapes(name, width_scale, head=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None,
        width_scale=width_scale,
    )  # fmt: skip
    checks = [
        ("encoder_stem_conv", "kernel", "conv_stem.weight"),
        ("encoder_stem_bn", "moving_mean", "bn1.running_mean"),
        ("encoder_block1_1_exp_conv", "kernel", "blocks.1.1.conv_exp.weight"),
        ("encoder_block2_0_exp_bn", "gamma", "blocks.2.0.bn1.weight"),
        ("encoder_block2_1_pwl_conv", "kernel", "blocks.2.1.conv_pwl.weight"),
        ("encoder_block1_0_pwl_bn", "moving_variance", "blocks.1.0.bn2.running_var"),
        ("encoder_block3_0_expand_conv", "kernel", "blocks.3.0.conv_pw.weight"),
        ("encoder_block3_2_dw_conv", "kernel", "blocks.3.2.conv_dw.weight"),
        ("encoder_block4_1_dw_bn", "beta", "blocks.4.1.bn2.bias"),
        ("encoder_block5_0_se_fc1", "kernel", "blocks.5.0.se.conv_reduce.weight"),
        ("encoder_block5_7_se_fc2", "bias", "blocks.5.7.se.conv_expand.bias"),
        ("encoder_block4_4_project_conv", "kernel", "blocks.4.4.conv_pwl.weight"),
        ("encoder_block3_1_project_bn", "moving_mean", "blocks.3.1.bn3.running_mean"),
    ]
    if name.startswith("tf_"):
        checks += [("encoder_block0_0_conv", "kernel", "blocks.0.0.conv.weight")]
        checks += [("encoder_block0_0_bn", "beta", "blocks.0.0.bn1.bias")]
    else:
        checks += [("encoder_block0_1_exp_conv", "kernel", "blocks.0.1.conv_exp.weight")]
        checks += [("encoder_block0_0_pwl_bn", "gamma", "blocks.0.0.bn2.weight")]
    _check_keys(model, state, checks)
    # every tensor but the head's and the batch counters has a variable
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 7


def test_smp_file_loads_as_the_timm_file(tmp_path):
    state = identifiable_state_dict(timm_shapes("efficientnetv2_rw_t", 0.25))
    smp_file_loads_as_timm_file(
        tmp_path, "efficientnetv2_rw_t", state, lambda k: "encoder.model." + k, width_scale=0.25
    )


TINY = {"width_scale": 0.25, "depth_scale": 0.25}  # both variants' tiny_config


@pytest.mark.parametrize("size", [32, 33])
def test_paddings_are_pytorchs_and_tensorflows(size):
    # PyTorch pads 1 on every side of a 3x3/2 conv: the top-left tap of output (0, 0) reads
    # padding. TensorFlow's "same" pads (0, 1) on an even size: it reads pixel (0, 0); on an
    # odd size (1, 1), like PyTorch.
    assert stem_top_left_tap("efficientnetv2_rw_t", size, **TINY) == 0.0
    assert stem_top_left_tap("tf_efficientnetv2_b0", size, **TINY) == (
        1.0 if size % 2 == 0 else 0.0
    )


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_as_timms_builder(output_stride):
    net = zoo.create_encoder(
        "tf_efficientnetv2_b0", input_shape=(64, 96, 3), output_stride=output_stride,
        width_scale=0.25,
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(net.output) == strides
    for s in strides:
        assert net.output[s].shape[1:3] == (64 // s, 96 // s)

    def conv(block):
        layer = net.get_layer(f"encoder_block{block}_conv")
        return layer.strides[0], layer.dilation_rate[0]

    # B0 downsamples in the fused blocks 1_0 (to 4) and 2_0 (to 8), in the inverted
    # residuals 3_0 (to 16) and 5_0 (to 32). The block that loses its stride keeps the old
    # rate; the ones after it take the new one.
    want = {
        32: {"2_0_exp": (2, 1), "3_0_dw": (2, 1), "3_1_dw": (1, 1), "5_0_dw": (2, 1),
             "5_7_dw": (1, 1)},
        16: {"2_0_exp": (2, 1), "3_0_dw": (2, 1), "4_4_dw": (1, 1), "5_0_dw": (1, 1),
             "5_1_dw": (1, 2), "5_7_dw": (1, 2)},
        8: {"2_0_exp": (2, 1), "2_1_exp": (1, 1), "3_0_dw": (1, 1), "3_1_dw": (1, 2),
            "4_4_dw": (1, 2), "5_0_dw": (1, 2), "5_1_dw": (1, 4)},
    }[output_stride]  # fmt: skip
    assert {b: conv(b) for b in want} == want


def test_named_weights_are_timms_tags_with_their_normalization(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("tf_efficientnetv2_b3")
    assert sources["imagenet"].url == sources["in21k_ft_in1k"].url  # timm's default tag
    assert set(sources) == {"imagenet", "in21k_ft_in1k", "in1k", "in21k"}
    assert set(zoo.pretrained.sources("tf_efficientnetv2_xl")) == {
        "imagenet", "in21k_ft_in1k", "in21k"
    }  # fmt: skip
    assert zoo.pretrained.sources("efficientnetv2_rw_m")["imagenet"].url.endswith(
        "timm/efficientnetv2_rw_m.agc_in1k/resolve/main/model.safetensors"
    )
    assert zoo.pretrained.sources("efficientnetv2_s") == {}  # timm has none
    imagenet = 1 / np.array([0.229, 0.224, 0.225])
    cases = [
        ("tf_efficientnetv2_b3", "in21k_ft_in1k", "imagenet", (2.0,) * 3),  # [-1, 1]
        ("tf_efficientnetv2_b3", "in1k", "in1k", imagenet),  # B3's ImageNet-1k run: ImageNet's
        ("tf_efficientnetv2_b0", "in1k", "imagenet", imagenet),
        ("efficientnetv2_rw_t", "ra2_in1k", "imagenet", imagenet),
    ]
    for name, tag, weights, scale in cases:
        state = identifiable_state_dict(timm_shapes(name, head=1000))
        net = from_timm_cache(tmp_path, monkeypatch, name, tag, state, weights)
        np.testing.assert_allclose(np.asarray(net.get_layer("encoder_preprocess").scale), scale)
        np.testing.assert_array_equal(
            np.asarray(net.get_layer("encoder_block3_0_expand_conv").kernel),
            state["blocks.3.0.conv_pw.weight"].transpose(2, 3, 1, 0),
        )
    # The S ... XL ports were trained on [-1, 1] images, ImageNet-1k ones included.
    for name in ("tf_efficientnetv2_s", "tf_efficientnetv2_l"):
        for source in zoo.pretrained.sources(name).values():
            assert source.normalization == zoo.pretrained.INCEPTION, name


@pytest.mark.parametrize(
    "name, kwargs, names",
    [
        ("tf_efficientnetv2_b0", {"width_scale": 0}, "width_scale"),
        ("tf_efficientnetv2_b0", {"depth_scale": -1}, "depth_scale"),
        ("tf_efficientnetv2_b0", {"output_stride": 4}, "output_stride"),
        ("efficientnetv2_rw_t", {"drop_path_rate": 1.5}, "drop_path_rate"),
        ("tf_efficientnetv2_s", {"weights": "in22k"}, "in21k_ft_in1k"),  # lists tags
        ("efficientnetv2_s", {"weights": "imagenet"}, "imagenet"),
    ],
)
def test_bad_arguments_name_the_value(name, kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder(name, input_shape=(32, 32, 3), **kwargs)


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "efficientnetv2_rw_t", "encoder_block2_0_exp_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize(
    "name, output_stride",
    # Output stride 32 on tf_ B0 and rw_t: the smp models below (Unet, FPN).
    [
        ("efficientnetv2_rw_s", 16),  # a fused first stage; the last stage dilated
        ("tf_efficientnetv2_b1", 8),  # two conv-BN-SiLU blocks (the second residual)
    ],
)
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name, output_stride):
    # Residual sums grow through the deep stages of random weights: ~50-100 at stride 32.
    features_match_smp_encoder(
        tmp_path, name, max_scale=5000.0, smp_name=f"tu-{name}", output_stride=output_stride
    )


@pytest.mark.slow  # four smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_efficientnet_v2_port_with_equal_logits(tmp_path, monkeypatch):
    # DeepLabV3 at output stride 8 and DeepLabV3Plus at 16 (dilated blocks).
    specs = [
        ("Unet", "unet", ".pth", 2, "tu-tf_efficientnetv2_b0", {}),
        ("FPN", "fpn", ".safetensors", 1, "tu-efficientnetv2_rw_t", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-tf_efficientnetv2_b1", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-efficientnetv2_rw_t", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "tf_efficientnetv2_s"), ("fpn", "FPN", "efficientnetv2_rw_t")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
