"""Dual Path Network encoders (pretrainedmodels layout, smp's dpn*): parameter counts, feature
maps, dilation, every checkpoint key (the sliced 1x1 convs too), pretrained weights, and smp
models on them ported with equal logits."""

import numpy as np
import pytest
from helpers import assert_params_equal_smp, unet_trains_saves_and_reloads
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import port
from zoo.build_context import shapes_only

# The reference's DPN(small, num_init_features, k_r, groups, b, k_sec, inc_sec) per variant
# (smp's dpn_encoders params), and its parameter totals with the 1000-class classifier
# (counted on smp 0.6's torch DPN).
CONFIGS = {
    "dpn68": (True, 10, 128, 32, False, (3, 4, 12, 3), (16, 32, 32, 64), 12_611_602),
    "dpn68b": (True, 10, 128, 32, True, (3, 4, 12, 3), (16, 32, 32, 64), 12_611_602),
    "dpn92": (False, 64, 96, 32, False, (3, 4, 20, 3), (16, 32, 24, 128), 37_668_392),
    "dpn98": (False, 96, 160, 40, False, (3, 6, 20, 3), (16, 32, 32, 128), 61_570_728),
    "dpn107": (False, 128, 200, 50, False, (4, 8, 20, 3), (20, 64, 64, 128), 86_917_800),
    "dpn131": (False, 128, 160, 40, False, (4, 8, 28, 3), (16, 32, 32, 128), 79_254_504),
}
# smp's out_channels (strides 2 ... 32).
OUT_CHANNELS = {
    "dpn68": [10, 144, 320, 704, 832],
    "dpn68b": [10, 144, 320, 704, 832],
    "dpn92": [64, 336, 704, 1552, 2688],
    "dpn98": [96, 336, 768, 1728, 2688],
    "dpn107": [128, 376, 1152, 2432, 2688],
    "dpn131": [128, 352, 832, 1984, 2688],
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def dpn_shapes(name, tiny=None):
    """Key -> shape of the reference's ``DPN`` (from its code, classifier included); `tiny`:
    our builder's arguments replacing the reference's (``base_width`` is its ``bw`` of
    stage 1, ``64 * bw_factor``)."""
    small, init, k_r, groups, b, k_sec, inc_sec, _ = CONFIGS[name]
    bw_factor = 1 if small else 4
    tiny = tiny or {}
    init = tiny.get("num_init_features", init)
    k_r, groups = tiny.get("k_r", k_r), tiny.get("groups", groups)
    k_sec, inc_sec = tiny.get("k_sec", k_sec), tiny.get("inc_sec", inc_sec)
    bw0 = tiny.get("base_width", 64 * bw_factor)
    shapes = {}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def bn_act_conv(prefix, cin, cout, k, g=1):
        bn(f"{prefix}.bn", cin)
        shapes[f"{prefix}.conv.weight"] = (cout, cin // g, k, k)

    kernel = 3 if small else 7
    shapes["features.conv1_1.conv.weight"] = (init, 3, kernel, kernel)
    bn("features.conv1_1.bn", init)
    in_chs = init
    for stage in range(4):
        bw, inc = bw0 * 2**stage, inc_sec[stage]
        r = (k_r * bw) // bw0  # the reference's (k_r * bw) // (64 * bw_factor)
        for i in range(1, k_sec[stage] + 1):
            block = f"features.conv{stage + 2}_{i}"
            if i == 1:
                proj = "c1x1_w_s1" if stage == 0 else "c1x1_w_s2"
                bn_act_conv(f"{block}.{proj}", in_chs, bw + 2 * inc, 1)
            bn_act_conv(f"{block}.c1x1_a", in_chs, r, 1)
            bn_act_conv(f"{block}.c3x3_b", r, r, 3, groups)
            if b:
                bn(f"{block}.c1x1_c.bn", r)
                shapes[f"{block}.c1x1_c1.weight"] = (bw, r, 1, 1)
                shapes[f"{block}.c1x1_c2.weight"] = (inc, r, 1, 1)
            else:
                bn_act_conv(f"{block}.c1x1_c", r, bw + inc, 1)
            in_chs = bw + 3 * inc if i == 1 else in_chs + inc
    bn("features.conv5_bn_ac.bn", in_chs)
    shapes["last_linear.weight"], shapes["last_linear.bias"] = (1000, in_chs, 1, 1), (1000,)
    return shapes


def _count(shapes):
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(BUFFERS))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_and_feature_channels_equal_the_references(name):
    shapes = dpn_shapes(name)
    assert _count(shapes) == CONFIGS[name][-1]
    features = _count(shapes) - _count({k: shapes[k] for k in shapes if "last_linear" in k})
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(64, 64, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == features
    assert [encoder.output[s].shape[1:] for s in (2, 4, 8, 16, 32)] == [
        (64 // s, 64 // s, c) for s, c in zip((2, 4, 8, 16, 32), OUT_CHANNELS[name], strict=True)
    ]


def test_feature_maps_are_smps_tensors():
    # Strides 4-16: the ReLU of a stage's concatenated paths; 32: the final BN-ReLU.
    encoder = zoo.create_encoder(
        "dpn68", input_shape=(64, 64, 3), **zoo.encoder_info("dpn68").tiny_config
    )
    layer = {s: t._keras_history.operation.name for s, t in encoder.output.items()}
    assert layer == {
        2: "encoder_stem_relu",
        4: "encoder_stage1_relu",
        8: "encoder_stage2_relu",
        16: "encoder_stage3_relu",
        32: "encoder_final_relu",
    }
    # PyTorch's padding: the stem pool one pixel each side, a strided 3x3 conv likewise.
    assert tuple(encoder.get_layer("encoder_stem_pool_pad").padding) == ((1, 1), (1, 1))
    assert tuple(encoder.get_layer("encoder_stage2_block1_b_pad").padding) == ((1, 1), (1, 1))
    assert encoder.get_layer("encoder_stage2_block1_b_conv").padding == "valid"


@pytest.mark.parametrize("output_stride, rates", [(16, (1, 1, 2)), (8, (1, 2, 4))])
def test_dilation_is_smps_make_dilated(output_stride, rates):
    # smp's make_dilated: every conv of the stages past the output stride unstrided, each
    # 3x3 dilated by stage stride / output stride (padded by as much: "same").
    tiny = zoo.encoder_info("dpn92").tiny_config
    net = zoo.create_encoder("dpn92", input_shape=(64, 64, 3), output_stride=output_stride, **tiny)
    dense = zoo.create_encoder("dpn92", input_shape=(64, 64, 3), **tiny)
    assert max(net.output) == output_stride
    assert net.output[output_stride].shape[1:] == (64 // output_stride,) * 2 + (
        dense.output[32].shape[-1],
    )
    assert net.count_params() == dense.count_params()
    for stage, rate in zip((2, 3, 4), rates, strict=True):
        for block in (1, 2):
            conv = net.get_layer(f"encoder_stage{stage}_block{block}_b_conv")
            strides = 2 if rate == 1 and block == 1 else 1
            assert tuple(conv.dilation_rate) == (rate, rate) and conv.strides == (strides,) * 2
        proj = net.get_layer(f"encoder_stage{stage}_block1_proj1_conv")
        assert proj.strides == ((2, 2) if rate == 1 else (1, 1))


@pytest.mark.parametrize("name", ["dpn92", "dpn68b"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    tiny = zoo.encoder_info(name).tiny_config
    state = identifiable_state_dict(dpn_shapes(name, tiny))
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **tiny
    )

    def kernel(layer):
        return np.asarray(model.get_layer(f"encoder_{layer}").kernel)

    def theirs(key, rows=slice(None)):
        return state[key][rows].transpose(2, 3, 1, 0)

    bw, inc = tiny["base_width"], tiny["inc_sec"]
    # Projections: the residual path's channels first, the dense path's after.
    w_s1 = "features.conv2_1.c1x1_w_s1.conv.weight"
    np.testing.assert_array_equal(kernel("stage1_block1_proj1_conv"), theirs(w_s1, slice(0, bw)))
    np.testing.assert_array_equal(kernel("stage1_block1_proj2_conv"), theirs(w_s1, slice(bw, None)))
    w_s2 = "features.conv4_1.c1x1_w_s2.conv.weight"
    np.testing.assert_array_equal(
        kernel("stage3_block1_proj2_conv"), theirs(w_s2, slice(4 * bw, None))
    )
    assert kernel("stage3_block1_proj2_conv").shape[-1] == 2 * inc[2]
    # The third unit: one conv sliced, or DPN-68b's two.
    if name == "dpn68b":
        np.testing.assert_array_equal(
            kernel("stage2_block2_c1_conv"), theirs("features.conv3_2.c1x1_c1.weight")
        )
        np.testing.assert_array_equal(
            kernel("stage2_block2_c2_conv"), theirs("features.conv3_2.c1x1_c2.weight")
        )
    else:
        c = "features.conv3_2.c1x1_c.conv.weight"
        np.testing.assert_array_equal(kernel("stage2_block2_c1_conv"), theirs(c, slice(0, 2 * bw)))
        np.testing.assert_array_equal(
            kernel("stage2_block2_c2_conv"), theirs(c, slice(2 * bw, None))
        )
    # A grouped 3x3: (out, in / groups, 3, 3) -> (3, 3, in / groups, out).
    np.testing.assert_array_equal(
        kernel("stage4_block2_b_conv"), theirs("features.conv5_2.c3x3_b.conv.weight")
    )
    np.testing.assert_array_equal(kernel("stem_conv"), theirs("features.conv1_1.conv.weight"))
    norm = model.get_layer("encoder_stage1_block2_a_bn")
    np.testing.assert_array_equal(
        np.asarray(norm.moving_variance), state["features.conv2_2.c1x1_a.bn.running_var"]
    )
    final = model.get_layer("encoder_final_bn")
    np.testing.assert_array_equal(np.asarray(final.beta), state["features.conv5_bn_ac.bn.bias"])
    assert final.epsilon == 1e-3  # the reference's
    # And nothing unassigned: the port checks every variable against the table.
    table = port.get_table("dpn_b" if name == "dpn68b" else "dpn").bind(ours="encoder_")
    assert len(port.assign(model, state, table, "x")) == len(model.variables)


def test_weights_from_the_cache_bring_their_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    tiny = zoo.encoder_info("dpn68b").tiny_config
    shapes = dpn_shapes("dpn68b", tiny)
    shapes.pop("last_linear.weight"), shapes.pop("last_linear.bias")  # smp's files have none
    state = identifiable_state_dict(shapes)
    # smp's "imagenet+5k" lives in the smp-hub repository dpn68b.imagenet-5k.
    path = tmp_path / "weights" / "smp-hub" / "dpn68b.imagenet-5k" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("dpn68b", input_shape=(32, 32, 1), weights="imagenet+5k", **tiny)
    assert net.get_layer("encoder_gray_to_rgb") is not None
    # MXNet's preprocessing: (x * 255 - [124, 117, 104]) * 0.0167.
    layer = net.get_layer("encoder_preprocess")
    np.testing.assert_allclose(np.asarray(layer.scale), [255 * 0.0167] * 3, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(layer.offset), -np.array([124, 117, 104]) * 0.0167, rtol=1e-6
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stem_conv").kernel),
        state["features.conv1_1.conv.weight"].transpose(2, 3, 1, 0),
    )


def test_weights_names_are_smps():
    assert {n: list(zoo.pretrained.sources(n)) for n in CONFIGS} == {
        "dpn68": ["imagenet"],
        "dpn68b": ["imagenet+5k"],
        "dpn92": ["imagenet+5k"],
        "dpn98": ["imagenet"],
        "dpn107": ["imagenet+5k"],
        "dpn131": ["imagenet"],
    }
    source = zoo.pretrained.sources("dpn107")["imagenet+5k"]
    assert source.url == (
        "https://huggingface.co/smp-hub/dpn107.imagenet-5k/resolve/"
        "dab4cd6b8b79de3db970f2dbff85359a8847db05/model.safetensors"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k_r": 12, "groups": 8}, r"`k_r`: expected a multiple of `groups` \(8\)"),
        ({"inc_sec": (4, 4, 4)}, r"`inc_sec`: expected 4 positive integers"),
        ({"output_stride": 4}, r"output_stride=4"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.create_encoder("dpn68", input_shape=(64, 64, 3), **kwargs)


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "dpn68", "encoder_stage2_block2_b_conv")


# rtol 2e-4: with smp's random batch-norm statistics, smp's own float32 U-Net on dpn68 is
# 2.3e-4 (0.9e-4 of the largest logit) from its float64 copy, ours 3.0e-4, and the two
# float32 runs 1.3e-4 apart; the encoders' features match float64 as closely as smp's
# float32 does at every stride. A bug is far larger: epsilon 1e-5 in the final batch norm
# alone gives 2.8e-2, the strided 3x3 convs padded as TensorFlow's "same" 2.6.
PARITY_RTOL = 2e-4


@pytest.mark.slow  # full DPN models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_dpn_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "dpn68", {}),
        ("FPN", "fpn", ".safetensors", 1, "dpn68b", {}),
        # Output stride 8 (smp's DeepLabV3 default): stages 3 and 4 dilated.
        ("DeepLabV3", "deeplabv3", ".pth", 2, "dpn68", {"decoder_channels": 64}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=PARITY_RTOL)


@pytest.mark.slow  # full DPN-92 models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_dpn92_port_with_equal_logits(tmp_path, monkeypatch):
    # (FPN's wiring to a DPN is checked on dpn68b above; here DPN-92's widths and groups.)
    specs = [
        ("Unet", "unet", ".safetensors", 1, "dpn92", {}),
        # Output stride 16 (smp's DeepLabV3Plus default): stage 4 dilated.
        ("DeepLabV3Plus", "deeplabv3plus", ".pth", 1, "dpn92", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), rtol=PARITY_RTOL)


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", encoder) for encoder in ("dpn68", "dpn92")])
