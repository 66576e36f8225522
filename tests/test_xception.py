"""Xception encoder (pretrainedmodels layout, smp's xception) and PyTorch's padded max-pool:
parameter counts, every checkpoint key, pretrained weights, and smp models on it ported with
equal logits."""

import keras
import numpy as np
import pytest
from helpers import assert_params_equal_smp, unet_trains_saves_and_reloads
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from test_port_smp import port as port_smp
from torch_ref import requires_reference

import zoo
from zoo import port
from zoo.build_context import shapes_only
from zoo.layers import PaddedMaxPooling2D
from zoo.saving import load_model

# pretrainedmodels' Xception: Block(in, out, reps, strides, start_with_relu, grow_first).
BLOCKS = [(64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True)]
BLOCKS += [(256, 728, 2, 2, True, True)] + [(728, 728, 3, 1, True, True)] * 8
BLOCKS += [(728, 1024, 2, 2, True, False)]


def xception_shapes(scale=1.0):
    """Key -> shape of pretrainedmodels' Xception (from its code), its classifier included."""
    w = lambda c: max(1, int(round(c * scale)))  # noqa: E731
    shapes = {}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def separable(prefix, cin, cout):
        shapes[f"{prefix}.conv1.weight"] = (cin, 1, 3, 3)
        shapes[f"{prefix}.pointwise.weight"] = (cout, cin, 1, 1)

    shapes["conv1.weight"] = (w(32), 3, 3, 3)
    bn("bn1", w(32))
    shapes["conv2.weight"] = (w(64), w(32), 3, 3)
    bn("bn2", w(64))
    for b, (cin, cout, reps, strides, start_with_relu, grow_first) in enumerate(BLOCKS, 1):
        cin, cout = w(cin), w(cout)
        if cout != cin or strides != 1:
            shapes[f"block{b}.skip.weight"] = (cout, cin, 1, 1)
            bn(f"block{b}.skipbn", cout)
        rep, filters = [], cin  # the Sequential's modules, as Block.__init__ appends them
        if grow_first:
            rep += ["relu", ("sep", cin, cout), ("bn", cout)]
            filters = cout
        for _ in range(reps - 1):
            rep += ["relu", ("sep", filters, filters), ("bn", filters)]
        if not grow_first:
            rep += ["relu", ("sep", cin, cout), ("bn", cout)]
        if not start_with_relu:
            rep = rep[1:]
        for i, module in enumerate(rep):
            if module[0] == "sep":
                separable(f"block{b}.rep.{i}", module[1], module[2])
            elif module[0] == "bn":
                bn(f"block{b}.rep.{i}", module[1])
    separable("conv3", w(1024), w(1536))
    bn("bn3", w(1536))
    separable("conv4", w(1536), w(2048))
    bn("bn4", w(2048))
    shapes["fc.weight"], shapes["fc.bias"] = (1000, w(2048)), (1000,)
    return shapes


def _count(shapes):
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))


def test_params_equal_the_published_total():
    # pretrainedmodels' Xception: 22,855,952 parameters, 2,049,000 of them the classifier.
    shapes = xception_shapes()
    assert _count(shapes) == 22_855_952
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder("xception", input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == 22_855_952 - 2_049_000


def test_feature_maps_are_smps():
    encoder = zoo.create_encoder("xception", input_shape=(64, 96, 3), width_scale=0.125)
    want = {2: 8, 4: 16, 8: 32, 16: 91, 32: 256}  # smp: 64, 128, 256, 728, 2048 x 1/8
    assert {s: tuple(t.shape[1:]) for s, t in encoder.output.items()} == {
        s: (64 // s, 96 // s, c) for s, c in want.items()
    }
    name = {s: t._keras_history.operation.name for s, t in encoder.output.items()}
    assert name[16] == "encoder_block11_add" and name[32] == "encoder_exit2_bn"


def test_every_key_lands_in_its_variable(tmp_path):
    state = identifiable_state_dict(xception_shapes(0.125))
    path = tmp_path / "xception.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        "xception", input_shape=(64, 64, 3), width_scale=0.125, weights=str(path),
        input_normalization=None,
    )  # fmt: skip
    # Block 1 starts without a ReLU: its second unit's separable conv is rep.3, block 2's
    # rep.4; block 12 widens in its last unit.
    checks = {
        "encoder_block1_sep2_pw": "block1.rep.3.pointwise.weight",
        "encoder_block2_sep2_dw": "block2.rep.4.conv1.weight",
        "encoder_block5_sep3_pw": "block5.rep.7.pointwise.weight",
        "encoder_block12_sep2_pw": "block12.rep.4.pointwise.weight",
        "encoder_exit2_pw": "conv4.pointwise.weight",
    }
    for layer, key in checks.items():
        kernel = np.asarray(model.get_layer(layer).kernel)
        if layer.endswith("_dw"):  # (C, 1, 3, 3) -> (3, 3, C, 1)
            want = state[key].transpose(2, 3, 0, 1)
        else:
            want = state[key].transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(kernel, want, err_msg=layer)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_block12_sep1_bn").moving_variance),
        state["block12.rep.2.running_var"],
    )
    table = port.get_table("xception").bind(ours="encoder_")
    assert len(port.assign(model, state, table, "x")) == len(model.variables)


def torch_max_pool(x, k, s, p):
    """PyTorch's MaxPool2d(k, s, p), floor mode, written out: -inf padding."""
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    oh, ow = (padded.shape[1] - k) // s + 1, (padded.shape[2] - k) // s + 1
    out = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = padded[:, i * s : i * s + k, j * s : j * s + k].max(axis=(1, 2))
    return out


POOLS = [((2, 8, 8, 3), 3, 2, 1), ((1, 7, 10, 2), 3, 2, 1), ((1, 9, 9, 1), 5, 3, 2)]
POOLS += [((1, 4, 5, 2), 2, 2, 0)]


@pytest.mark.parametrize("shape, k, s, p", POOLS)
def test_padded_max_pooling_equals_pytorchs(shape, k, s, p):
    # All-negative inputs: zero padding (or TF's "same") would win at the borders.
    x = -1 - np.random.default_rng(0).random(shape, dtype=np.float32)
    layer = PaddedMaxPooling2D(k, s, p)
    want = torch_max_pool(x, k, s, p)
    np.testing.assert_array_equal(np.asarray(layer(x)), want)
    assert layer.compute_output_shape((None, *shape[1:])) == (None, *want.shape[1:])
    again = PaddedMaxPooling2D.from_config(layer.get_config())
    assert (again.pool_size, again.strides, again.padding) == (k, s, p)


@pytest.mark.parametrize("bad", [2, -1, 1.0, True])
def test_padded_max_pooling_refuses_bad_padding(bad):
    with pytest.raises(ValueError, match=rf"padding={bad!r}"):
        PaddedMaxPooling2D(3, 2, bad)


def test_padded_max_pooling_in_a_saved_model(tmp_path):
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, PaddedMaxPooling2D(3, 2, 1)(inputs))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = -np.random.default_rng(1).random((1, 6, 7, 2), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(again(x)), torch_max_pool(x, 3, 2, 1))


@pytest.mark.parametrize(
    "choice, mean, std",
    [("weights", 0.5, 0.5), ("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
)
def test_input_normalization_is_the_weights_or_imagenets(tmp_path, choice, mean, std):
    state = identifiable_state_dict(xception_shapes(0.125))
    path = tmp_path / "xception.safetensors"
    save_file(state, str(path))
    net = zoo.create_encoder(
        "xception", input_shape=(32, 32, 3), width_scale=0.125, weights=str(path),
        input_normalization=choice,
    )  # fmt: skip
    layer = net.get_layer("encoder_preprocess")
    np.testing.assert_allclose(np.asarray(layer.scale), 1 / np.broadcast_to(std, 3), rtol=1e-6)
    want = -np.broadcast_to(mean, 3) / np.broadcast_to(std, 3)
    np.testing.assert_allclose(np.asarray(layer.offset), want, rtol=1e-6)


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "xception", "encoder_block4_sep2_pw")


@pytest.mark.slow  # full Xception models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_xception_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "xception", {}),
        ("FPN", "fpn", ".safetensors", 1, "xception", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128), via_cli=True)  # Unet.keras: below
    # smp's preprocessing for Xception is [-1, 1] (its weights'): `--normalization encoder`
    # puts that inside; on images mapped accordingly it equals the ImageNet port.
    imagenet = load_model(tmp_path / "Unet.keras")
    own = port_smp(tmp_path, tmp_path / "Unet.pth", "unet", "--encoder", "xception",
               "--normalization", "encoder", name="Unet_own")  # fmt: skip
    x = np.random.default_rng(2).random((1, 64, 96, 3), dtype=np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    y = ((2 * x - 1) * std + mean).astype(np.float32)
    want = np.asarray(imagenet(y, training=False))
    np.testing.assert_allclose(np.asarray(own(x, training=False)), want, atol=1e-4)


@pytest.mark.slow  # full-size smp model in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", "xception")])
