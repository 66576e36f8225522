"""EfficientNet-B0..B7 encoders (efficientnet_pytorch layout): widths and parameter counts
from the paper's scaling rules, static "same" padding, the checkpoint keys, and smp models on
them ported with equal logits."""

import math

import keras
import numpy as np
import pytest
from helpers import assert_params_equal_smp, unet_trains_saves_and_reloads
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import port, pretrained
from zoo.build_context import shapes_only

VARIANTS = [f"efficientnet-b{i}" for i in range(8)]
# smp's out_channels of each variant (stride 2 ... 32), from its encoder table.
SMP_CHANNELS = {
    "efficientnet-b0": (32, 24, 40, 112, 320),
    "efficientnet-b1": (32, 24, 40, 112, 320),
    "efficientnet-b2": (32, 24, 48, 120, 352),
    "efficientnet-b3": (40, 32, 48, 136, 384),
    "efficientnet-b4": (48, 32, 56, 160, 448),
    "efficientnet-b5": (48, 40, 64, 176, 512),
    "efficientnet-b6": (56, 40, 72, 200, 576),
    "efficientnet-b7": (64, 48, 80, 224, 640),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_feature_channels_equal_smps(name):
    with shapes_only():  # output shapes only: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(64, 64, 3))
    assert tuple(int(encoder.output[s].shape[-1]) for s in (2, 4, 8, 16, 32)) == SMP_CHANNELS[name]


def b0_shapes(width=1.0):
    """Key -> shape of efficientnet_pytorch's B0 blocks (from the paper's table; no head)."""
    stages = [(1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40), (3, 3, 6, 40, 80)]
    stages += [(3, 5, 6, 80, 112), (4, 5, 6, 112, 192), (1, 3, 6, 192, 320)]

    def rf(c):  # width scaling to a multiple of 8 (the reference rounding)
        r = max(8, int(c * width + 4) // 8 * 8)
        return r + 8 if r < 0.9 * c * width else r

    shapes = {"_conv_stem.weight": (rf(32), 3, 3, 3)}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("_bn0", rf(32))
    i = 0
    for repeats, k, e, cin, cout in stages:
        cin, cout = rf(cin), rf(cout)
        for r in range(repeats):
            inp = cin if r == 0 else cout
            hidden, pre = inp * e, f"_blocks.{i}"
            if e != 1:
                shapes[f"{pre}._expand_conv.weight"] = (hidden, inp, 1, 1)
                bn(f"{pre}._bn0", hidden)
            shapes[f"{pre}._depthwise_conv.weight"] = (hidden, 1, k, k)
            bn(f"{pre}._bn1", hidden)
            sq = max(1, int(inp * 0.25))
            shapes[f"{pre}._se_reduce.weight"] = (sq, hidden, 1, 1)
            shapes[f"{pre}._se_reduce.bias"] = (sq,)
            shapes[f"{pre}._se_expand.weight"] = (hidden, sq, 1, 1)
            shapes[f"{pre}._se_expand.bias"] = (hidden,)
            shapes[f"{pre}._project_conv.weight"] = (cout, hidden, 1, 1)
            bn(f"{pre}._bn2", cout)
            i += 1
    return shapes


def test_b0_params_equal_the_published_size():
    # efficientnet_pytorch's B0: 5,288,548 parameters, of which the head runs none here:
    # _conv_head 320 -> 1280 (409,600), _bn1 (2,560), _fc 1280 -> 1000 (1,281,000).
    shapes = b0_shapes()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    blocks = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))
    assert blocks == 5_288_548 - 409_600 - 2_560 - 1_281_000
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder("efficientnet-b0", input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == blocks


def test_every_key_lands_in_its_variable():
    shapes = b0_shapes(0.25)
    state = identifiable_state_dict(shapes)
    state["_conv_head.weight"] = np.zeros((8, 80, 1, 1), np.float32)  # smp keeps, never runs
    state["_bn1.weight"] = np.zeros((8,), np.float32)
    model = zoo.create_encoder("efficientnet-b0", input_shape=(64, 64, 3), width_scale=0.25)
    table = port.get_table("efficientnet").bind(ours="encoder_")
    # assign refuses a checkpoint with an unused key that is not ignored (here: only the head).
    writes = port.assign(model, state, table, source="ckpt")
    weights = [v for v in model.variables if "seed_generator" not in v.path]  # DropPath's RNG
    assert len(writes) == len(weights)
    conv = model.get_layer("encoder_block5_dw_conv")
    np.testing.assert_array_equal(
        np.asarray(conv.kernel), state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    se = model.get_layer("encoder_block15_se_fc1")
    np.testing.assert_array_equal(np.asarray(se.bias), state["_blocks.15._se_reduce.bias"])
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_block0_dw_bn").moving_variance),
        state["_blocks.0._bn1.running_var"],
    )


@pytest.mark.parametrize("name, size", [("efficientnet-b0", 224), ("efficientnet-b1", 240)])
def test_static_padding_is_tensorflow_same_for_the_training_size(name, size):
    # Every strided conv pads as TF's "same" for the variant's resolution at its depth, fixed
    # for any input: B1's 15-pixel stride-16 map pads its 5x5/2 conv (2, 2), not (1, 2).
    encoder = zoo.create_encoder(name, input_shape=(None, None, 3), width_scale=0.25)
    h = size
    for layer in encoder.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            stride, k = layer.strides[0], layer.kernel_size[0]
            if stride == 2:
                total = max((math.ceil(h / 2) - 1) * 2 + k - h, 0)
                pad = encoder.get_layer(f"{layer.name}_pad").padding[0]
                assert tuple(pad) == (total // 2, total - total // 2), layer.name
                h = math.ceil(h / 2)
    assert h == math.ceil(size / 32)


@pytest.mark.slow  # ~30-45 s to build, fit and reload on 2 cores
def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "efficientnet-b0", "encoder_block3_dw_conv")


def test_advprop_weights_bring_their_own_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    state = identifiable_state_dict(b0_shapes(0.25))
    path = tmp_path / "weights" / "smp-hub" / "efficientnet-b0.advprop" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder(
        "efficientnet-b0", input_shape=(32, 32, 3), width_scale=0.25, weights="advprop"
    )
    pre = net.get_layer("encoder_preprocess")  # [0, 1] -> [-1, 1]
    np.testing.assert_allclose(pre.scale, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(pre.offset, [-1.0, -1.0, -1.0])
    sources = pretrained.sources("efficientnet-b7")
    assert set(sources) == {"imagenet", "advprop"}
    assert all("/resolve/main/" not in s.url for s in sources.values())


@pytest.mark.slow  # full EfficientNet models in both frameworks, ~1 min
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_efficientnets_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "efficientnet-b0", {}),
        # B1: static padding of a 15-pixel map at stride 16; output stride 16 dilates the
        # blocks after smp's third out index.
        ("DeepLabV3Plus", "deeplabv3plus", ".safetensors", 1, "efficientnet-b1", {}),
        ("FPN", "fpn", ".pth", 1, "efficientnet-b3", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


@pytest.mark.slow  # builds smp's models in the reference interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_params_equal_the_ones_smp_runs():
    # smp keeps the classifier head's conv and batch norm in the encoder without running
    # them: its parameters that get a gradient are the ones the zoo model has.
    used = {"used_only": True}
    assert_params_equal_smp(
        [("unet", "Unet", encoder, used) for encoder in ("efficientnet-b0", "efficientnet-b5")]
    )
