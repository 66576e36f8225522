"""timm's own EfficientNet names (efficientnet_b*, efficientnet_lite0, tf_efficientnet_b*,
tf_efficientnet_l2, tf_efficientnet_lite*: smp's tu- encoders): parameter counts, every
checkpoint key in timm's and smp's layouts, both paddings, timm's dilation, each tag's
normalization, and smp's encoders and models on them with equal features and logits."""

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

# Trainable parameters of smp 0.6's tu-* encoders (sum of numel, printed by smp; the tf_
# ports have the plain names' architecture).
SMP_ENCODER_PARAMS = {
    "efficientnet_b0": 3_595_388, "efficientnet_b1": 6_101_024, "efficientnet_b2": 7_202_562,
    "efficientnet_b3": 10_103_336, "efficientnet_b4": 16_742_216,
    "efficientnet_b5": 27_288_112, "efficientnet_lite0": 2_958_848,
    "tf_efficientnet_b0": 3_595_388, "tf_efficientnet_b1": 6_101_024,
    "tf_efficientnet_b2": 7_202_562, "tf_efficientnet_b3": 10_103_336,
    "tf_efficientnet_b4": 16_742_216, "tf_efficientnet_b5": 27_288_112,
    "tf_efficientnet_b6": 39_403_992, "tf_efficientnet_b7": 62_143_440,
    "tf_efficientnet_b8": 82_608_046, "tf_efficientnet_l2": 467_219_796,
    "tf_efficientnet_lite0": 2_958_848, "tf_efficientnet_lite1": 3_723_520,
    "tf_efficientnet_lite2": 4_357_952, "tf_efficientnet_lite3": 6_422_016,
    "tf_efficientnet_lite4": 11_149_568,
}  # fmt: skip
# smp's out_channels (stride 2 ... 32): the stride-2 map is timm's first stage's.
SMP_CHANNELS = {
    "efficientnet_b0": (16, 24, 40, 112, 320),
    "efficientnet_b3": (24, 32, 48, 136, 384),
    "tf_efficientnet_b6": (32, 40, 72, 200, 576),
    "tf_efficientnet_l2": (72, 104, 176, 480, 1376),
    "tf_efficientnet_lite4": (24, 32, 56, 160, 448),
}
# timm's (channel multiplier, depth multiplier) per name (timm/models/efficientnet.py).
MULTIPLIERS = {
    "b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4), "b4": (1.4, 1.8),
    "b5": (1.6, 2.2), "b6": (1.8, 2.6), "b7": (2.0, 3.1), "b8": (2.2, 3.6), "l2": (4.3, 5.3),
    "lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2), "lite3": (1.2, 1.4),
    "lite4": (1.4, 1.8),
}  # fmt: skip
# timm's _gen_efficientnet arch_def (the Lite one: the same without se0.25), decoded
# independently of our stage tables.
TIMM_ARCH = [
    "ds_r1_k3_s1_e1_c16_se0.25", "ir_r2_k3_s2_e6_c24_se0.25", "ir_r2_k5_s2_e6_c40_se0.25",
    "ir_r3_k3_s2_e6_c80_se0.25", "ir_r3_k5_s1_e6_c112_se0.25", "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320_se0.25",
]  # fmt: skip


def timm_shapes(name, width_scale=1.0, head=0):
    """Key -> shape of timm's model `name` (its builder, written out): `width_scale` times
    its channel multiplier; `head` classes add conv_head, bn2 and the classifier."""
    width, depth = MULTIPLIERS[name.rsplit("_", 1)[1]]
    width *= width_scale
    lite = "lite" in name
    shapes = {}

    def conv(key, out, cin, k, groups=1, bias=False):
        shapes[f"{key}.weight"] = (out, cin // groups, k, k)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    cin = 32 if lite else divisible(32 * width)  # fix_stem
    conv("conv_stem", cin, 3, 3)
    shapes |= batch_norm_shapes("bn1", cin)
    for s, text in enumerate(TIMM_ARCH):
        opts = {o[0]: o[1:] for o in text.split("_")[1:] if not o.startswith("se")}
        repeats = int(opts["r"])
        if not (lite and s in (0, len(TIMM_ARCH) - 1)):  # fix_first_last
            repeats = int(np.ceil(repeats * depth))
        k, e, out = int(opts["k"]), float(opts["e"]), divisible(int(opts["c"]) * width)
        for i in range(repeats):
            p = f"blocks.{s}.{i}"
            mid = cin if text.startswith("ds") else divisible(cin * e)
            if text.startswith("ir"):
                conv(f"{p}.conv_pw", mid, cin, 1)
                shapes |= batch_norm_shapes(f"{p}.bn1", mid)
            names = ("conv_dw", "bn1", "conv_pw", "bn2") if s == 0 else None
            names = names or ("conv_dw", "bn2", "conv_pwl", "bn3")
            conv(f"{p}.{names[0]}", mid, mid, k, groups=mid)
            shapes |= batch_norm_shapes(f"{p}.{names[1]}", mid)
            if not lite:  # timm: se_ratio / exp_ratio of the expanded channels, rounded
                rd = round(mid * 0.25 / e)
                conv(f"{p}.se.conv_reduce", rd, mid, 1, bias=True)
                conv(f"{p}.se.conv_expand", mid, rd, 1, bias=True)
            conv(f"{p}.{names[2]}", out, mid, 1)
            shapes |= batch_norm_shapes(f"{p}.{names[3]}", out)
            cin = out
    if head:
        features = 1280 if lite else divisible(1280 * width)
        conv("conv_head", features, cin, 1)
        shapes |= batch_norm_shapes("bn2", features)
        shapes["classifier.weight"], shapes["classifier.bias"] = (head, features), (head,)
    return shapes


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    shapes = timm_shapes(name)
    assert trainable_params(shapes) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn (L2 has 467M)
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == trainable_params(
        shapes
    )
    if name in SMP_CHANNELS:
        assert tuple(encoder.output[s].shape[-1] for s in (2, 4, 8, 16, 32)) == SMP_CHANNELS[name]


@pytest.mark.parametrize(
    "name, width_scale",
    [
        ("efficientnet_b0", 1.0),
        ("tf_efficientnet_b1", 0.5),  # a residual depthwise-separable block (blocks.0.1)
        ("tf_efficientnet_lite0", 1.0),  # no SE, a fixed stem
    ],
)
def test_every_key_lands_in_its_variable(tmp_path, name, width_scale):
    shapes = timm_shapes(name, width_scale, head=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), width_scale=width_scale, weights=str(path),
        input_normalization=None,
    )  # fmt: skip
    checks = [
        ("encoder_stem_conv", "kernel", "conv_stem.weight"),
        ("encoder_stem_bn", "moving_mean", "bn1.running_mean"),
        ("encoder_block0_0_dw_conv", "kernel", "blocks.0.0.conv_dw.weight"),
        ("encoder_block0_0_project_bn", "moving_variance", "blocks.0.0.bn2.running_var"),
        ("encoder_block1_1_expand_conv", "kernel", "blocks.1.1.conv_pw.weight"),
        ("encoder_block2_0_dw_bn", "gamma", "blocks.2.0.bn2.weight"),
        ("encoder_block4_1_project_conv", "kernel", "blocks.4.1.conv_pwl.weight"),
        ("encoder_block6_0_project_bn", "beta", "blocks.6.0.bn3.bias"),
    ]
    if "lite" not in name:
        checks += [("encoder_block0_0_se_fc1", "kernel", "blocks.0.0.se.conv_reduce.weight")]
        checks += [("encoder_block3_1_se_fc2", "bias", "blocks.3.1.se.conv_expand.bias")]
    if "b1" in name:
        checks += [("encoder_block0_1_dw_conv", "kernel", "blocks.0.1.conv_dw.weight")]
    for layer, variable, key in checks:
        want = state[key]
        if want.ndim == 4:  # depthwise OIHW (C, 1, k, k) -> (k, k, C, 1), else HWIO
            want = want.transpose(2, 3, 0, 1) if "conv_dw" in key else want.transpose(2, 3, 1, 0)
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    # every tensor but the head's (conv_head, bn2: 5, classifier: 2) and the batch counters
    # has a variable
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 7


def test_smp_file_loads_as_the_timm_file(tmp_path):
    state = identifiable_state_dict(timm_shapes("efficientnet_lite0"))
    smp_file_loads_as_timm_file(
        tmp_path, "efficientnet_lite0", state, lambda k: "encoder.model." + k
    )


@pytest.mark.parametrize("size", [32, 33])
def test_paddings_and_epsilons_are_pytorchs_and_tensorflows(size):
    # PyTorch pads 1 on every side of a 3x3/2 conv: the top-left tap of output (0, 0) reads
    # padding. TensorFlow's "same" pads (0, 1) on an even size: it reads pixel (0, 0); on an
    # odd size (1, 1), like PyTorch.
    assert stem_top_left_tap("efficientnet_b0", size, width_scale=0.25) == 0.0
    assert stem_top_left_tap("tf_efficientnet_b0", size, width_scale=0.25) == (
        1.0 if size % 2 == 0 else 0.0
    )
    assert stem_top_left_tap("efficientnet_lite0", size, width_scale=0.25) == 0.0
    assert stem_top_left_tap("tf_efficientnet_lite0", size, width_scale=0.25) == (
        1.0 if size % 2 == 0 else 0.0
    )
    for name, epsilon in [("efficientnet_b0", 1e-5), ("tf_efficientnet_lite1", 1e-3)]:
        with shapes_only():
            net = zoo.create_encoder(name, input_shape=(None, None, 3))
        assert net.get_layer("encoder_block5_0_dw_bn").epsilon == epsilon


def test_lite_has_relu6_no_squeeze_a_fixed_stem_and_fixed_end_stages():
    with shapes_only():
        net = zoo.create_encoder("tf_efficientnet_lite4", input_shape=(None, None, 3))
    names = [layer.name for layer in net.layers]
    assert not [n for n in names if "_se_" in n] and "encoder_stem_relu6" in names
    assert net.get_layer("encoder_stem_conv").filters == 32  # not scaled by 1.4
    assert "encoder_block0_0_dw_conv" in names and "encoder_block0_1_dw_conv" not in names
    assert "encoder_block6_0_dw_conv" in names and "encoder_block6_1_dw_conv" not in names
    assert "encoder_block5_7_dw_conv" in names  # ceil(4 x 1.8) = 8


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_strides_dilate_as_timms_builder(output_stride):
    net = zoo.create_encoder(
        "tf_efficientnet_b0", input_shape=(64, 96, 3), output_stride=output_stride,
        width_scale=0.25,
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(net.output) == strides
    for s in strides:
        assert net.output[s].shape[1:3] == (64 // s, 96 // s)

    def dw(block):
        layer = net.get_layer(f"encoder_block{block}_dw_conv")
        return layer.strides[0], layer.dilation_rate[0]

    # B0 downsamples in blocks 3_0 (to 16) and 5_0 (to 32). The block that loses its stride
    # keeps the old rate; the ones after it take the new one (smp's older timm-efficientnet-*
    # dilate the whole stage instead).
    want = {
        32: {"3_0": (2, 1), "3_1": (1, 1), "5_0": (2, 1), "5_1": (1, 1), "6_0": (1, 1)},
        16: {"3_0": (2, 1), "4_0": (1, 1), "5_0": (1, 1), "5_1": (1, 2), "6_0": (1, 2)},
        8: {"2_0": (2, 1), "3_0": (1, 1), "3_1": (1, 2), "4_2": (1, 2), "5_0": (1, 2),
            "5_1": (1, 4), "6_0": (1, 4)},
    }[output_stride]  # fmt: skip
    assert {b: dw(b) for b in want} == want


# timm 1.0's pretrained tags of each name (timm.list_pretrained; its default first) and those
# whose pretrained cfg has mean = std = 0.5 (the others: ImageNet's).
_TF = ["ns_jft_in1k", "ap_in1k", "aa_in1k", "in1k"]
TIMM_TAGS = {
    "efficientnet_b0": ["ra_in1k", "ra4_e3600_r224_in1k"],
    "efficientnet_b1": ["ra4_e3600_r240_in1k", "ft_in1k"], "efficientnet_b2": ["ra_in1k"],
    "efficientnet_b3": ["ra2_in1k"], "efficientnet_b4": ["ra2_in1k"],
    "efficientnet_b5": ["sw_in12k_ft_in1k", "sw_in12k"], "efficientnet_lite0": ["ra_in1k"],
    **{f"tf_efficientnet_b{i}": _TF for i in range(5)},
    "tf_efficientnet_b5": ["ns_jft_in1k", "ap_in1k", "ra_in1k", "aa_in1k", "in1k"],
    "tf_efficientnet_b6": ["ns_jft_in1k", "ap_in1k", "aa_in1k"],
    "tf_efficientnet_b7": ["ns_jft_in1k", "ap_in1k", "ra_in1k", "aa_in1k"],
    "tf_efficientnet_b8": ["ap_in1k", "ra_in1k"],
    "tf_efficientnet_l2": ["ns_jft_in1k_475", "ns_jft_in1k"],
    **{f"tf_efficientnet_lite{i}": ["in1k"] for i in range(5)},
}  # fmt: skip
HALF = {"efficientnet_b0.ra4_e3600_r224_in1k", "efficientnet_b1.ra4_e3600_r240_in1k"}
HALF |= {f"tf_efficientnet_b{i}.ap_in1k" for i in range(9)}
HALF |= {f"tf_efficientnet_lite{i}.in1k" for i in range(5)}


@pytest.mark.parametrize("name", sorted(TIMM_TAGS))
def test_tags_and_their_normalization_are_timms(name):
    sources = zoo.pretrained.sources(name)
    tags = TIMM_TAGS[name]
    assert set(sources) == {"imagenet", *tags}
    assert sources["imagenet"].url == sources[tags[0]].url  # timm's default tag
    for tag in tags:
        assert sources[tag].url.endswith(f"/timm/{name}.{tag}/resolve/main/model.safetensors")
        mean = zoo.pretrained.native_normalization(name, tag).mean
        assert mean == ((0.5,) * 3 if f"{name}.{tag}" in HALF else (0.485, 0.456, 0.406)), tag
    # A local file: the default tag's (what smp's get_preprocessing_params says for tu-<name>).
    default = (0.5,) * 3 if f"{name}.{tags[0]}" in HALF else (0.485, 0.456, 0.406)
    assert zoo.pretrained._ENCODERS[name].normalization.mean == default


def test_named_weights_are_timms_tags_with_their_normalization(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("tf_efficientnet_b0")
    assert sources["imagenet"].url == sources["ns_jft_in1k"].url  # timm's default tag
    assert set(sources) == {"imagenet", "ns_jft_in1k", "ap_in1k", "aa_in1k", "in1k"}
    b1 = zoo.pretrained.sources("efficientnet_b1")
    assert b1["imagenet"].url == b1["ra4_e3600_r240_in1k"].url  # timm's default: ra4, [-1, 1]
    imagenet = 1 / np.array([0.229, 0.224, 0.225])
    cases = [
        ("tf_efficientnet_b0", "ap_in1k", "ap_in1k", (2.0,) * 3),  # AdvProp: [-1, 1]
        ("tf_efficientnet_b0", "ns_jft_in1k", "imagenet", imagenet),
        ("tf_efficientnet_lite0", "in1k", "imagenet", (2.0,) * 3),  # the Lite ports: [-1, 1]
        ("efficientnet_b0", "ra4_e3600_r224_in1k", "ra4_e3600_r224_in1k", (2.0,) * 3),
        ("efficientnet_lite0", "ra_in1k", "imagenet", imagenet),
    ]
    for name, tag, weights, scale in cases:
        state = identifiable_state_dict(timm_shapes(name, 0.25, head=1000))
        net = from_timm_cache(tmp_path, monkeypatch, name, tag, state, weights, width_scale=0.25)
        np.testing.assert_allclose(np.asarray(net.get_layer("encoder_preprocess").scale), scale)
        np.testing.assert_array_equal(
            np.asarray(net.get_layer("encoder_block1_0_expand_conv").kernel),
            state["blocks.1.0.conv_pw.weight"].transpose(2, 3, 1, 0),
        )


@pytest.mark.parametrize(
    "name, kwargs, names",
    [
        ("efficientnet_b0", {"width_scale": 0}, "width_scale"),
        ("tf_efficientnet_b0", {"output_stride": 4}, "output_stride"),
        ("efficientnet_lite0", {"drop_path_rate": 1.5}, "drop_path_rate"),
        ("tf_efficientnet_b8", {"weights": "ns_jft_in1k"}, "ra_in1k"),  # lists its tags
    ],
)
def test_bad_arguments_name_the_value(name, kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder(name, input_shape=(32, 32, 3), **kwargs)


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "tf_efficientnet_b0", "encoder_block2_0_dw_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize(
    "name, output_stride",
    # The Lites (both paddings, output strides 32 and 8): the smp models below (FPN, DeepLabV3).
    [("tf_efficientnet_b0", 32), ("efficientnet_b0", 16), ("tf_efficientnet_b0", 8)],
)
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name, output_stride):
    # (64, 96) and (67, 93): TensorFlow's "same" pads differently at even and odd sizes.
    # Random B0s reach ~60 at stride 32.
    for size in [(64, 96), (67, 93)] if name.startswith("tf_") else [(64, 96)]:
        features_match_smp_encoder(
            tmp_path, name, size=size, max_scale=100.0, smp_name=f"tu-{name}",
            output_stride=output_stride,
        )  # fmt: skip


@pytest.mark.slow  # four smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_timm_efficientnets_port_with_equal_logits(tmp_path, monkeypatch):
    # DeepLabV3Plus at output stride 16 and DeepLabV3 at 8: timm's dilation.
    specs = [
        ("Unet", "unet", ".pth", 2, "tu-efficientnet_b0", {}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-tf_efficientnet_b0", {}),
        ("FPN", "fpn", ".pth", 1, "tu-tf_efficientnet_lite0", {}),
        ("DeepLabV3", "deeplabv3", ".safetensors", 2, "tu-efficientnet_lite0",
         {"decoder_channels": 64}),
    ]  # fmt: skip
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "tf_efficientnet_b3"), ("fpn", "FPN", "efficientnet_lite0")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
