"""MobileNetV3 encoders (timm's mobilenetv3_* / tf_mobilenetv3_*, smp's tu- and timm- names):
parameter counts, every checkpoint key in timm's and smp's layouts, both paddings, dilated
output strides, pretrained weights, and smp's encoders and models on them with equal
features and logits."""

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
    "mobilenetv3_large_075": 1_789_648, "mobilenetv3_large_100": 2_971_952,
    "mobilenetv3_small_050": 272_288, "mobilenetv3_small_075": 573_480,
    "mobilenetv3_small_100": 927_008, "tf_mobilenetv3_large_075": 1_789_648,
    "tf_mobilenetv3_large_100": 2_971_952, "tf_mobilenetv3_large_minimal_100": 1_413_208,
    "tf_mobilenetv3_small_075": 573_480, "tf_mobilenetv3_small_100": 927_008,
    "tf_mobilenetv3_small_minimal_100": 428_888,
}  # fmt: skip
# smp's out_channels (stride 2 ... 32).
SMP_CHANNELS = {
    "mobilenetv3_large_075": (16, 24, 32, 88, 720),
    "mobilenetv3_small_050": (16, 8, 16, 24, 288),
    "tf_mobilenetv3_small_minimal_100": (16, 16, 24, 48, 576),
}
# timm's arch_def strings (timm/models/mobilenetv3.py), decoded independently of our plans.
TIMM_ARCH = {
    "large": [
        ["ds_r1_k3_s1_e1_c16_nre"], ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
        ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
        ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
        ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"], ["cn_r1_k1_s1_c960"],
    ],
    "small": [
        ["ds_r1_k3_s2_e1_c16_se0.25_nre"],
        ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
        ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
        ["ir_r2_k5_s1_e3_c48_se0.25"], ["ir_r3_k5_s2_e6_c96_se0.25"], ["cn_r1_k1_s1_c576"],
    ],
}  # fmt: skip


def timm_shapes(arch, multiplier, minimal=False, head=0):
    """Key -> shape of timm's MobileNetV3 (its builder, written out) for an arch_def."""
    shapes = {}

    def conv(key, out, cin, k, groups=1, bias=False):
        shapes[f"{key}.weight"] = (out, cin // groups, k, k)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    cin = 16 if multiplier < 0.75 else divisible(16 * multiplier)
    conv("conv_stem", cin, 3, 3)
    shapes |= batch_norm_shapes("bn1", cin)
    for s, stage in enumerate(TIMM_ARCH[arch]):
        i = 0
        for text in stage:
            parts = text.split("_")[1:]
            se = any(o.startswith("se") for o in parts) and not minimal
            opts = {o[0]: o[1:] for o in parts if not o.startswith(("se", "nre"))}
            kind, k = text[:2], 3 if minimal else int(opts["k"])
            out = divisible(int(opts["c"]) * multiplier)
            for _ in range(int(opts["r"])):
                p = f"blocks.{s}.{i}"
                mid = cin if kind != "ir" else divisible(cin * float(opts["e"]))
                if kind == "cn":
                    conv(f"{p}.conv", out, cin, 1)
                    shapes |= batch_norm_shapes(f"{p}.bn1", out)
                else:
                    names = ("conv_dw", "bn1", "conv_pw", "bn2") if kind == "ds" else None
                    if kind == "ir":
                        conv(f"{p}.conv_pw", mid, cin, 1)
                        shapes |= batch_norm_shapes(f"{p}.bn1", mid)
                        names = ("conv_dw", "bn2", "conv_pwl", "bn3")
                    conv(f"{p}.{names[0]}", mid, mid, k, groups=mid)
                    shapes |= batch_norm_shapes(f"{p}.{names[1]}", mid)
                    if se:
                        rd = divisible(mid * 0.25)
                        conv(f"{p}.se.conv_reduce", rd, mid, 1, bias=True)
                        conv(f"{p}.se.conv_expand", mid, rd, 1, bias=True)
                    conv(f"{p}.{names[2]}", out, mid, 1)
                    shapes |= batch_norm_shapes(f"{p}.{names[3]}", out)
                cin, i = out, i + 1
    if head:
        conv("conv_head", 1280, cin, 1, bias=True)
        shapes["classifier.weight"], shapes["classifier.bias"] = (head, 1280), (head,)
    return shapes


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    arch = "large" if "large" in name else "small"
    multiplier = int(name[-3:]) / 100
    shapes = timm_shapes(arch, multiplier, minimal="minimal" in name)
    assert trainable_params(shapes) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == trainable_params(
        shapes
    )
    if name in SMP_CHANNELS:
        assert tuple(encoder.output[s].shape[-1] for s in (2, 4, 8, 16, 32)) == SMP_CHANNELS[name]


@pytest.mark.parametrize(
    "name, arch, multiplier, minimal",
    [
        ("mobilenetv3_small_050", "small", 0.5, False),  # SE in the depthwise-separable block
        ("tf_mobilenetv3_large_minimal_100", "large", 1.0, True),  # its residual DS block
    ],
)
def test_every_key_lands_in_its_variable(tmp_path, name, arch, multiplier, minimal):
    shapes = timm_shapes(arch, multiplier, minimal, head=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None
    )
    checks = [
        ("encoder_stem_conv", "kernel", "conv_stem.weight"),
        ("encoder_block0_0_dw_conv", "kernel", "blocks.0.0.conv_dw.weight"),
        ("encoder_block0_0_project_bn", "moving_variance", "blocks.0.0.bn2.running_var"),
        ("encoder_block1_1_expand_conv", "kernel", "blocks.1.1.conv_pw.weight"),
        ("encoder_block2_0_dw_bn", "gamma", "blocks.2.0.bn2.weight"),
        ("encoder_block4_1_project_conv", "kernel", "blocks.4.1.conv_pwl.weight"),
    ]
    last = len(TIMM_ARCH[arch]) - 1
    checks += [(f"encoder_block{last}_0_conv", "kernel", f"blocks.{last}.0.conv.weight")]
    checks += [(f"encoder_block{last}_0_bn", "beta", f"blocks.{last}.0.bn1.bias")]
    if not minimal:
        checks += [("encoder_block0_0_se_fc1", "kernel", "blocks.0.0.se.conv_reduce.weight")]
        checks += [("encoder_block3_1_se_fc2", "bias", "blocks.3.1.se.conv_expand.bias")]
    for layer, variable, key in checks:
        want = state[key]
        if want.ndim == 4:  # depthwise OIHW (C, 1, k, k) -> (k, k, C, 1), else HWIO
            want = want.transpose(2, 3, 0, 1) if "conv_dw" in key else want.transpose(2, 3, 1, 0)
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    # every tensor but the head's and the batch counters has a variable
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 4


def test_smp_file_loads_as_the_timm_file(tmp_path):
    state = identifiable_state_dict(timm_shapes("small", 0.5))
    smp_file_loads_as_timm_file(
        tmp_path, "mobilenetv3_small_050", state, lambda k: "encoder.model." + k
    )


@pytest.mark.parametrize("size", [32, 33])
def test_paddings_are_pytorchs_and_tensorflows(size):
    # PyTorch pads 1 on every side of a 3x3/2 conv: the top-left tap of output (0, 0) reads
    # padding. TensorFlow's "same" pads (0, 1) on an even size: it reads pixel (0, 0); on an
    # odd size (1, 1), like PyTorch.
    assert stem_top_left_tap("mobilenetv3_small_050", size) == 0.0
    assert stem_top_left_tap("tf_mobilenetv3_small_075", size) == (1.0 if size % 2 == 0 else 0.0)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_as_timms_builder(output_stride):
    net = zoo.create_encoder(
        "mobilenetv3_large_100", input_shape=(64, 96, 3), output_stride=output_stride,
        width_scale=0.25,
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(net.output) == strides
    for s in strides:
        assert net.output[s].shape[1:3] == (64 // s, 96 // s)

    def dw(block):
        layer = net.get_layer(f"encoder_block{block}_dw_conv")
        return layer.strides[0], layer.dilation_rate[0]

    # Large downsamples in blocks 3_0 (to 16) and 5_0 (to 32). The block that loses its
    # stride keeps the old rate; the ones after it take the new one.
    want = {
        32: {"3_0": (2, 1), "3_1": (1, 1), "5_0": (2, 1), "5_2": (1, 1)},
        16: {"3_0": (2, 1), "3_1": (1, 1), "5_0": (1, 1), "5_1": (1, 2), "5_2": (1, 2)},
        8: {"2_0": (2, 1), "3_0": (1, 1), "3_1": (1, 2), "4_1": (1, 2), "5_0": (1, 2),
            "5_1": (1, 4)},
    }[output_stride]  # fmt: skip
    assert {b: dw(b) for b in want} == want


def test_named_weights_are_timms_tags_with_their_normalization(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("mobilenetv3_large_100")
    assert sources["imagenet"].url == sources["ra_in1k"].url  # timm's default tag
    assert set(sources) == {"imagenet", "ra_in1k", "ra4_e3600_r224_in1k", "miil_in21k_ft_in1k"}
    assert zoo.pretrained.sources("mobilenetv3_large_075") == {}  # timm has none
    cases = [
        ("tf_mobilenetv3_small_075", "in1k", "imagenet", (2.0,) * 3),  # [-1, 1]
        ("mobilenetv3_large_100", "miil_in21k_ft_in1k", "miil_in21k_ft_in1k", (1.0,) * 3),
        ("mobilenetv3_small_050", "lamb_in1k", "imagenet", 1 / np.array([0.229, 0.224, 0.225])),
    ]
    for name, tag, weights, scale in cases:
        arch = "large" if "large" in name else "small"
        state = identifiable_state_dict(timm_shapes(arch, int(name[-3:]) / 100, head=1000))
        net = from_timm_cache(tmp_path, monkeypatch, name, tag, state, weights)
        np.testing.assert_allclose(np.asarray(net.get_layer("encoder_preprocess").scale), scale)
        np.testing.assert_array_equal(
            np.asarray(net.get_layer("encoder_block1_0_expand_conv").kernel),
            state["blocks.1.0.conv_pw.weight"].transpose(2, 3, 1, 0),
        )


@pytest.mark.parametrize(
    "name, kwargs, names",
    [
        ("mobilenetv3_small_100", {"width_scale": 0}, "width_scale"),
        ("mobilenetv3_small_100", {"output_stride": 4}, "output_stride"),
        ("mobilenetv3_small_100", {"drop_path_rate": 1.5}, "drop_path_rate"),
        ("mobilenetv3_large_100", {"weights": "in21k"}, "miil_in21k_ft_in1k"),  # lists tags
        ("mobilenetv3_large_075", {"weights": "imagenet"}, "imagenet"),
    ],
)
def test_bad_arguments_name_the_value(name, kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder(name, input_shape=(32, 32, 3), **kwargs)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "tf_mobilenetv3_large_100"])
def test_unet_trains_saves_and_reloads(tmp_path, name):
    unet_trains_saves_and_reloads(tmp_path, name, "encoder_block2_0_dw_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize(
    "name",
    ["mobilenetv3_large_100", "tf_mobilenetv3_small_075", "tf_mobilenetv3_large_minimal_100"],
)
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name, smp_name=f"tu-{name}")


@pytest.mark.slow  # four smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_mobilenet_v3_port_with_equal_logits(tmp_path, monkeypatch):
    # smp 0.6's tu- names and its older timm-mobilenetv3_* (mapped to tu-tf_mobilenetv3_*);
    # DeepLabV3 at output stride 8 and DeepLabV3Plus at 16 (dilated blocks).
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-mobilenetv3_large_100", {}),
        ("FPN", "fpn", ".safetensors", 1, "tu-mobilenetv3_small_050", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-mobilenetv3_small_100", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-tf_mobilenetv3_large_075", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "tf_mobilenetv3_large_100"), ("fpn", "FPN", "mobilenetv3_small_100")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
