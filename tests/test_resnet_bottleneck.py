"""ResNet-50/101/152 and ResNeXt encoders (torchvision bottlenecks): the checkpoint layout,
parameter counts, features equal to torchvision's, smp models on them ported with equal
logits, and smp's named weights."""

import keras
import numpy as np
import pytest
from helpers import assert_params_equal_smp, unet_trains_saves_and_reloads
from safetensors.numpy import save_file
from test_port import expected_key, identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import reference_python, requires_reference, run_reference

import zoo
from zoo import port, pretrained
from zoo.build_context import shapes_only

# torchvision's (blocks, groups, width per group) of each encoder.
ARCHS = {
    "resnet50": ((3, 4, 6, 3), 1, 64),
    "resnet101": ((3, 4, 23, 3), 1, 64),
    "resnet152": ((3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), 32, 4),
    "resnext101_32x4d": ((3, 4, 23, 3), 32, 4),
    "resnext101_32x8d": ((3, 4, 23, 3), 32, 8),
    "resnext101_32x16d": ((3, 4, 23, 3), 32, 16),
    "resnext101_32x32d": ((3, 4, 23, 3), 32, 32),
    "resnext101_32x48d": ((3, 4, 23, 3), 32, 48),
}


def bottleneck_shapes(blocks, width=64, groups=1, width_per_group=64, classes=1000):
    """Key -> shape of torchvision's ResNet with Bottleneck blocks (from its definition:
    ``width = int(planes * width_per_group / 64) * groups``, expansion 4)."""
    shapes = {"conv1.weight": (width, 3, 7, 7)}

    def bn(prefix, channels):
        shapes.update({f"{prefix}.{p}": (channels,) for p in ("weight", "bias")})
        shapes.update({f"{prefix}.{p}": (channels,) for p in ("running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", width)
    cin = width
    for stage, n in enumerate(blocks, start=1):
        planes = width * 2 ** (stage - 1)
        inner = int(planes * width_per_group / 64) * groups
        for b in range(n):
            pre = f"layer{stage}.{b}"
            shapes[f"{pre}.conv1.weight"] = (inner, cin, 1, 1)
            shapes[f"{pre}.conv2.weight"] = (inner, inner // groups, 3, 3)
            shapes[f"{pre}.conv3.weight"] = (4 * planes, inner, 1, 1)
            for i, channels in ((1, inner), (2, inner), (3, 4 * planes)):
                bn(f"{pre}.bn{i}", channels)
            if b == 0:  # every stage's first block changes the channels (64 -> 256 too)
                shapes[f"{pre}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
                bn(f"{pre}.downsample.1", 4 * planes)
            cin = 4 * planes
    shapes["fc.weight"] = (classes, cin)
    shapes["fc.bias"] = (classes,)
    return shapes


def trainable_count(shapes):
    """torchvision's parameter count without the classifier (no running statistics)."""
    return sum(
        int(np.prod(s))
        for k, s in shapes.items()
        if not k.startswith("fc.") and not k.endswith(("running_mean", "running_var", "tracked"))
    )


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_trainable_params_equal_torchvision(name):
    blocks, groups, wpg = ARCHS[name]
    with shapes_only():  # ResNeXt-101 32x48d's 827M weights not drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    ours = sum(int(np.prod(v.shape)) for v in encoder.trainable_variables)
    assert ours == trainable_count(bottleneck_shapes(blocks, 64, groups, wpg))


def test_published_torchvision_sizes():
    # torchvision's model cards (with the 2048 -> 1000 classifier, 2,049,000 parameters).
    published = {"resnet50": 25_557_032, "resnext50_32x4d": 25_028_904}
    published |= {"resnet152": 60_192_808, "resnext101_32x8d": 88_791_336}
    for name, total in published.items():
        blocks, groups, wpg = ARCHS[name]
        assert trainable_count(bottleneck_shapes(blocks, 64, groups, wpg)) == total - 2_049_000


@pytest.mark.parametrize("name, groups, wpg", [("resnet50", 1, 64), ("resnext50_32x4d", 4, 16)])
def test_every_key_lands_in_its_variable(tmp_path, name, groups, wpg):
    shapes = bottleneck_shapes(ARCHS[name][0], 8, groups, wpg)
    state = identifiable_state_dict(shapes)
    kwargs = {"base_width": 8, "groups": groups, "width_per_group": wpg}
    model = zoo.create_encoder(name, input_shape=(32, 32, 3), **kwargs)
    table = port.get_table("resnet").bind(ours="encoder_")
    writes = port.assign(model, state, table, source="ckpt")
    assert len(writes) == len(model.variables)
    used = set()
    for v in model.variables:
        key, layout = expected_key(v.path)
        want = state[key].transpose(2, 3, 1, 0) if layout == "conv" else state[key]
        np.testing.assert_array_equal(np.asarray(v), want, err_msg=f"{v.path} <- {key}")
        used.add(key)
    assert {k for k in shapes if k not in used} == {"fc.weight", "fc.bias"} | {
        k for k in shapes if "num_batches" in k
    }


def test_bad_group_arguments_are_one_line():
    with pytest.raises(ValueError, match=r"`groups`.*Received: groups=0"):
        zoo.create_encoder("resnext50_32x4d", input_shape=(32, 32, 3), groups=0)
    with pytest.raises(ValueError, match=r"width_per_group=4 with base_width=8"):
        zoo.create_encoder("resnext50_32x4d", input_shape=(32, 32, 3), base_width=8)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_grouped_stages_keep_the_resolution(output_stride):
    kwargs = zoo.encoder_info("resnext50_32x4d").metadata["tiny_config"]
    encoder = zoo.create_encoder(
        "resnext50_32x4d", input_shape=(64, 64, 3), output_stride=output_stride, **kwargs
    )
    features = encoder(np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32))
    assert max(features) == output_stride
    assert features[output_stride].shape == (1, 64 // output_stride, 64 // output_stride, 256)
    # The dilated stages' 3x3 convs are dilated, grouped, and see more than their pixel.
    conv = encoder.get_layer("encoder_stage4_block2_conv2_conv")
    assert conv.groups == 4 and conv.dilation_rate == (32 // output_stride,) * 2


def test_resnext_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "resnext50_32x4d", "encoder_stage2_block1_conv2_conv")


# === smp's named weights ===


def test_named_weights_are_smps_pinned_files():
    for name in ARCHS:
        for weights, source in pretrained.sources(name).items():
            assert source.url.startswith(f"https://huggingface.co/smp-hub/{name}.{weights}/")
            assert source.url.endswith("/model.safetensors")
            assert "/resolve/main/" not in source.url  # a pinned revision
    assert set(pretrained.sources("resnext101_32x8d")) == {"imagenet", "instagram", "ssl", "swsl"}
    assert set(pretrained.sources("resnext101_32x4d")) == {"ssl", "swsl"}


def test_named_weights_from_the_cache_land_in_the_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    # smp-hub files hold the encoder's own state dict: no classifier.
    shapes = bottleneck_shapes(ARCHS["resnext50_32x4d"][0], 8, 4, 16)
    state = {k: v for k, v in identifiable_state_dict(shapes).items() if not k.startswith("fc.")}
    path = tmp_path / "weights" / "smp-hub" / "resnext50_32x4d.swsl" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    model = zoo.create_model(
        "unet",
        encoder="resnext50_32x4d",
        encoder_kwargs={"base_width": 8, "groups": 4, "width_per_group": 16},
        encoder_weights="swsl",
        decoder_channels=[16, 16, 8, 8, 8],
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_stage3_block4_conv2_conv").kernel),
        state["layer3.3.conv2.weight"].transpose(2, 3, 1, 0),
    )
    with pytest.raises(ValueError, match=r"'imagenet'.*'ssl'.*'swsl'|ssl.*swsl"):
        zoo.create_encoder("resnext101_32x4d", input_shape=(32, 32, 3), weights="imagenet")


# === Parity with torchvision and smp (reference interpreter) ===


@requires_reference("torch", "torchvision", "safetensors")
@pytest.mark.parametrize(
    "arch", ["resnext50_32x4d", pytest.param("resnet50", marks=pytest.mark.slow)]
)
def test_features_equal_torchvision(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    images = np.random.default_rng(0).random((2, 75, 101, 3), dtype=np.float32)
    path = tmp_path / f"{arch}.safetensors"
    theirs = run_reference(
        "torchvision_resnet", {"images": images}, arch=arch, path=str(path), float64=True
    )
    encoder = zoo.create_encoder(arch, input_shape=(None, None, 3), weights=str(path))
    ours = encoder(images, training=False)
    for stride in (2, 4, 8, 16, 32):
        exact, want, got = theirs[f"s{stride}_f64"], theirs[f"s{stride}"], np.asarray(ours[stride])
        assert got.shape == want.shape, stride
        scale = float(np.abs(exact).max())
        assert scale < 50  # unit-scale features: the tolerance means something
        # Fifty random bottlenecks amplify float32 round-off: torch's own float32 features
        # are ~1e-3 off its float64 ones at stride 32. Ours may be as far, not more (a
        # wrong weight or padding is off by O(1)).
        theirs_off = float(np.abs(want - exact).max())
        ours_off = float(np.abs(got - exact).max())
        print(f"{arch} stride {stride}: ours {ours_off:.2e}, torch f32 {theirs_off:.2e} off f64")
        assert ours_off < 3 * theirs_off + 1e-6 * scale, (stride, ours_off, theirs_off)


@pytest.mark.slow  # full ResNet-50 / ResNeXt-50 models in both frameworks, ~1 min
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_bottleneck_encoders_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "resnet50", {}),
        # Output stride 16: smp dilates the last stage's grouped convs.
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 2, "resnext50_32x4d", {}),
        # Output stride 8 (smp's DeepLabV3 default): the two last stages dilated.
        ("DeepLabV3", "deeplabv3", ".pth", 1, "resnext50_32x4d", {"decoder_channels": 64}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


@pytest.mark.slow  # builds smp's models in the reference interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_trainable_params_equal_smp():
    assert_params_equal_smp(
        [
            (model, arch, encoder)
            for model, arch in [("unet", "Unet"), ("fpn", "FPN"), ("pan", "PAN")]
            for encoder in ("resnet50", "resnext50_32x4d")
        ]
    )


# === GroupedConv2D ===


@pytest.mark.parametrize("direct", [True, False], ids=["onednn", "per-group"])
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (1, 2)])
def test_grouped_conv_equals_keras_conv(monkeypatch, direct, strides, dilation):
    # Keras' own grouped Conv2D (its XLA path) is the reference: outputs and both gradients.
    import tensorflow as tf

    from zoo.layers import GroupedConv2D, grouped_conv2d

    monkeypatch.setattr(grouped_conv2d, "direct_dilation", lambda: direct)
    kwargs = {"strides": strides, "dilation_rate": dilation, "padding": "same", "groups": 4}
    ref, ours = keras.layers.Conv2D(8, 3, **kwargs), GroupedConv2D(8, 3, **kwargs)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 11, 12)), tf.float32)
    ref.build(x.shape)
    ours.build(x.shape)
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
    ref.set_weights(ours.get_weights())
    results = []
    for layer in (ref, ours):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert GroupedConv2D.from_config(ours.get_config()).get_config() == ours.get_config()
