"""VGG encoders with and without batch norm (torchvision layout, smp's vgg*): parameter counts,
every checkpoint key, pretrained weights, and smp models on them ported with equal logits."""

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from torch_ref import requires_reference

import zoo
from zoo import port
from zoo.build_context import shapes_only

# torchvision's configurations: channels, "M" = max-pool.
CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    + ["M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    + [512, 512, 512, 512, "M"],
}


def torchvision_shapes(name, width=64):
    """Key -> shape of torchvision's ``make_layers(cfg, batch_norm)`` (from its code)."""
    bn, shapes, index, cin = name.endswith("_bn"), {}, 0, 3
    for v in CFG[name.removesuffix("_bn")]:
        if v == "M":
            index += 1
            continue
        cout = v * width // 64
        shapes[f"features.{index}.weight"] = (cout, cin, 3, 3)
        shapes[f"features.{index}.bias"] = (cout,)
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"features.{index + 1}.{p}"] = (cout,)
            shapes[f"features.{index + 1}.num_batches_tracked"] = ()
        index, cin = index + (3 if bn else 2), cout
    return shapes


@pytest.mark.parametrize("name", sorted(f"{k}{bn}" for k in CFG for bn in ("", "_bn")))
def test_params_equal_torchvisions_features(name):
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    shapes = torchvision_shapes(name)
    want = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == want


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn", "vgg19"])
def test_every_key_lands_in_its_variable(name):
    state = identifiable_state_dict(torchvision_shapes(name, width=8))
    model = zoo.create_encoder(name, input_shape=(32, 32, 3), base_width=8)
    writes = port.assign(model, state, port.get_table(name).bind(ours="encoder_"), source="x")
    assert len(writes) == len(model.variables)
    # The last conv of the last stage is the last conv module of torchvision's features.
    last = max(
        int(k.split(".")[1]) for k in state if k.endswith(".weight") and len(state[k].shape) == 4
    )
    convs = zoo.encoders.vgg.STAGES[name]
    layer = model.get_layer(f"encoder_stage5_conv{convs[-1]}_conv")
    np.testing.assert_array_equal(
        np.asarray(layer.kernel), state[f"features.{last}.weight"].transpose(2, 3, 1, 0)
    )


def test_imagenet_weights_from_the_cache_bring_their_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    state = identifiable_state_dict(torchvision_shapes("vgg13_bn", width=8))
    path = tmp_path / "weights" / "smp-hub" / "vgg13_bn.imagenet" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("vgg13_bn", input_shape=(32, 32, 1), base_width=8, weights="imagenet")
    # A gray image is seen as RGB, then normalized as the weights expect.
    assert net.get_layer("encoder_gray_to_rgb") is not None
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stage1_conv1_conv").bias), state["features.0.bias"]
    )


def test_random_weights_keep_the_graph_they_always_had():
    # No normalization layer without pretrained weights: configs and .keras files from before
    # the weights existed build and compute what they did.
    net = zoo.create_encoder("vgg13_bn", input_shape=(32, 32, 3), base_width=8)
    assert not [layer.name for layer in net.layers if "preprocess" in layer.name]


@pytest.mark.slow  # full VGG models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_vgg_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "vgg13_bn", {}),
        ("FPN", "fpn", ".safetensors", 1, "vgg11", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


def test_center_block_adds_two_conv_bn_relu_at_the_deepest_width():
    # smp's Unet center block for VGG encoders: two 3x3 convs (no bias) + BN at 512 channels
    # (64 at base width 8).
    kw = {"encoder": "vgg13_bn", "encoder_kwargs": {"base_width": 8}, "decoder_channels": [8] * 5}
    counts = [
        sum(int(np.prod(v.shape)) for v in zoo.create_model("unet", center_block=c, **kw).weights)
        for c in (False, True)
    ]
    assert counts[1] - counts[0] == 2 * (9 * 64 * 64 + 4 * 64)  # BN: gamma, beta, mean, var
    with pytest.raises(ValueError, match=r"center_block='yes'"):
        zoo.create_model("unet", center_block="yes", **kw)
