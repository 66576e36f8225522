"""EfficientNets in timm's layout (smp's timm-efficientnet-* and timm-tf_efficientnet_lite*):
channels, the checkpoint keys, each weights' normalization, and smp models on them ported
with equal logits."""

import numpy as np
import pytest
from helpers import assert_params_equal_smp
from safetensors.numpy import save_file
from test_efficientnet import b0_shapes
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import port, pretrained
from zoo.build_context import shapes_only

# smp's out_channels (stride 2 ... 32) of each variant, from its encoder table.
SMP_CHANNELS = {
    "timm-efficientnet-b0": (32, 24, 40, 112, 320),
    "timm-efficientnet-b3": (40, 32, 48, 136, 384),
    "timm-efficientnet-b8": (72, 56, 88, 248, 704),
    "timm-efficientnet-l2": (136, 104, 176, 480, 1376),
    "timm-tf_efficientnet_lite0": (32, 24, 40, 112, 320),
    "timm-tf_efficientnet_lite3": (32, 32, 48, 136, 384),
    "timm-tf_efficientnet_lite4": (32, 32, 56, 160, 448),
}
B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)


@pytest.mark.parametrize("name", sorted(SMP_CHANNELS))
def test_feature_channels_equal_smps(name):
    with shapes_only():  # output shapes only: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(64, 64, 3))
    assert tuple(int(encoder.output[s].shape[-1]) for s in (2, 4, 8, 16, 32)) == SMP_CHANNELS[name]


def timm_b0_state(width=1.0):
    """efficientnet_pytorch's B0 keys renamed to timm's (blocks.{stage}.{i}; stage 0's
    depthwise-separable blocks name their convs differently), identifiable values."""
    state = identifiable_state_dict(b0_shapes(width))
    flat = [(s, i) for s, n in enumerate(B0_REPEATS) for i in range(n)]
    renamed = {}
    for key, value in state.items():
        if key.startswith(("_conv_stem.", "_bn0.")):
            key = key.replace("_conv_stem.", "conv_stem.").replace("_bn0.", "bn1.")
        elif key.startswith("_blocks."):
            _, n, module, param = key.split(".", 3)
            stage, i = flat[int(n)]
            names = {
                "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn1" if stage == 0 else "bn2", "_se_reduce": "se.conv_reduce",
                "_se_expand": "se.conv_expand",
                "_project_conv": "conv_pw" if stage == 0 else "conv_pwl",
                "_bn2": "bn2" if stage == 0 else "bn3",
            }  # fmt: skip
            key = f"blocks.{stage}.{i}.{names[module]}.{param}"
        renamed[key] = value
    return renamed


def test_every_timm_key_lands_in_its_variable():
    state = timm_b0_state(0.25)
    state["conv_head.weight"] = np.zeros((8, 80, 1, 1), np.float32)  # smp keeps, never runs
    model = zoo.create_encoder("timm-efficientnet-b0", input_shape=(64, 64, 3), width_scale=0.25)
    table = port.get_table("timm_efficientnet").bind(ours="encoder_")
    writes = port.assign(model, state, table, source="ckpt")
    assert len(writes) == len([v for v in model.variables if "seed_generator" not in v.path])
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_block0_0_project_conv").kernel),
        state["blocks.0.0.conv_pw.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_block5_3_se_fc2").bias),
        state["blocks.5.3.se.conv_expand.bias"],
    )


def test_lite_has_relu6_no_squeeze_and_a_fixed_stem():
    net = zoo.create_encoder("timm-tf_efficientnet_lite4", input_shape=(64, 64, 3))
    names = [layer.name for layer in net.layers]
    assert not [n for n in names if "_se_" in n] and "encoder_stem_relu6" in names
    assert net.get_layer("encoder_stem_conv").filters == 32  # not scaled by 1.4
    assert max(int(n.split("_")[1][5:]) for n in names if n.startswith("encoder_block")) == 6


@pytest.mark.parametrize(
    "name, weights, mean",
    [
        ("timm-efficientnet-b0", "noisy-student", (0.485, 0.456, 0.406)),
        ("timm-efficientnet-b0", "advprop", (0.5, 0.5, 0.5)),
        ("timm-tf_efficientnet_lite0", "imagenet", (0.5, 0.5, 0.5)),
    ],
)
def test_each_weights_bring_their_normalization(tmp_path, monkeypatch, name, weights, mean):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    # Lite0 is B0 without squeeze-and-excitation (its 32-channel stem is never scaled).
    width = 1.0 if "lite" in name else 0.25
    state = {k: v for k, v in timm_b0_state(width).items() if "lite" not in name or ".se." not in k}
    path = tmp_path / "weights" / "smp-hub" / f"{name}.{weights}" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    kwargs = {"width_scale": width, "weights": weights}
    net = zoo.create_encoder(name, input_shape=(32, 32, 3), **kwargs)
    offset = np.asarray(net.get_layer("encoder_preprocess").offset)
    scale = np.asarray(net.get_layer("encoder_preprocess").scale)
    np.testing.assert_allclose(-offset / scale, mean, rtol=1e-5)
    assert "/resolve/main/" not in pretrained.sources(name)[weights].url


@pytest.mark.slow  # full EfficientNet models in both frameworks, ~1 min
@requires_reference("torch", "segmentation_models_pytorch", "timm")
def test_smp_models_on_timm_efficientnets_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "timm-efficientnet-b0", {}),
        # Output stride 16: smp dilates timm's stages 5-6.
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "timm-efficientnet-b2", {}),
        ("FPN", "fpn", ".pth", 1, "timm-tf_efficientnet_lite1", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


@pytest.mark.slow  # builds smp's models in the reference interpreter
@requires_reference("torch", "segmentation_models_pytorch", "timm")
def test_unet_params_equal_the_ones_smp_runs():
    encoders = ("timm-efficientnet-b1", "timm-tf_efficientnet_lite2")
    assert_params_equal_smp(
        [("unet", "Unet", encoder, {"used_only": True}) for encoder in encoders]
    )
