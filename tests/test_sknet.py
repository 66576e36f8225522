"""Selective-kernel ResNets (timm layout, smp's timm-skresnet* / timm-skresnext50_32x4d):
parameter counts, feature maps, every checkpoint key, the selection layer, the strided
dilated path, pretrained weights, and smp models on them ported with equal logits."""

import keras
import numpy as np
import pytest
from helpers import (
    assert_params_equal_smp,
    divisible,
    features_match_smp_encoder,
    unet_trains_saves_and_reloads,
)
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from test_port_smp import port as port_smp
from torch_ref import reference_python, requires_reference, run_reference

import zoo
from zoo import port, pretrained
from zoo.build_context import shapes_only
from zoo.layers.selective_kernel_attention import SelectiveKernelAttention

# smp 0.6's block arguments: (blocks, bottleneck, cardinality, base_width, rd_ratio), and the
# encoder's parameters as smp builds it (counted with torch on smp 0.6, no classifier).
CONFIGS = {
    "timm-skresnet18": ((2, 2, 2, 2), False, 1, 64, 1 / 8, 11_441_952),
    "timm-skresnet34": ((3, 4, 6, 3), False, 1, 64, 1 / 8, 21_764_720),
    "timm-skresnext50_32x4d": ((3, 4, 6, 3), True, 32, 4, 1 / 16, 23_939_056),
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def timm_shapes(name, width=64, groups=None, width_per_group=None):
    """Key -> shape of timm's ResNet with smp's selective-kernel blocks (from timm's code,
    classifier included); `width`: stem and first-stage planes (64 in timm)."""
    blocks, bottleneck, cardinality, base, rd_ratio, _ = CONFIGS[name]
    groups, base = groups or cardinality, width_per_group or base
    shapes = {}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def selective(prefix, cin, cout, g):
        # split_input: each path sees half the input channels, in min(cout, g) groups.
        for p in (0, 1):
            shapes[f"{prefix}.paths.{p}.conv.weight"] = (cout, cin // 2 // min(cout, g), 3, 3)
            bn(f"{prefix}.paths.{p}.bn", cout)
        attn = divisible(cout * rd_ratio)
        shapes[f"{prefix}.attn.fc_reduce.weight"] = (attn, cout, 1, 1)
        bn(f"{prefix}.attn.bn", attn)
        shapes[f"{prefix}.attn.fc_select.weight"] = (2 * cout, attn, 1, 1)

    shapes["conv1.weight"] = (width, 3, 7, 7)
    bn("bn1", width)
    cin = width
    for stage, n in enumerate(blocks, start=1):
        planes = width * 2 ** (stage - 1)
        out = planes * (4 if bottleneck else 1)
        for b in range(n):
            pre = f"layer{stage}.{b}"
            if bottleneck:
                inner = int(np.floor(planes * base / 64)) * groups
                shapes[f"{pre}.conv1.conv.weight"] = (inner, cin, 1, 1)
                bn(f"{pre}.conv1.bn", inner)
                selective(f"{pre}.conv2", inner, inner, groups)
                shapes[f"{pre}.conv3.conv.weight"] = (out, inner, 1, 1)
                bn(f"{pre}.conv3.bn", out)
            else:
                selective(f"{pre}.conv1", cin, planes, 1)
                shapes[f"{pre}.conv2.conv.weight"] = (planes, planes, 3, 3)
                bn(f"{pre}.conv2.bn", planes)
            if b == 0 and (stage > 1 or cin != out):
                shapes[f"{pre}.downsample.0.weight"] = (out, cin, 1, 1)
                bn(f"{pre}.downsample.1", out)
            cin = out
    shapes["fc.weight"], shapes["fc.bias"] = (1000, cin), (1000,)
    return shapes


def count(shapes):
    skip = BUFFERS + ("fc.weight", "fc.bias")
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(skip))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_equal_smps(name):
    assert count(timm_shapes(name)) == CONFIGS[name][-1]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == CONFIGS[name][-1]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_feature_channels_are_smps(name):
    # smp's out_channels for the stride-2 ... 32 features.
    want = [64, 256, 512, 1024, 2048] if CONFIGS[name][1] else [64, 64, 128, 256, 512]
    encoder = zoo.create_encoder(name, input_shape=(64, 96, 3))
    assert [tuple(encoder.output[s].shape[1:]) for s in (2, 4, 8, 16, 32)] == [
        (64 // s, 96 // s, c) for s, c in zip((2, 4, 8, 16, 32), want, strict=True)
    ]


@pytest.mark.parametrize("name", ["timm-skresnet18", "timm-skresnext50_32x4d"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    tiny = zoo.encoder_info(name).tiny_config
    shapes = timm_shapes(name, tiny["base_width"], tiny.get("groups"), tiny.get("width_per_group"))
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **tiny
    )
    sk = "conv2" if CONFIGS[name][1] else "conv1"

    def kernel(layer):
        return np.asarray(model.get_layer(f"encoder_{layer}").kernel)

    def oihw(key):
        return state[key].transpose(2, 3, 1, 0)

    np.testing.assert_array_equal(kernel("stem_conv"), oihw("conv1.weight"))
    for p in (0, 1):
        got = kernel(f"stage2_block1_{sk}_path{p}_conv")
        np.testing.assert_array_equal(got, oihw(f"layer2.0.{sk}.paths.{p}.conv.weight"))
    got = kernel(f"stage4_block2_{sk}_attn_fc_select")
    np.testing.assert_array_equal(got, oihw(f"layer4.1.{sk}.attn.fc_select.weight"))
    np.testing.assert_array_equal(
        np.asarray(model.get_layer(f"encoder_stage3_block1_{sk}_attn_bn").moving_variance),
        state[f"layer3.0.{sk}.attn.bn.running_var"],
    )
    np.testing.assert_array_equal(
        kernel("stage3_block1_downsample_conv"), oihw("layer3.0.downsample.0.weight")
    )
    last = "conv3" if CONFIGS[name][1] else "conv2"
    np.testing.assert_array_equal(
        np.asarray(model.get_layer(f"encoder_stage1_block2_{last}_bn").gamma),
        state[f"layer1.1.{last}.bn.weight"],
    )
    # And nothing unassigned: the port checks every variable against the table.
    table = port.get_table("sknet").bind(ours="encoder_")
    assert len(port.assign(model, state, table, "x")) == len(model.variables)


def test_selective_kernel_attention_equals_numpy_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    paths = [rng.normal(size=(2, 5, 6, 4)).astype(np.float32) for _ in range(3)]
    logits = rng.normal(size=(2, 1, 1, 12)).astype(np.float32)
    # timm: view(B, paths, C), softmax over the paths, weighted sum.
    w = np.exp(logits.reshape(2, 1, 1, 3, 4))
    w /= w.sum(axis=3, keepdims=True)
    want = sum(w[:, :, :, p] * paths[p] for p in range(3))
    layer = SelectiveKernelAttention(3, name="select")
    np.testing.assert_allclose(np.asarray(layer([logits, *paths])), want, rtol=1e-5, atol=1e-6)
    assert layer.get_config()["num_paths"] == 3
    inputs = [keras.Input((1, 1, 12)), *[keras.Input((None, None, 4)) for _ in range(3)]]
    model = keras.Model(inputs, SelectiveKernelAttention(3, name="select")(inputs))
    assert model.output.shape == (None, None, None, 4)
    model.save(tmp_path / "select.keras")
    loaded = keras.saving.load_model(tmp_path / "select.keras", safe_mode=True)
    np.testing.assert_array_equal(
        np.asarray(loaded([logits, *paths])), np.asarray(model([logits, *paths]))
    )


@pytest.mark.parametrize("bad", [1, 0, 2.0, True, "2"])
def test_selective_kernel_attention_rejects_bad_num_paths(bad):
    with pytest.raises(ValueError, match=rf"num_paths={bad!r}"):
        SelectiveKernelAttention(bad)


def test_selective_kernel_attention_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="num_paths \\* C"):
        SelectiveKernelAttention(2)([keras.Input((1, 1, 6)), *[keras.Input((4, 4, 4))] * 2])
    with pytest.raises(ValueError, match="3 inputs"):
        SelectiveKernelAttention(2)([keras.Input((1, 1, 8)), keras.Input((4, 4, 4))])


@pytest.mark.parametrize("size", [7, 8])
def test_strided_dilated_path_is_the_dilated_conv_subsampled(size):
    # timm's 3x3 conv with stride 2, dilation 2 and padding 2, computed on every other
    # pixel: equal to the stride-1 dilated conv ('same': padding 2) read at even pixels.
    model = zoo.create_encoder("timm-skresnet18", input_shape=(size, size, 3), base_width=8)
    conv = model.get_layer("encoder_stage2_block1_conv1_path1_conv")
    x = np.random.default_rng(1).normal(size=(1, size, size, 4)).astype(np.float32)
    got = conv(model.get_layer("encoder_stage2_block1_conv1_path1_subsample")(x))
    dense = keras.layers.Conv2D(16, 3, padding="same", dilation_rate=2, use_bias=False)
    dense.build(x.shape)
    dense.kernel.assign(conv.kernel)
    want = np.asarray(dense(x))[:, ::2, ::2]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilation_is_smps_make_dilated(output_stride):
    # smp's make_dilated: every conv of the dilated stages has stride 1 and the stage's
    # rate (stage 3: 16 / output_stride, stage 4: 32 / output_stride), both paths included.
    tiny = zoo.encoder_info("timm-skresnext50_32x4d").tiny_config
    model = zoo.create_encoder(
        "timm-skresnext50_32x4d", input_shape=(64, 64, 3), output_stride=output_stride, **tiny
    )
    dense = zoo.create_encoder("timm-skresnext50_32x4d", input_shape=(64, 64, 3), **tiny)
    assert model.count_params() == dense.count_params()
    assert max(model.output) == output_stride
    rates = {3: 16 // output_stride, 4: 32 // output_stride}
    for stage, rate in rates.items():
        for block, p in ((1, 0), (1, 1), (2, 0), (2, 1)):
            conv = model.get_layer(f"encoder_stage{stage}_block{block}_conv2_path{p}_conv")
            if rate > 1:
                assert tuple(conv.dilation_rate) == (rate, rate), (stage, block, p)
                assert tuple(conv.strides) == (1, 1)
            elif block == 2:  # undilated: timm's dilations 1 and 2
                assert tuple(conv.dilation_rate) == (p + 1, p + 1)
    layer = model.get_layer("encoder_stage4_block1_downsample_conv")
    assert tuple(layer.strides) == (1, 1)


def test_widths_that_do_not_split_into_whole_groups_raise():
    with pytest.raises(ValueError, match=r"`base_width`: .*Received: base_width=7"):
        zoo.create_encoder("timm-skresnet18", input_shape=(64, 64, 3), base_width=7)
    with pytest.raises(ValueError, match=r"stage 1 has 12 channels for 4 groups"):
        zoo.create_encoder(
            "timm-skresnext50_32x4d", input_shape=(64, 64, 3), base_width=8, groups=4,
            width_per_group=24,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"groups=0"):
        zoo.create_encoder("timm-skresnext50_32x4d", input_shape=(64, 64, 3), groups=0)
    with pytest.raises(TypeError, match="groups"):  # the basic blocks have no groups
        zoo.create_encoder("timm-skresnet34", input_shape=(64, 64, 3), groups=2)


def test_imagenet_weights_from_the_cache_bring_their_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    tiny = zoo.encoder_info("timm-skresnet34").tiny_config
    shapes = timm_shapes("timm-skresnet34", tiny["base_width"])
    shapes.pop("fc.weight"), shapes.pop("fc.bias")  # smp's files have none
    state = identifiable_state_dict(shapes)
    path = tmp_path / "weights" / "smp-hub" / "timm-skresnet34.imagenet" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("timm-skresnet34", input_shape=(32, 32, 1), weights="imagenet", **tiny)
    assert net.get_layer("encoder_gray_to_rgb") is not None
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stage4_block3_conv1_path1_conv").kernel),
        state["layer4.2.conv1.paths.1.conv.weight"].transpose(2, 3, 1, 0),
    )
    url = pretrained.sources("timm-skresnet34")["imagenet"].url
    assert (
        "smp-hub/timm-skresnet34.imagenet/resolve/2367796924a8182cc835ef6b5dc303917f923f99" in url
    )


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(
        tmp_path, "timm-skresnet18", "encoder_stage2_block1_conv1_path1_conv"
    )


@pytest.mark.slow  # 16 grouped selective-kernel blocks: ~40 s on 2 cores (optimizer tracing)
def test_skresnext_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(
        tmp_path, "timm-skresnext50_32x4d", "encoder_stage3_block1_conv2_path1_conv"
    )


@pytest.mark.slow  # full SK-ResNets in both frameworks, float32 and float64
@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name)


@pytest.mark.slow  # full SK-ResNet-18 models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_skresnet18_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-skresnet18", {}),
        # Output stride 8 (smp's DeepLabV3 default): stages 3 and 4 dilated, both paths.
        ("DeepLabV3", "deeplabv3", ".pth", 2, "timm-skresnet18", {"decoder_channels": 64}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


@pytest.mark.slow  # full SK-ResNeXt-50 models in both frameworks, in float32 and float64
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_skresnext_port_as_closely_as_torchs_own_float32(tmp_path, monkeypatch):
    # 16 grouped selective-kernel blocks with random batch norms: float32 round-off reaches
    # 1-2e-4 of the logits, torch's as ours (measured against our graph in float64, which
    # torch's float32 logits match as closely as ours do). A wrong dilation, path or padded
    # pixel is off by O(1) (1.2 of 1.34 measured for timm's (r, 2r) path dilations or a
    # strided path padded as TensorFlow's "same").
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    images = np.random.default_rng(0).random((2, 96, 128, 3), dtype=np.float32)
    specs = [
        ("FPN", "fpn", {}),
        # Output stride 16 (smp's DeepLabV3Plus default): stage 4 dilated.
        ("DeepLabV3Plus", "deeplabv3plus", {}),
    ]
    name = "timm-skresnext50_32x4d"
    models = [
        {"arch": a, "encoder": name, "classes": 1, "kwargs": kw, "path": str(tmp_path / f"{a}.pth")}
        for a, _, kw in specs
    ]
    theirs = run_reference("smp_model", {"images": images}, models=models)
    for i, (arch, model, _) in enumerate(specs):
        ours = port_smp(tmp_path, models[i]["path"], model, "--encoder", name, name=arch)
        got = np.asarray(ours(images, training=False))
        # The same graph and weights in float64.
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float64")
        try:
            exact_model = type(ours).from_config(ours.get_config())
        finally:
            keras.config.set_dtype_policy(policy)
        for mine, theirs_weight in zip(exact_model.weights, ours.weights, strict=True):
            mine.assign(np.asarray(theirs_weight, np.float64))
        exact = np.asarray(exact_model(images.astype(np.float64), training=False))
        want = theirs[f"logits_{i}"]
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(got - want).max())
        theirs_off, ours_off = float(np.abs(want - exact).max()), float(np.abs(got - exact).max())
        print(f"{arch} {name}: max |diff| {diff:.2e}; off float64: ours {ours_off:.2e}, torch "
              f"{theirs_off:.2e}; max |logit| {scale:.2f}")  # fmt: skip
        assert theirs_off < 1e-3 * scale, arch  # torch computes our graph
        assert ours_off < 3 * theirs_off + 1e-6 * scale, arch  # as closely as torch
        assert diff < 1e-3 * scale, arch


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", name) for name in sorted(CONFIGS)])
