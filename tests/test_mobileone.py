"""MobileOne encoders (smp's mobileone_s0 ... s4, training-time branches): parameter counts,
every checkpoint key, pretrained weights, the fused inference form, and smp's encoder and
models on them with equal features and logits."""

import numpy as np
import pytest
from helpers import (
    assert_params_equal_smp,
    features_match_smp_encoder,
    unet_trains_saves_and_reloads,
)
from safetensors.numpy import save_file
from test_port import identifiable_state_dict
from test_port_smp import check_parity
from test_port_smp import port as port_smp
from torch_ref import reference_python, requires_reference, run_reference

import zoo
from zoo import port
from zoo.build_context import shapes_only
from zoo.encoders.mobileone import reparameterize

# smp's mobileone_encoders: width multipliers, conv branches, SE, and its encoders' parameter
# totals (sum of numel over parameters, printed by smp 0.6 itself).
CONFIGS = {
    "mobileone_s0": ((0.75, 1.0, 1.0, 2.0), 4, False, 4_268_272),
    "mobileone_s1": ((1.5, 1.5, 2.0, 2.5), 1, False, 3_544_192),
    "mobileone_s2": ((1.5, 2.0, 2.5, 4.0), 1, False, 5_835_648),
    "mobileone_s3": ((2.0, 2.5, 3.0, 4.0), 1, False, 8_121_600),
    "mobileone_s4": ((3.0, 3.5, 3.5, 4.0), 1, True, 12_902_248),
}


TINY_KW = zoo.encoder_info("mobileone_s0").tiny_config


def smp_shapes(name, widths=None, blocks=(2, 8, 10, 1)):
    """Key -> shape of smp's ``MobileOne`` (inference_mode=False), from its code."""
    default_widths, branches, use_se, _ = CONFIGS[name]
    widths = widths or default_widths
    shapes = {}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{p}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def block(prefix, cin, cout, k, stride, groups, n, se):
        if cout == cin and stride == 1:
            bn(f"{prefix}.rbr_skip", cin)
        for j in range(n):
            shapes[f"{prefix}.rbr_conv.{j}.conv.weight"] = (cout, cin // groups, k, k)
            bn(f"{prefix}.rbr_conv.{j}.bn", cout)
        if k > 1:
            shapes[f"{prefix}.rbr_scale.conv.weight"] = (cout, cin // groups, 1, 1)
            bn(f"{prefix}.rbr_scale.bn", cout)
        if se:
            r = int(cout * 0.0625)
            shapes[f"{prefix}.se.reduce.weight"], shapes[f"{prefix}.se.reduce.bias"] = (
                (r, cout, 1, 1),
                (r,),
            )
            shapes[f"{prefix}.se.expand.weight"], shapes[f"{prefix}.se.expand.bias"] = (
                (cout, r, 1, 1),
                (cout,),
            )

    planes = min(64, int(64 * widths[0]))
    block("stage0", 3, planes, 3, 2, 1, 1, False)
    for s, (base, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
        out = int(base * widths[s - 1])
        se_units = {3: n // 2, 4: n}.get(s, 0) if use_se else 0
        for u in range(n):
            se = u >= n - se_units
            block(f"stage{s}.{2 * u}", planes, planes, 3, 2 if u == 0 else 1, planes, branches, se)
            block(f"stage{s}.{2 * u + 1}", planes, out, 1, 1, 1, branches, se)
            planes = out
    return shapes


def _total(shapes):
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_equal_smps(name):
    assert _total(smp_shapes(name)) == CONFIGS[name][3]
    with shapes_only():  # counts from shapes: no weight drawn
        encoder = zoo.create_encoder(name, input_shape=(None, None, 3))
    assert sum(int(np.prod(v.shape)) for v in encoder.trainable_variables) == CONFIGS[name][3]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_feature_channels_are_smps(name):
    want = {  # smp's out_channels[1:]
        "mobileone_s0": [48, 48, 128, 256, 1024],
        "mobileone_s1": [64, 96, 192, 512, 1280],
        "mobileone_s2": [64, 96, 256, 640, 2048],
        "mobileone_s3": [64, 128, 320, 768, 2048],
        "mobileone_s4": [64, 192, 448, 896, 2048],
    }[name]
    encoder = zoo.create_encoder(name, input_shape=(64, 64, 3), **_tiny_depth())
    assert [encoder.output[s].shape[1:] for s in (2, 4, 8, 16, 32)] == [
        (64 // s, 64 // s, c) for s, c in zip((2, 4, 8, 16, 32), want, strict=True)
    ]


def _tiny_depth():
    return {"num_blocks_per_stage": (1, 1, 2, 1)}  # the widths are what matters here


@pytest.mark.parametrize("name", ["mobileone_s0", "mobileone_s4"])
def test_every_key_lands_in_its_variable(tmp_path, name):
    tiny = zoo.encoder_info(name).tiny_config
    shapes = smp_shapes(name, tiny["width_multipliers"], tiny["num_blocks_per_stage"])
    shapes["linear.weight"], shapes["linear.bias"] = (1000, 128), (1000,)  # Apple's classifier
    state = identifiable_state_dict(shapes)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    model = zoo.create_encoder(
        name, input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **tiny
    )
    checks = [
        ("encoder_stem_conv0_conv", "kernel", "stage0.rbr_conv.0.conv.weight", (2, 3, 1, 0)),
        ("encoder_stem_scale_conv", "kernel", "stage0.rbr_scale.conv.weight", (2, 3, 1, 0)),
        ("encoder_stage1_block0_conv0_conv", "kernel", "stage1.0.rbr_conv.0.conv.weight", None),
        ("encoder_stage3_block3_conv0_conv", "kernel", "stage3.3.rbr_conv.0.conv.weight", 0),
        ("encoder_stage2_block0_scale_bn", "moving_variance", "stage2.0.rbr_scale.bn.running_var"),
        ("encoder_stage3_block2_skip", "gamma", "stage3.2.rbr_skip.weight"),
    ]
    if name == "mobileone_s0":
        checks.append(("encoder_stage4_block0_conv3_bn", "beta", "stage4.0.rbr_conv.3.bn.bias"))
    else:  # s4: SE in the second stage-3 unit and in stage 4
        checks.append(("encoder_stage3_block2_se_fc1", "bias", "stage3.2.se.reduce.bias"))
        checks.append(("encoder_stage4_block1_se_fc2", "kernel", "stage4.1.se.expand.weight", 0))
    for layer, variable, key, *order in checks:
        got = np.asarray(getattr(model.get_layer(layer), variable))
        want = state[key]
        if order and order[0] is None:  # depthwise (C, 1, k, k) -> (k, k, C, 1)
            want = want.transpose(2, 3, 0, 1)
        elif order:  # conv OIHW -> HWIO
            want = want.transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(got, want, err_msg=key)
    # And nothing unassigned: the port checks every variable against the table.
    table = port.get_table("mobileone").bind(ours="encoder_")
    assert len(port.assign(model, state, table, "x")) == len(model.variables)


def test_imagenet_weights_from_the_cache_bring_their_normalization(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    tiny = zoo.encoder_info("mobileone_s1").tiny_config
    shapes = smp_shapes("mobileone_s1", tiny["width_multipliers"], tiny["num_blocks_per_stage"])
    state = identifiable_state_dict(shapes)
    path = tmp_path / "weights" / "smp-hub" / "mobileone_s1.imagenet" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    net = zoo.create_encoder("mobileone_s1", input_shape=(32, 32, 1), weights="imagenet", **tiny)
    assert net.get_layer("encoder_gray_to_rgb") is not None
    np.testing.assert_allclose(
        np.asarray(net.get_layer("encoder_preprocess").scale), 1 / np.array([0.229, 0.224, 0.225])
    )
    np.testing.assert_array_equal(
        np.asarray(net.get_layer("encoder_stem_scale_conv").kernel),
        state["stage0.rbr_scale.conv.weight"].transpose(2, 3, 1, 0),
    )


def test_both_stem_convs_take_other_input_channels(tmp_path):
    # The stem reads the image twice (3x3 and 1x1 scale branch): both kernels are adapted.
    tiny = zoo.encoder_info("mobileone_s2").tiny_config
    shapes = smp_shapes("mobileone_s2", tiny["width_multipliers"], tiny["num_blocks_per_stage"])
    state = identifiable_state_dict(shapes)
    path = tmp_path / "s2.safetensors"
    save_file(state, str(path))
    for channels in (1, 4):
        net = zoo.create_encoder(
            "mobileone_s2", input_shape=(32, 32, channels), weights=str(path),
            input_normalization=None, **tiny,
        )  # fmt: skip
        for layer, key in (("conv0_conv", "rbr_conv.0.conv"), ("scale_conv", "rbr_scale.conv")):
            kernel = np.asarray(net.get_layer(f"encoder_stem_{layer}").kernel)
            rgb = state[f"stage0.{key}.weight"].transpose(2, 3, 1, 0).astype(np.float64)
            assert kernel.shape[2] == channels
            if channels == 1:
                np.testing.assert_allclose(kernel[:, :, 0], rgb.sum(2), rtol=1e-6)
            else:  # channel 3 repeats red, each output rescaled alike
                np.testing.assert_allclose(kernel[:, :, 3], kernel[:, :, 0])


def test_dilated_encoder_keeps_the_built_branches():
    # smp's make_dilated only changes strides and dilations: stage 4's first block keeps no
    # identity branch, and stride-8 output keeps stages 3 and 4 at stride 8.
    net = zoo.create_encoder(
        "mobileone_s0", input_shape=(64, 64, 3), output_stride=8, **_tiny_depth()
    )
    assert sorted(net.output) == [2, 4, 8]
    assert net.output[8].shape[1:] == (8, 8, 1024)
    names = {layer.name for layer in net.layers}
    assert "encoder_stage4_block0_skip" not in names
    assert net.get_layer("encoder_stage4_block0_conv0_conv").dilation_rate == (4, 4)
    assert net.get_layer("encoder_stage3_block2_conv0_conv").dilation_rate == (2, 2)
    # Undilated, a strided block pads one pixel each side (PyTorch), not TF's "same".
    net = zoo.create_encoder("mobileone_s0", input_shape=(64, 64, 3), **_tiny_depth())
    assert tuple(net.get_layer("encoder_stage2_block0_pad").padding) == ((1, 1), (1, 1))


def _randomize_batch_norms(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "moving_variance"):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0, 0.2, c))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c))


def _conv(x, kernel, stride, depthwise):
    """A "valid" convolution in NumPy (float64; TF's float64 CPU kernels are left alone)."""
    k = kernel.shape[0]
    rows, cols = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = 0.0
    for i in range(k):
        for j in range(k):
            patch = x[:, i : i + stride * rows : stride, j : j + stride * cols : stride]
            out = out + (patch * kernel[i, j, :, 0] if depthwise else patch @ kernel[i, j])
    return out


def test_reparameterized_blocks_compute_the_branch_sums():
    import keras

    net = zoo.create_encoder("mobileone_s0", input_shape=(32, 32, 3), **zoo.encoder_info(
        "mobileone_s0").tiny_config)  # fmt: skip
    _randomize_batch_norms(net)
    fused = reparameterize(net)
    images = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    for block, inputs, depthwise, stride in (
        ("encoder_stem", "image", False, 2),
        ("encoder_stage2_block0", "encoder_stage1_block1_relu", True, 2),
        ("encoder_stage3_block2", "encoder_stage3_block1_relu", True, 1),  # identity branch
        ("encoder_stage3_block3", "encoder_stage3_block2_relu", False, 1),
    ):
        source = net.input if inputs == "image" else net.get_layer(inputs).output
        probe = keras.Model(net.input, [source, net.get_layer(f"{block}_relu").output])
        x, want = (np.asarray(t, np.float64) for t in probe(images))
        kernel, bias = fused[block]
        pad = kernel.shape[0] // 2
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        got = np.maximum(_conv(x, kernel, stride, depthwise) + bias, 0)
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), err_msg=block)


def test_stem_scale_branch_subsamples_before_its_1x1_conv():
    # oneDNN's strided 1x1 weight gradient breaks below 16 input channels (zoo.layers'
    # subsample_for_pointwise; tests/test_layers.py proves the two forms equal).
    encoder = zoo.create_encoder("mobileone_s0", input_shape=(64, 64, 3), **TINY_KW)
    assert encoder.get_layer("encoder_stem_scale_subsample").strides == (2, 2)
    assert encoder.get_layer("encoder_stem_scale_conv").strides == (1, 1)
    assert encoder.get_layer("encoder_stem_conv0_conv").strides == (2, 2)


def test_unet_trains_saves_and_reloads(tmp_path):
    unet_trains_saves_and_reloads(tmp_path, "mobileone_s4", "encoder_stage3_block2_conv0_conv")


@pytest.mark.slow  # full MobileOne encoders in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
# S1-S3 differ only in their widths (their shapes and keys: the tests above): S1 stands for them.
@pytest.mark.parametrize("name", ["mobileone_s0", "mobileone_s1", "mobileone_s4"])
def test_features_equal_smps_as_closely_as_its_own_float32(tmp_path, name):
    features_match_smp_encoder(tmp_path, name, max_scale=1e3)


@pytest.mark.slow  # an smp model in float32 and float64, and its port
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_model_logits_equal_as_closely_as_its_own_float32(tmp_path, monkeypatch):
    # Summed branches and batch norms fitted to random images amplify float32 round-off:
    # with this seed smp's own float32 s4 Unet logits are 5e-4 of the largest logit off its
    # float64 ones (FPN's: 1.6e-4), beyond check_parity's 1e-4. Ours may be as far, not
    # more (PyTorch's padding swapped for TF's "same" puts them O(1) off).
    arch, model, seed = "Unet", "unet", 1
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    images = np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32)
    path = tmp_path / f"{arch}.safetensors"
    spec = {"arch": arch, "encoder": "mobileone_s4", "path": str(path)}
    theirs = run_reference("smp_model", {"images": images}, models=[spec], seed=seed, float64=True)
    ours = np.asarray(port_smp(tmp_path, path, model, "--encoder", "mobileone_s4")(images))
    exact = theirs["logits_0_f64"]
    scale = float(np.abs(exact).max())
    theirs_off = float(np.abs(theirs["logits_0"] - exact).max())
    ours_off = float(np.abs(ours - exact).max())
    print(f"{arch} s4: ours {ours_off:.2e}, torch f32 {theirs_off:.2e} off f64, max {scale:.2f}")
    assert scale > 0.1
    assert ours_off < 3 * theirs_off + 1e-6 * scale, (ours_off, theirs_off)


@pytest.mark.slow  # full MobileOne models in both frameworks
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_models_on_mobileone_port_with_equal_logits(tmp_path, monkeypatch):
    # rtol 2e-3: smp's own float32 logits are up to 5e-4 off its float64 ones and ours up to
    # 3e-4 (see above): the two float32 results differ by up to 8e-4 here.
    specs = [
        ("Unet", "unet", ".pth", 2, "mobileone_s0", {}),
        ("FPN", "fpn", ".safetensors", 1, "mobileone_s4", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (64, 96), rtol=2e-3)


@pytest.mark.slow  # a dilated encoder (smp's make_dilated) in a DeepLabV3+
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_deeplabv3plus_on_dilated_mobileone_ports_with_equal_logits(tmp_path, monkeypatch):
    specs = [("DeepLabV3Plus", "deeplabv3plus", ".pth", 2, "mobileone_s1", {})]
    check_parity(tmp_path, monkeypatch, specs, (64, 96))


@pytest.mark.slow  # full-size smp models in a torch interpreter
@requires_reference("torch", "segmentation_models_pytorch")
def test_unet_trainable_params_equal_smp():
    assert_params_equal_smp([("unet", "Unet", name) for name in ("mobileone_s0", "mobileone_s4")])
