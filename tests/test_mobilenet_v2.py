"""MobileNetV2 encoder (torchvision layout, smp's mobilenet_v2): parameter count, every
checkpoint key, PyTorch padding, and smp models on it ported with equal logits."""

import numpy as np
import pytest
from helpers import unet_trains_saves_and_reloads
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import port
from zoo.build_context import shapes_only

# torchvision's inverted residual settings: expansion, channels, repeats, stride.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)]
SETTINGS += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def torchvision_shapes():
    """Key -> shape of torchvision's ``mobilenet_v2().features`` (width 1), from its code."""
    shapes = {}

    def conv_bn(prefix, cout, cin_per_group, k, bn_prefix):
        shapes[f"{prefix}.weight"] = (cout, cin_per_group, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn_prefix}.{p}"] = (cout,)
        shapes[f"{bn_prefix}.num_batches_tracked"] = ()

    conv_bn("features.0.0", 32, 3, 3, "features.0.1")
    cin, i = 32, 1
    for t, c, n, _ in SETTINGS:
        for _ in range(n):
            hidden, pre = cin * t, f"features.{i}.conv"
            if t == 1:
                conv_bn(f"{pre}.0.0", hidden, 1, 3, f"{pre}.0.1")
                conv_bn(f"{pre}.1", c, hidden, 1, f"{pre}.2")
            else:
                conv_bn(f"{pre}.0.0", hidden, cin, 1, f"{pre}.0.1")
                conv_bn(f"{pre}.1.0", hidden, 1, 3, f"{pre}.1.1")
                conv_bn(f"{pre}.2", c, hidden, 1, f"{pre}.3")
            cin, i = c, i + 1
    conv_bn("features.18.0", 1280, 320, 1, "features.18.1")
    return shapes


def test_params_equal_torchvisions_features():
    # torchvision's mobilenet_v2: 3,504,872 parameters, 1,281,000 of them the classifier.
    shapes = torchvision_shapes()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    count = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))
    assert count == 3_504_872 - 1_281_000
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder("mobilenet_v2", input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == count


def test_every_key_lands_in_its_variable():
    shapes = torchvision_shapes()
    state = identifiable_state_dict(shapes)
    state["classifier.1.weight"] = np.zeros((1000, 1280), np.float32)
    state["classifier.1.bias"] = np.zeros((1000,), np.float32)
    model = zoo.create_encoder("mobilenet_v2", input_shape=(64, 64, 3))
    writes = port.assign(model, state, port.get_table("mobilenet_v2").bind(ours="encoder_"), "x")
    assert len(writes) == len(model.variables)
    dw = model.get_layer("encoder_block1_dw_conv")  # expansion 1: conv.0.0 is the depthwise
    np.testing.assert_array_equal(
        np.asarray(dw.kernel), state["features.1.conv.0.0.weight"].transpose(2, 3, 0, 1)
    )
    project = model.get_layer("encoder_block17_project_conv")
    np.testing.assert_array_equal(
        np.asarray(project.kernel), state["features.17.conv.2.weight"].transpose(2, 3, 1, 0)
    )
    head = model.get_layer("encoder_head_bn")
    np.testing.assert_array_equal(np.asarray(head.moving_mean), state["features.18.1.running_mean"])


def test_strided_convs_pad_like_pytorch():
    # A 3x3/2 conv pads one pixel on every side (PyTorch), not TF's "same" (0 top-left, 1
    # bottom-right at even sizes): the first output pixel sees the padded corner.
    encoder = zoo.create_encoder("mobilenet_v2", input_shape=(8, 8, 1), width_mult=0.25)
    assert tuple(encoder.get_layer("encoder_stem_pad").padding) == ((1, 1), (1, 1))
    assert encoder.get_layer("encoder_stem_conv").padding == "valid"


@pytest.mark.parametrize("output_stride, rates", [(16, {13: 1, 14: 2}), (8, {6: 1, 7: 2, 14: 4})])
def test_dilation_follows_smps_stages(output_stride, rates):
    encoder = zoo.create_encoder(
        "mobilenet_v2", input_shape=(64, 64, 3), width_mult=0.25, output_stride=output_stride
    )
    for block, rate in rates.items():
        conv = encoder.get_layer(f"encoder_block{block}_dw_conv")
        assert conv.dilation_rate == (rate, rate)
        if rate > 1:  # the stage's first block loses its stride
            assert conv.strides == (1, 1)
    assert max(encoder.output) == output_stride


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "mobilenet_v2", "encoder_block5_dw_conv")


@pytest.mark.slow  # full MobileNetV2 models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_mobilenet_v2_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "mobilenet_v2", {}),
        ("DeepLabV3", "deeplabv3", ".safetensors", 1, "mobilenet_v2", {"decoder_channels": 64}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))
