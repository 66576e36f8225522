"""DenseNet encoders (torchvision layout, smp's densenet*): parameter counts, every checkpoint
key (today's and torchvision's older names), pretrained weights, and smp models on them
ported with equal logits."""

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

# torchvision's densenet(growth_rate, block_config, num_init_features) per variant, and its
# published parameter totals (classifier included: features x 1000 + 1000).
CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64, 7_978_856),
    "densenet161": (48, (6, 12, 36, 24), 96, 28_681_000),
    "densenet169": (32, (6, 12, 32, 32), 64, 14_149_480),
    "densenet201": (32, (6, 12, 48, 32), 64, 20_013_928),
}


def torchvision_shapes(name, growth=None, stem=None, bn_size=4, legacy=False):
    """Key -> shape of torchvision's ``DenseNet.features`` (from its code); `legacy`: the
    names of torchvision's files before 0.3 (``norm.1``)."""
    default_growth, blocks, default_stem, _ = CONFIGS[name]
    growth, stem = growth or default_growth, stem or default_stem
    shapes, sep = {}, "." if legacy else ""

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["features.conv0.weight"] = (stem, 3, 7, 7)
    bn("features.norm0", stem)
    c = stem
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            layer = f"features.denseblock{b}.denselayer{i}"
            bn(f"{layer}.norm{sep}1", c)
            shapes[f"{layer}.conv{sep}1.weight"] = (bn_size * growth, c, 1, 1)
            bn(f"{layer}.norm{sep}2", bn_size * growth)
            shapes[f"{layer}.conv{sep}2.weight"] = (growth, bn_size * growth, 3, 3)
            c += growth
        if b < len(blocks):
            bn(f"features.transition{b}.norm", c)
            shapes[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    bn("features.norm5", c)
    shapes["classifier.weight"], shapes["classifier.bias"] = (1000, c), (1000,)
    return shapes


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_equal_torchvisions_published_totals(name):
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    shapes = torchvision_shapes(name)
    total = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))
    assert total == CONFIGS[name][3]
    features = total - int(np.prod(shapes["classifier.weight"])) - 1000
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == features


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_feature_channels_are_smps(name):
    # smp's out_channels for the stride-2 ... 32 features.
    want = {
        "densenet121": [64, 256, 512, 1024, 1024],
        "densenet161": [96, 384, 768, 2112, 2208],
        "densenet169": [64, 256, 512, 1280, 1664],
        "densenet201": [64, 256, 512, 1792, 1920],
    }[name]
    with shapes_only():  # output shapes only: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(64, 64, 3))
    assert [encoder.output[s].shape[1:] for s in (2, 4, 8, 16, 32)] == [
        (64 // s, 64 // s, c) for s, c in zip((2, 4, 8, 16, 32), want, strict=True)
    ]


@pytest.mark.parametrize("legacy", [False, True])
def test_every_key_lands_in_its_variable(tmp_path, legacy):
    tiny = zoo.encoder_info("densenet121").tiny_config
    shapes = torchvision_shapes(
        "densenet121", tiny["growth_rate"], tiny["num_init_features"], tiny["bn_size"], legacy
    )
    state = identifiable_state_dict(shapes)
    path = tmp_path / "densenet121.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        "densenet121", input_shape=(64, 64, 3), weights=str(path), input_normalization=None,
        **tiny,
    )  # fmt: skip
    sep = "." if legacy else ""
    conv = model.get_layer("encoder_block3_layer24_conv2")
    np.testing.assert_array_equal(
        np.asarray(conv.kernel),
        state[f"features.denseblock3.denselayer24.conv{sep}2.weight"].transpose(2, 3, 1, 0),
    )
    norm = model.get_layer("encoder_block1_layer1_bn1")
    np.testing.assert_array_equal(
        np.asarray(norm.moving_variance),
        state[f"features.denseblock1.denselayer1.norm{sep}1.running_var"],
    )
    final = model.get_layer("encoder_final_bn")
    np.testing.assert_array_equal(np.asarray(final.gamma), state["features.norm5.weight"])
    # And nothing unassigned: the port checks every variable against the table.
    table = port.get_table("densenet").bind(ours="encoder_")
    renamed = {zoo.encoders.densenet._rename_legacy(k): v for k, v in state.items()}
    assert len(port.assign(model, renamed, table, "x")) == len(model.variables)


def test_feature_maps_are_smps_tensors():
    # Strides 4-16: a transition's ReLU before its conv; stride 32: the final BN, no ReLU.
    encoder = zoo.create_encoder("densenet121", input_shape=(64, 64, 3), growth_rate=4)
    layer = {s: t._keras_history.operation.name for s, t in encoder.output.items()}
    assert layer == {
        2: "encoder_stem_relu",
        4: "encoder_transition1_relu",
        8: "encoder_transition2_relu",
        16: "encoder_transition3_relu",
        32: "encoder_final_bn",
    }
    # The stem pool pads one pixel each side (PyTorch), not TF's "same".
    assert tuple(encoder.get_layer("encoder_stem_pool_pad").padding) == ((1, 1), (1, 1))


def test_imagenet_weights_from_the_cache_bring_their_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    tiny = zoo.encoder_info("densenet169").tiny_config
    shapes = torchvision_shapes(
        "densenet169", tiny["growth_rate"], tiny["num_init_features"], tiny["bn_size"]
    )
    shapes.pop("classifier.weight"), shapes.pop("classifier.bias")  # smp's files have none
    state = identifiable_state_dict(shapes)
    path = tmp_path / "weights" / "smp-hub" / "densenet169.imagenet" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("densenet169", input_shape=(32, 32, 1), weights="imagenet", **tiny)
    assert net.get_layer("encoder_gray_to_rgb") is not None
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stem_conv").kernel),
        state["features.conv0.weight"].transpose(2, 3, 1, 0),
    )


def test_dilated_output_strides_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"'densenet121' supports output strides \[32\]"):
        zoo.create_model("deeplabv3", encoder="densenet121", num_classes=2)


@pytest.mark.slow  # 58 dense layers even when tiny: ~35 s to build, fit and reload
def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "densenet121", "encoder_block2_layer3_conv2")


@pytest.mark.slow  # full DenseNet models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_densenet_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "densenet121", {}),
        ("FPN", "fpn", ".safetensors", 1, "densenet161", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", "densenet121"), ("fpn", "FPN", "densenet121")])
