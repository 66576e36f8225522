"""zoo.port: reading state dicts and the table-driven mapping onto our variables.

The state dicts here are written with NumPy in torchvision's layout (key names and shapes
spelled out below from torchvision's ResNet definition, not from our tables), with values
that identify their key, so each test can say where every tensor landed.
"""

import re

import numpy as np
import pytest
from safetensors.numpy import save_file
from torch_ref import reference_python, requires_reference, run_reference

import zoo
from zoo import port

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def torchvision_resnet_shapes(blocks, width=64, classes=1000):
    """Key -> shape of torchvision's ResNet with basic blocks (written from its definition)."""
    shapes = {"conv1.weight": (width, 3, 7, 7)}
    shapes.update({f"bn1.{p}": (width,) for p in ("weight", "bias", "running_mean", "running_var")})
    shapes["bn1.num_batches_tracked"] = ()
    cin = width
    for stage, n in enumerate(blocks, start=1):
        cout = width * 2 ** (stage - 1)
        for b in range(n):
            pre = f"layer{stage}.{b}"
            shapes[f"{pre}.conv1.weight"] = (cout, cin if b == 0 else cout, 3, 3)
            shapes[f"{pre}.conv2.weight"] = (cout, cout, 3, 3)
            bns = [f"{pre}.bn1", f"{pre}.bn2"]
            if b == 0 and stage > 1:
                shapes[f"{pre}.downsample.0.weight"] = (cout, cin, 1, 1)
                bns.append(f"{pre}.downsample.1")
            for bn in bns:
                for p in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{bn}.{p}"] = (cout,)
                shapes[f"{bn}.num_batches_tracked"] = ()
        cin = cout
    shapes["fc.weight"] = (classes, cin)
    shapes["fc.bias"] = (classes,)
    return shapes


def identifiable_state_dict(shapes):
    """Tensor number k holds k * 10000 + 0, 1, 2, ... (float32, exact): values name their key."""
    state = {}
    for k, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(7, np.int64)
            continue
        size = int(np.prod(shape))
        state[key] = (
            (k * 10000 + np.arange(size, dtype=np.float64)).astype(np.float32).reshape(shape)
        )
    return state


def expected_key(path):
    """Our variable path -> (torchvision key, layout): written independently of zoo.port."""
    layer, var = path.split("/")
    param = {
        "kernel": "weight",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }[var]
    if layer == "encoder_stem_conv":
        return f"conv1.{param}", "conv"
    if layer == "encoder_stem_bn":
        return f"bn1.{param}", "vector"
    m = re.fullmatch(r"encoder_stage(\d)_block(\d+)_(conv[123]|downsample)_(conv|bn)", layer)
    stage, block, part, kind = m.groups()
    pre = f"layer{stage}.{int(block) - 1}"
    if part == "downsample":
        module = f"{pre}.downsample.{0 if kind == 'conv' else 1}"
    else:
        module = f"{pre}.{part if kind == 'conv' else 'bn' + part[-1]}"
    return f"{module}.{param}", "conv" if kind == "conv" else "vector"


def write(tmp_path, state, name="weights.safetensors"):
    path = tmp_path / name
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_torchvision_state_dict_lands_in_every_variable(encoder, tmp_path):
    width = 8  # the same key names as width 64, a thousand times fewer numbers
    shapes = torchvision_resnet_shapes(BLOCKS[encoder], width)
    state = identifiable_state_dict(shapes)
    path = write(tmp_path, state)
    model = zoo.create_encoder(encoder, input_shape=(32, 32, 3), base_width=width)
    table = port.get_table("resnet").bind(ours="encoder_")
    writes = port.assign(model, port.load_state_dict(path), table, source=str(path))

    assert len(writes) == len(model.variables)
    used = set()
    for v in model.variables:
        key, layout = expected_key(v.path)
        want = state[key].transpose(2, 3, 1, 0) if layout == "conv" else state[key]
        np.testing.assert_array_equal(np.asarray(v), want, err_msg=f"{v.path} <- {key}")
        used.add(key)
    # Everything but the classifier and the batch counters was used.
    rest = {k for k in shapes if k not in used}
    assert rest == {"fc.weight", "fc.bias"} | {k for k in shapes if "num_batches" in k}


def _tiny_resnet18_and_state():
    model = zoo.create_encoder("resnet18", input_shape=(32, 32, 3), base_width=8)
    state = identifiable_state_dict(torchvision_resnet_shapes(BLOCKS["resnet18"], 8))
    return model, state, port.get_table("resnet").bind(ours="encoder_")


def _assert_untouched(model, before):
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(np.asarray(v), b)


def test_missing_key_names_the_key_and_writes_nothing():
    model, state, table = _tiny_resnet18_and_state()
    before = [np.asarray(v).copy() for v in model.variables]
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(port.PortError) as err:
        port.assign(model, state, table, source="ckpt.safetensors")
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing key 'layer3.1.bn2.running_var' in ckpt.safetensors" in msg
    assert "encoder_stage3_block2_conv2_bn/moving_variance" in msg
    _assert_untouched(model, before)


def test_extra_key_names_the_key():
    model, state, table = _tiny_resnet18_and_state()
    state["layer5.0.conv1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(port.PortError, match=r"unexpected key 'layer5\.0\.conv1\.weight'"):
        port.assign(model, state, table)


def test_misshaped_key_names_the_key_and_both_shapes():
    model, state, table = _tiny_resnet18_and_state()
    state["layer2.0.downsample.0.weight"] = np.zeros((16, 4, 1, 1), np.float32)
    with pytest.raises(port.PortError) as err:
        port.assign(model, state, table)
    msg = str(err.value)
    assert "\n" not in msg
    assert "'layer2.0.downsample.0.weight'" in msg
    assert "(16, 4, 1, 1)" in msg  # theirs
    assert "(1, 1, 8, 16)" in msg  # ours
    assert "encoder_stage2_block1_downsample_conv/kernel" in msg


def test_our_layer_without_rule_is_an_error():
    model, state, _ = _tiny_resnet18_and_state()
    partial = port.Table("partial", (port.Rule(r"stem_conv", "conv1"),), ours_prefix="encoder_")
    with pytest.raises(port.PortError, match=r"our layer 'encoder_stem_bn' has no rule"):
        port.assign(model, state, partial)


def test_unknown_table_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown port table 'nope'.*resnet"):
        port.get_table("nope")


def test_transforms_on_hand_made_arrays():
    # conv: torch (out=2, in=3, kh=1, kw=2) -> (kh, kw, in, out)
    w = np.arange(12, dtype=np.float32).reshape(2, 3, 1, 2)
    k = port.TRANSFORMS["conv"](w, (1, 2, 3, 2))
    assert k.shape == (1, 2, 3, 2) and k[0, 1, 2, 1] == w[1, 2, 0, 1]
    # depthwise with multiplier 2 on 3 channels: torch output c * 2 + m
    w = np.arange(6 * 9, dtype=np.float32).reshape(6, 1, 3, 3)
    k = port.TRANSFORMS["depthwise"](w, (3, 3, 3, 2))
    assert k.shape == (3, 3, 3, 2) and k[1, 2, 2, 1] == w[2 * 2 + 1, 0, 1, 2]
    # dense: (out, in) -> (in, out)
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert port.TRANSFORMS["dense"](w, (3, 2))[2, 1] == w[1, 2]


def test_kinds_name_the_variables_real_keras_layers_have():
    # Keras 3.15: DepthwiseConv2D holds `kernel` (SeparableConv2D's is `depthwise_kernel`);
    # a kind naming a variable the layer does not have would fail every port through it.
    import keras

    layers = {
        "conv": (keras.layers.Conv2D(2, 3), (1, 8, 8, 3)),
        "depthwise": (keras.layers.DepthwiseConv2D(3), (1, 8, 8, 3)),
        "dense": (keras.layers.Dense(2), (1, 3)),
        "dense_first_half": (keras.layers.Dense(2), (1, 3)),
        "dense_second_half": (keras.layers.Dense(2), (1, 3)),
        "batch_norm": (keras.layers.BatchNormalization(), (1, 3)),
        "norm": (keras.layers.LayerNormalization(), (1, 3)),
        "embedding": (keras.layers.Embedding(5, 2), (1, 3)),
    }
    assert set(layers) == set(port.KINDS)
    for kind, (layer, shape) in layers.items():
        layer.build(shape)
        assert {v.name for v in layer.weights} == set(port.KINDS[kind]), kind
        if not kind.endswith("_half"):
            assert port.layouts.layer_kind(layer) == kind


def test_fused_projection_halves():
    # smp / original MiT `kv`: Linear(C_in=3, 2C=4); keys are output rows 0-1, values 2-3.
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(port.TRANSFORMS["dense_first_half"](w, (3, 2)), w[:2].T)
    np.testing.assert_array_equal(port.TRANSFORMS["dense_second_half"](w, (3, 2)), w[2:].T)
    np.testing.assert_array_equal(port.TRANSFORMS["first_half"](b, (2,)), [0, 1])
    np.testing.assert_array_equal(port.TRANSFORMS["second_half"](b, (2,)), [2, 3])
    assert port.TRANSFORMS["first_half"](b[:3], (2,)).shape == (3,)  # odd: left to the check


def test_a_rule_kind_may_depend_on_the_layer():
    import keras

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="fc")(inp))
    state = {"m.a.w2": np.ones((2, 4), "float32"), "m.b.bias": np.full((2,), 7.0, "float32")}

    def per_variable(layer):  # variables of one layer in two modules, named after the layer
        return {"kernel": (f"a.w{layer.units}", "dense"), "bias": ("b.bias", "identity")}

    port.assign(model, state, port.Table("toy", (port.Rule("fc", "m", kind=per_variable),)))
    np.testing.assert_array_equal(np.asarray(model.get_layer("fc").bias), [7.0, 7.0])
    with pytest.raises(port.PortError, match=r"missing key 'm\.b\.bias'"):
        port.assign(
            model,
            {"m.a.w2": state["m.a.w2"]},
            port.Table("toy", (port.Rule("fc", "m", kind=per_variable),)),
        )


def test_depthwise_and_dense_layers_through_a_table():
    import keras

    inp = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    state = {
        "features.0.weight": rng.normal(size=(8, 1, 3, 3)).astype("float32"),
        "features.0.bias": rng.normal(size=(8,)).astype("float32"),
        "head.weight": rng.normal(size=(5, 8)).astype("float32"),
        "head.bias": rng.normal(size=(5,)).astype("float32"),
    }
    table = port.Table("toy", (port.Rule("dw", "features.0"), port.Rule("fc", "head")))
    port.assign(model, state, table)
    # Independent check: per-channel correlation with the torch weights (channel c, mult m).
    x = rng.normal(size=(1, 8, 8, 4)).astype("float32")
    y = np.asarray(model.get_layer("dw")(x))
    w = state["features.0.weight"]
    for c in range(4):
        for m in range(2):
            o = c * 2 + m
            patch = x[0, 0:3, 0:3, c]
            want = (patch * w[o, 0]).sum() + state["features.0.bias"][o]
            np.testing.assert_allclose(y[0, 0, 0, c * 2 + m], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.get_layer("fc").kernel), state["head.weight"].T)


def test_bfloat16_safetensors_are_widened(tmp_path):
    # bfloat16 = the top 16 bits of a float32; NumPy cannot hold it, we read it by hand.
    values = np.array([1.5, -2.0, 3.140625, 0.0], np.float32)
    halves = (values.view(np.uint32) >> 16).astype(np.uint16)
    header = b'{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + halves.tobytes())
    state = port.load_state_dict(path)
    np.testing.assert_array_equal(state["w"], values.reshape(2, 2))


def test_bad_files_give_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint file at"):
        port.load_state_dict(tmp_path / "nope.safetensors")
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected a \.safetensors file or a torch state dict"):
        port.load_state_dict(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match=r"Cannot read .*junk\.safetensors"):
        port.load_state_dict(junk)


def test_wrapped_checkpoints_are_unwrapped(tmp_path):
    state = {"module.conv.weight": np.ones((1,), np.float32)}
    assert list(port.load_state_dict(write(tmp_path, state))) == ["conv.weight"]


def test_layers_between_finds_the_encoder_layers_only():
    import keras

    image = keras.Input((32, 32, 3))
    pre = keras.layers.Rescaling(2.0, name="pre")(image)
    from zoo.encoders.resnet import resnet_features

    feats = resnet_features(pre, (1, 1, 1, 1), base_width=4)
    layers = port.layers_between(pre, feats)
    names = {layer.name for layer in layers}
    assert "pre" not in names and "encoder_stem_conv" in names
    assert all(n.startswith("encoder_") for n in names)


@requires_reference("torch", "safetensors")
def test_torch_files_are_read_through_another_process(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    state = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
        "bn.num_batches_tracked": np.array(5, np.int64),
    }
    plain, wrapped = tmp_path / "model.pth", tmp_path / "checkpoint.ckpt"
    run_reference(
        "save_state_dict", state, files=[[str(plain), None], [str(wrapped), "state_dict"]]
    )
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    for path in (plain, wrapped):
        got = port.load_state_dict(path)
        assert sorted(got) == sorted(state)
        np.testing.assert_array_equal(got["conv.weight"], state["conv.weight"])
        assert int(got["bn.num_batches_tracked"]) == 5
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip, not a pickle")
    with pytest.raises(ValueError) as err:
        port.load_state_dict(junk)
    assert "\n" not in str(err.value) and "junk.pth" in str(err.value)


def test_torch_file_without_torch_says_what_to_install(tmp_path, monkeypatch):
    import subprocess
    import sys

    has_torch = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if has_torch.returncode == 0:
        pytest.skip("this Python has torch")
    path = tmp_path / "model.pth"
    path.write_bytes(b"whatever")
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", sys.executable)
    with pytest.raises(ValueError, match=r"needs PyTorch.*pip install torch.*\.safetensors"):
        port.load_state_dict(path)


def test_tests_cannot_open_network_sockets_but_loopback_works():
    import socket

    from conftest import NetworkBlockedError

    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=5)
    client.close()
    server.close()
