"""RegNetX / RegNetY encoders (timm's regnet*, smp's tu-regnet* and timm-regnet*): parameter
counts, every checkpoint key in timm's and both smp layouts, dilated output strides,
pretrained weights, and smp's encoder and models on them with equal features and logits."""

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

# Trainable parameters of smp 0.6's tu-regnet* encoders (sum of numel, printed by smp).
SMP_ENCODER_PARAMS = {
    "regnetx_002": 2_315_792, "regnetx_004": 4_772_512, "regnetx_006": 5_667_040,
    "regnetx_008": 6_586_656, "regnetx_016": 8_277_136, "regnetx_032": 14_287_552,
    "regnetx_040": 20_757_248, "regnetx_064": 24_584_256, "regnetx_080": 37_651_648,
    "regnetx_120": 43_865_056, "regnetx_160": 52_229_536, "regnetx_320": 105_290_560,
    "regnety_002": 2_793_996, "regnety_004": 3_903_144, "regnety_006": 5_446_160,
    "regnety_008": 5_494_168, "regnety_016": 10_313_430, "regnety_032": 17_923_338,
    "regnety_040": 19_557_656, "regnety_064": 29_286_252, "regnety_080": 37_163_068,
    "regnety_120": 49_581_544, "regnety_160": 80_565_140, "regnety_320": 141_333_770,
}  # fmt: skip
TINY = zoo.encoder_info("regnetx_002").tiny_config


def timm_shapes(widths, depths, group_widths, se, classes=0):
    """Key -> shape of timm's ``RegNet`` (its code, written out): stem, stages, head."""
    shapes = {"stem.conv.weight": (32, 3, 3, 3)}

    shapes |= batch_norm_shapes("stem.bn", 32)
    cin = 32
    for s, (w, d, g) in enumerate(zip(widths, depths, group_widths, strict=True), 1):
        for b in range(1, d + 1):
            p = f"s{s}.b{b}"
            shapes[f"{p}.conv1.conv.weight"] = (w, cin, 1, 1)
            shapes |= batch_norm_shapes(f"{p}.conv1.bn", w)
            shapes[f"{p}.conv2.conv.weight"] = (w, g, 3, 3)
            shapes |= batch_norm_shapes(f"{p}.conv2.bn", w)
            if se:
                r = int(round(cin * 0.25))
                shapes[f"{p}.se.fc1.weight"], shapes[f"{p}.se.fc1.bias"] = (r, w, 1, 1), (r,)
                shapes[f"{p}.se.fc2.weight"], shapes[f"{p}.se.fc2.bias"] = (w, r, 1, 1), (w,)
            shapes[f"{p}.conv3.conv.weight"] = (w, w, 1, 1)
            shapes |= batch_norm_shapes(f"{p}.conv3.bn", w)
            if b == 1:
                shapes[f"{p}.downsample.conv.weight"] = (w, cin, 1, 1)
                shapes |= batch_norm_shapes(f"{p}.downsample.bn", w)
            cin = w
    if classes:
        shapes["head.fc.weight"], shapes["head.fc.bias"] = (classes, cin), (classes,)
    return shapes


@pytest.mark.parametrize("name", sorted(SMP_ENCODER_PARAMS))
def test_params_equal_timm_and_smp(name):
    from zoo.encoders.regnet import VARIANTS

    assert trainable_params(timm_shapes(*VARIANTS[name])) == SMP_ENCODER_PARAMS[name]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    got = sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)
    assert got == SMP_ENCODER_PARAMS[name]


@pytest.mark.parametrize(
    "output_stride, dilations", [(32, (1, 1, 1, 1)), (16, (1, 1, 1, 2)), (8, (1, 1, 2, 4))]
)
def test_output_strides_dilate_the_last_stages_as_timm(output_stride, dilations):
    encoder = zoo.create_encoder(
        "regnety_002", input_shape=(64, 96, 3), output_stride=output_stride,
        widths=(8, 16, 24, 32), depths=(1, 1, 1, 2), group_widths=(8, 8, 8, 8),
    )  # fmt: skip
    strides = [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert sorted(encoder.output) == strides
    for s in strides:
        assert encoder.output[s].shape[1:3] == (64 // s, 96 // s)
    assert encoder.output[output_stride].shape[-1] == 32  # the last stage, at that stride
    got = [encoder.get_layer(f"encoder_s{s}_b1_conv2_conv").dilation_rate[0] for s in (1, 2, 3, 4)]
    # timm: a newly dilated stage's first block keeps half the rate (1 for rate 2, 2 for 4).
    assert got == [1, 1, {8: 1, 16: 1, 32: 1}[output_stride], {8: 2, 16: 1, 32: 1}[output_stride]]
    assert encoder.get_layer("encoder_s4_b2_conv2_conv").dilation_rate[0] == dilations[3]


@pytest.mark.parametrize("name", ["regnetx_002", "regnety_002"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    se = name.startswith("regnety")
    shapes = timm_shapes(TINY["widths"], TINY["depths"], TINY["group_widths"], se, classes=10)
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    checks = [
        ("encoder_stem_conv", "kernel", "stem.conv.weight"),
        ("encoder_s2_b2_conv2_conv", "kernel", "s2.b2.conv2.conv.weight"),
        ("encoder_s3_b1_conv1_bn", "moving_variance", "s3.b1.conv1.bn.running_var"),
        ("encoder_s4_b1_downsample_conv", "kernel", "s4.b1.downsample.conv.weight"),
        ("encoder_s1_b1_conv3_bn", "beta", "s1.b1.conv3.bn.bias"),
    ]
    if se:
        checks += [("encoder_s3_b1_se_fc1", "kernel", "s3.b1.se.fc1.weight")]
        checks += [("encoder_s2_b2_se_fc2", "bias", "s2.b2.se.fc2.bias")]
    for layer, variable, key in checks:
        want = state[key].transpose(2, 3, 1, 0) if state[key].ndim == 4 else state[key]
        got = np.asarray(getattr(model.get_layer(layer), variable))
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert len(model.variables) == len([k for k in shapes if "num_batches" not in k]) - 2


@pytest.mark.parametrize("prefix", ["encoder.model.", "encoder."])
def test_smp_files_load_as_the_timm_file(tmp_path, prefix):
    # smp 0.6 (tu-regnet*): encoder.model.; older smp (timm-regnet*): encoder.
    state = identifiable_state_dict(
        timm_shapes(TINY["widths"], TINY["depths"], TINY["group_widths"], True)
    )
    smp_file_loads_as_timm_file(tmp_path, "regnety_002", state, lambda k: prefix + k, **TINY)


def test_imagenet_weights_are_timms_default_from_the_cache(tmp_path, monkeypatch):
    sources = zoo.pretrained.sources("regnety_032")
    assert sources["imagenet"].url == sources["ra_in1k"].url  # timm's default tag
    assert "MIT" in sources["pycls_in1k"].license
    shapes = timm_shapes(TINY["widths"], TINY["depths"], TINY["group_widths"], True, 1000)
    state = identifiable_state_dict(shapes)
    net = from_timm_cache(tmp_path, monkeypatch, "regnety_032", "ra_in1k", state, **TINY)
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_s1_b1_conv1_conv").kernel),
        state["s1.b1.conv1.conv.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"widths": (8, 16, 24)}, "widths"),
        ({"group_widths": (8, 8, 16, 8)}, "group_widths"),
        ({"output_stride": 4}, "output_stride"),
        ({"weights": "in1k"}, "pycls_in1k"),  # the message lists the tags
    ],
)
def test_bad_arguments_name_the_value(kwargs, names):
    with pytest.raises(ValueError, match=names):
        zoo.create_encoder("regnetx_002", input_shape=(32, 32, 3), **{**TINY, **kwargs})


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "regnety_002", "encoder_s2_b1_conv2_conv")


@pytest.mark.slow  # smp's timm-universal encoders in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", ["regnetx_002", "regnety_004"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name, smp_name=f"tu-{name}")


@pytest.mark.slow  # five smp models in a torch interpreter, ~1 min on 2 cores
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_regnets_port_with_equal_logits(tmp_path, monkeypatch):
    # smp 0.6's names and its older timm-regnet* (which it maps to tu-regnet*); DeepLabV3 at
    # output stride 8 and DeepLabV3Plus at 16 (dilated stages); RegNetY's SE.
    specs = [
        ("Unet", "unet", ".pth", 2, "tu-regnety_002", {}),
        ("FPN", "fpn", ".safetensors", 1, "timm-regnetx_002", {}),
        ("DeepLabV3", "deeplabv3", ".pth", 2, "tu-regnetx_002", {"decoder_channels": 64}),
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "tu-regnety_002", {}),
        ("UnetPlusPlus", "unetplusplus", ".pth", 1, "tu-regnetx_004", {}),
    ]
    # (Round-off: smp's own float32 features are ~2e-4 of the scale off float64 at stride 32.)
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=3e-4)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_model_params_equal_smps():
    specs = [("unet", "Unet", "regnety_016"), ("fpn", "FPN", "regnetx_080")]
    specs += [("deeplabv3plus", "DeepLabV3Plus", "regnety_032")]
    assert_params_equal_smp([(m, a, e, {"encoder": f"tu-{e}"}) for m, a, e in specs])
