"""DPT and the ViT encoders: layers against NumPy, argument errors, timm-layout weights, and
parity with segmentation_models_pytorch 0.6's DPT (parameter counts and ported logits, in the
reference interpreter). The registry-driven tests (tests/test_models.py) cover the rest."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import build_tiny, count_model_trainable
from safetensors.numpy import load_file, save_file
from torch_ref import requires_reference, run_reference

import zoo
from zoo.encoders.vit import check_output_indices, uniform_output_indices
from zoo.layers import ClassToken, PositionEmbedding, PrefixTokenReadout, QKVAttention, TokensToGrid
from zoo.port.__main__ import main as port_main

REF = requires_reference("torch", "segmentation_models_pytorch", "timm", "safetensors")
RNG = np.random.default_rng(0)


# --- Layers against NumPy ------------------------------------------------------------------


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_qkv_attention_matches_numpy(heads):
    tokens, channels = 7, 8
    qkv = RNG.standard_normal((2, tokens, 3 * channels)).astype(np.float32)
    ours = np.asarray(QKVAttention(heads)(qkv))
    d = channels // heads
    q, k, v = (qkv[..., i * channels : (i + 1) * channels] for i in range(3))
    want = np.zeros((2, tokens, channels), np.float32)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        att = np_softmax(q[..., s] @ k[..., s].transpose(0, 2, 1) / np.sqrt(d))
        want[..., s] = att @ v[..., s]
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)


def test_class_token_and_tokens_to_grid_are_inverse():
    grid = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    layer = ClassToken()
    tokens = np.asarray(layer(grid))
    assert tokens.shape == (2, 16, 4)
    cls = np.asarray(layer.cls_token)[0, 0]
    np.testing.assert_array_equal(tokens[:, 0], np.broadcast_to(cls, (2, 4)))
    np.testing.assert_array_equal(tokens[:, 1 + 5 * 1 + 2], grid[:, 1, 2])  # row by row
    back, prefix = TokensToGrid(1)([tokens, grid])
    np.testing.assert_array_equal(np.asarray(back), grid)
    np.testing.assert_array_equal(np.asarray(prefix)[:, 0], tokens[:, 0])


def test_prefix_token_readout_cat_and_add():
    grid = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    prefix = RNG.standard_normal((2, 2, 5)).astype(np.float32)
    cat = np.asarray(PrefixTokenReadout("cat")([grid, prefix]))
    np.testing.assert_array_equal(cat[..., :5], grid)
    np.testing.assert_array_equal(cat[:, 2, 3, 5:], prefix[:, 0])  # the first token only
    add = np.asarray(PrefixTokenReadout("add")([grid, prefix]))
    np.testing.assert_allclose(add, grid + prefix.mean(1)[:, None, None], rtol=1e-6)
    with pytest.raises(ValueError, match="mode='sum'"):
        PrefixTokenReadout("sum")


def test_position_embedding_on_and_off_its_grid():
    layer = PositionEmbedding((2, 3), 1)
    tokens = np.zeros((1, 7, 4), np.float32)
    grid = np.zeros((1, 2, 3, 4), np.float32)
    out = np.asarray(layer([tokens, grid]))
    np.testing.assert_array_equal(out, np.asarray(layer.pos_embed))  # learned grid: as is
    # Another grid: the prefix part kept, a constant patch part stays constant (the resize
    # kernel's weights sum to one), and unknown sizes give the same as known ones.
    value = np.concatenate([np.full((1, 1, 4), 5.0), np.full((1, 6, 4), 2.0)], 1)
    layer.pos_embed.assign(value.astype(np.float32))
    big = np.asarray(layer([np.zeros((1, 21, 4), np.float32), np.zeros((1, 4, 5, 4))]))
    np.testing.assert_allclose(big[0, 0], 5.0)
    np.testing.assert_allclose(big[0, 1:], 2.0, rtol=1e-6)
    t_in, g_in = keras.Input((None, 4)), keras.Input((None, None, 4))
    dynamic = keras.Model([t_in, g_in], layer([t_in, g_in]))
    ramp = np.arange(28, dtype=np.float32).reshape(1, 7, 4)
    layer.pos_embed.assign(ramp)
    for h, w in [(2, 3), (4, 6), (1, 2)]:
        args = [np.zeros((1, 1 + h * w, 4), np.float32), np.zeros((1, h, w, 4), np.float32)]
        np.testing.assert_allclose(np.asarray(dynamic(args)), np.asarray(layer(args)), atol=1e-5)
    with pytest.raises(ValueError, match="grid_size=14"):
        PositionEmbedding(14)


@pytest.mark.parametrize("size", [(4, 6), (20, 21), (14, 14), (7, 9), (1, 30)])
def test_position_resize_weights_equal_tensorflows_antialiased_bicubic(size):
    # An independent implementation (TensorFlow's ScaleAndTranslate kernel); PyTorch's, which
    # timm uses, is checked through the whole model (test_smp_dpt_ported_reproduces_smp_logits).
    from zoo.layers.position_embedding import resize_weights

    grid = RNG.standard_normal((1, 14, 14, 3)).astype(np.float32)
    want = keras.ops.image.resize(grid, size, interpolation="bicubic", antialias=True)
    rows, cols = (np.asarray(resize_weights(n, 14)) for n in size)
    ours = np.einsum("hi,ijc,wj->hwc", rows, grid[0], cols)
    np.testing.assert_allclose(ours, np.asarray(want)[0], atol=5e-6)
    np.testing.assert_allclose(rows.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["layer", "position"])
def test_token_layers_serialize(name):
    layer = PositionEmbedding((2, 2), 1) if name == "position" else QKVAttention(2)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# --- Encoder and model arguments -----------------------------------------------------------


def test_output_indices_spread_and_checks():
    assert uniform_output_indices(4, 12) == [2, 5, 8, 11]  # smp's default for ViT-B
    assert uniform_output_indices(3, 24) == [7, 15, 23]
    assert check_output_indices([0, -1], 12) == [0, 11]
    for bad in ([3, 3], [5, 2], [12], [], "2"):
        with pytest.raises(ValueError, match="output_indices="):
            check_output_indices(bad, 12)


def test_vit_encoder_features_and_read_blocks():
    kwargs = zoo.encoder_info("vit_tiny_patch16_224").tiny_config
    enc = zoo.create_encoder(
        "vit_tiny_patch16_224", input_shape=(64, 96, 3), output_indices=[1, 3], **kwargs
    )
    features = enc(np.zeros((1, 64, 96, 3), np.float32))
    (g1, p1), (g3, p3) = features["blocks"]
    assert tuple(g1.shape) == (1, 4, 6, 16) and tuple(p1.shape) == (1, 1, 16)
    np.testing.assert_array_equal(np.asarray(features[16]), np.asarray(g3))
    names = [layer.name for layer in enc.layers]
    assert "encoder_block3_add2" in names and "encoder_block4_norm1" not in names  # up to 3


def test_dpt_argument_errors():
    with pytest.raises(ValueError, match="plain vision transformer.*encoder='resnet34'"):
        build_tiny("dpt", encoder="resnet34", encoder_kwargs={})
    with pytest.raises(ValueError, match="decoder_readout='both'"):
        build_tiny("dpt", decoder_readout="both")
    with pytest.raises(ValueError, match="one width per read block"):
        build_tiny("dpt", encoder_depth=3)
    with pytest.raises(ValueError, match="encoder_depth=5"):
        build_tiny("dpt", encoder_depth=5)
    with pytest.raises(ValueError, match="encoder has 2"):
        build_tiny("dpt", encoder_kwargs={"embed_dim": 8, "depth": 2, "num_heads": 2})
    with pytest.raises(ValueError, match=r"encoder_output_indices=\[1, 2\]"):
        build_tiny("dpt", encoder_output_indices=[1, 2])
    with pytest.raises(ValueError, match="not encoder_kwargs"):
        kwargs = {**zoo.model_info("dpt").tiny_config["encoder_kwargs"], "output_indices": [0]}
        build_tiny("dpt", encoder_kwargs=kwargs)


def test_dpt_divisor_follows_patch_and_depth():
    dpt = zoo.model_info("dpt").obj
    assert dpt.divisor_for() == 32
    assert dpt.divisor_for({"encoder_depth": 3}) == 16
    assert dpt.divisor_for({"encoder": "vit_small_patch32_224", "encoder_depth": 2}) == 32
    assert dpt.divisor_for({"encoder_kwargs": {"patch_size": 8}, "encoder_depth": 1}) == 8


def test_dpt_depth_and_readout_variants_build_and_train():
    x = RNG.random((2, 64, 96, 3), dtype=np.float32)
    model = build_tiny(
        "dpt", encoder_depth=3, decoder_intermediate_channels=(8, 8, 8), decoder_readout="ignore"
    )
    assert model.output.shape[-1] == 2 and np.asarray(model(x)).shape == (2, 64, 96, 2)
    names = {layer.name for layer in model.layers}
    assert "decoder_reassemble3_project" not in names and "decoder_readout0" not in names
    add = {layer.name for layer in build_tiny("dpt", decoder_readout="add").layers}
    assert "decoder_readout0" in add and "decoder_readout0_project" not in add  # no weights


# --- Weights: timm layout and smp parity ---------------------------------------------------


IMAGE = RNG.random((2, 64, 96, 3), dtype=np.float32)
TINY_KW = {
    "embed_dim": 16,
    "num_heads": 2,
    "img_size": 64,
    "dynamic_img_size": True,
    "decoder_intermediate_channels": [8, 16, 16, 16],
    "decoder_fusion_channels": 16,
}
CASES = {  # name: (smp encoder, smp kwargs, --smp-arg pairs)
    "cat": ("tu-vit_tiny_patch16_224", TINY_KW, ["num_heads=2"]),
    # timm's test ViT (MLP ratio 3, positions learned at 160: resized to 4x6 patches), the
    # class tokens' mean added, and blocks 0-2 and 4 read (block 5 built by timm, never run).
    "add": (
        "tu-test_vit",
        {
            **TINY_KW,
            "embed_dim": 64,
            "img_size": 160,
            "decoder_readout": "add",
            "encoder_output_indices": [0, 1, 2, 4],
        },
        ["num_heads=2", "decoder_readout=add", "encoder_output_indices=[0, 1, 2, 4]"],
    ),
    "ignore3": (
        "tu-vit_tiny_patch16_224",
        {
            **TINY_KW,
            "encoder_depth": 3,
            "decoder_readout": "ignore",
            "decoder_intermediate_channels": [8, 16, 16],
        },
        ["num_heads=2", "decoder_readout=ignore"],
    ),
}


@pytest.fixture(scope="module")
def smp_dpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpt_ref")
    models = [
        {
            "arch": "DPT",
            "encoder": enc,
            "classes": 3,
            "kwargs": kw,
            "path": str(out / f"{n}.safetensors"),
        }
        for n, (enc, kw, _) in CASES.items()
    ]
    return out, run_reference("smp_model", {"images": IMAGE}, models=models)


@REF
@pytest.mark.parametrize("case", list(CASES))
def test_smp_dpt_ported_reproduces_smp_logits(smp_dpt, case, tmp_path):
    out_dir, ref = smp_dpt
    args = [
        "smp",
        "--checkpoint",
        str(out_dir / f"{case}.safetensors"),
        "--model",
        "dpt",
        "--encoder",
        "vit_tiny_patch16_224",
        "--out",
        str(tmp_path / "dpt.keras"),
    ]
    for pair in CASES[case][2]:
        args += ["--smp-arg", pair]
    assert port_main(args) == 0
    model = keras.saving.load_model(tmp_path / "dpt.keras", safe_mode=True)
    logits = ref[f"logits_{list(CASES).index(case)}"]
    np.testing.assert_allclose(np.asarray(model(IMAGE)), logits, rtol=1e-4, atol=1e-5)
    assert np.abs(logits).max() > 1e-2  # a real signal, not zeros


@REF
def test_smp_dpt_port_errors_are_one_line(smp_dpt, tmp_path, capsys):
    out_dir, _ = smp_dpt
    base = [
        "smp",
        "--model",
        "dpt",
        "--encoder",
        "vit_tiny_patch16_224",
        "--out",
        str(tmp_path / "x.keras"),
    ]
    add = ["--checkpoint", str(out_dir / "add.safetensors")]
    assert port_main([*base, *add, "--smp-arg", "num_heads=2"]) != 0  # readout untold
    assert port_main([*base, *add, "--smp-arg", "decoder_readout=add"]) != 0  # 64 wide, 3 heads
    err = capsys.readouterr().err.strip().splitlines()
    assert "decoder_readout=add (or ignore)" in err[-2] and "num_heads=N" in err[-1]
    assert not (tmp_path / "x.keras").exists()


@REF
def test_timm_layout_file_loads_into_the_encoder_and_dpt(smp_dpt, tmp_path):
    out_dir, _ = smp_dpt
    state = load_file(str(out_dir / "cat.safetensors"))
    timm = {
        k[len("encoder.model.") :]: v for k, v in state.items() if k.startswith("encoder.model.")
    }
    save_file(timm, str(tmp_path / "vit.safetensors"))  # what timm's own files hold
    kwargs = {"embed_dim": 16, "num_heads": 2, "img_size": 64}
    from_timm = zoo.create_encoder(
        "vit_tiny_patch16_224",
        input_shape=(None, None, 3),
        weights=str(tmp_path / "vit.safetensors"),
        **kwargs,
    )
    from_smp = zoo.create_encoder(
        "vit_tiny_patch16_224",
        input_shape=(None, None, 3),
        weights=str(out_dir / "cat.safetensors"),
        **kwargs,
    )
    a, b = from_timm(IMAGE)[16], from_smp(IMAGE)[16]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    layer = from_timm.get_layer("encoder_block3_mlp_fc2")
    np.testing.assert_array_equal(np.asarray(layer.kernel), timm["blocks.3.mlp.fc2.weight"].T)
    # timm's normalization (0.5, 0.5) inside: [0, 1] -> [-1, 1].
    scale_offset = from_timm.get_layer("encoder_preprocess").get_config()
    assert np.allclose(scale_offset["scale"], 2.0) and np.allclose(scale_offset["offset"], -1.0)
    dpt = zoo.create_model(
        "dpt",
        encoder="vit_tiny_patch16_224",
        encoder_kwargs=kwargs,
        decoder_intermediate_channels=(8, 16, 16, 16),
        decoder_fusion_channels=16,
        encoder_weights=str(tmp_path / "vit.safetensors"),
    )
    np.testing.assert_array_equal(
        np.asarray(dpt.get_layer("encoder_patch_embed").kernel),
        timm["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
    )


@REF
@pytest.mark.parametrize("encoder", ["vit_base_patch16_224", "vit_small_patch16_224"])
def test_param_counts_equal_smps_used_weights(encoder):
    # smp's DPT holds timm's whole ViT; its final norm and classifier get no gradient.
    theirs = run_reference(
        "smp_param_count", arch="DPT", encoder=f"tu-{encoder}", used_only=True, size=224
    )
    total = run_reference("smp_param_count", arch="DPT", encoder=f"tu-{encoder}")["count"]
    ours = count_model_trainable("dpt", encoder=encoder)
    assert ours == int(theirs["count"]) < int(total)


@pytest.mark.slow  # a TensorFlow child process: ~30 s
def test_dpt_bench_smoke(tmp_path):
    # bench/segformer_bench.py --model dpt runs and writes its row (zoo side; no timing asserted).
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "bench.segformer_bench", "--model", "dpt", "--smoke",
           "--precisions", "float32", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["model"], row["encoder"], row["size"]) == ("dpt", "vit_tiny_patch16_224", 64)
    assert row["zoo_train_img_s"] > 0 and row["zoo_infer_img_s"] > 0


def test_dpt_traces_at_a_run_time_size():
    # What export and serving do: one graph for every input size (sizes unknown when traced).
    import tensorflow as tf

    model = build_tiny("dpt")
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    for h, w in [(64, 96), (96, 64)]:
        x = RNG.random((1, h, w, 3), dtype=np.float32)
        np.testing.assert_allclose(np.asarray(graph(x)), np.asarray(model(x)), atol=1e-5)


def test_named_weights_are_timms_tags_from_the_cache(tmp_path, monkeypatch):
    from test_port import identifiable_state_dict

    sources = zoo.pretrained.sources("vit_base_patch16_224")
    assert sources["imagenet"].url == sources["augreg2_in21k_ft_in1k"].url  # timm's default
    assert "/timm/vit_base_patch16_224.augreg_in21k/" in sources["augreg_in21k"].url  # smp DPT's
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    kwargs = {"embed_dim": 16, "depth": 2, "num_heads": 2, "img_size": 64}
    shapes = {"patch_embed.proj.weight": (16, 3, 16, 16), "patch_embed.proj.bias": (16,)}
    shapes.update({"cls_token": (1, 1, 16), "pos_embed": (1, 17, 16)})
    parts = {"norm1": (16,), "norm2": (16,), "attn.qkv": (48, 16), "attn.proj": (16, 16)}
    parts.update({"mlp.fc1": (64, 16), "mlp.fc2": (16, 64)})
    for b in range(2):
        for part, shape in parts.items():
            shapes[f"blocks.{b}.{part}.weight"] = shape
            shapes[f"blocks.{b}.{part}.bias"] = shape[:1]
    shapes.update({"norm.weight": (16,), "norm.bias": (16,), "head.weight": (10, 16)})
    state = identifiable_state_dict(shapes)
    scales = {}
    for tag in ("imagenet", "dino"):  # augreg2 files: [-1, 1]; DINO's: ImageNet statistics
        repo = sources[tag].file.rsplit("/", 1)[0]
        path = tmp_path / "weights" / repo / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
        enc = zoo.create_encoder("vit_base_patch16_224", weights=tag, **kwargs)
        kernel = np.asarray(enc.get_layer("encoder_block1_attn_qkv").kernel)
        np.testing.assert_array_equal(kernel, state["blocks.1.attn.qkv.weight"].T)
        scales[tag] = np.asarray(enc.get_layer("encoder_preprocess").scale)
    np.testing.assert_allclose(scales["imagenet"], 2.0)
    np.testing.assert_allclose(scales["dino"], 1 / np.array([0.229, 0.224, 0.225]), rtol=1e-6)
