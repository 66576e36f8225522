"""SegFormer and the Mix Transformer encoders: layers against direct NumPy computations,
parameter parity, mixed precision, serialization, other decoders on MiT, and weight porting
(table checks here; numerical parity against smp / transformers in the reference
interpreter)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import all_layers, assert_save_load_identical, build_tiny, count_trainable
from safetensors.numpy import save_file
from torch_ref import requires_reference, run_reference

import zoo
from zoo.build_context import shapes_only
from zoo.layers import (
    AllMLPFuse,
    BilinearUpsampling,
    DropPath,
    EfficientSelfAttention,
    MixFFN,
    OverlapPatchEmbedding,
)
from zoo.port import PortError, get_table, plan, port_transformers
from zoo.port.__main__ import main as port_main

TINY_MIT = zoo.encoder_info("mit_b0").tiny_config
# A small non-standard MiT for the weight tests: two blocks in stage 2, several heads.
TINY = {"embed_dims": (8, 16, 24, 32), "depths": (1, 2, 1, 1), "num_heads": (1, 2, 3, 4)}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# --- NumPy references ----------------------------------------------------------------------


def np_layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_attention(x, w, num_heads, sr):
    """Spatial-reduction attention written out per head with loops over the reduced grid."""
    b, h, wd, c = x.shape
    d = c // num_heads
    q = x.reshape(b, h * wd, c) @ w["q"][0] + w["q"][1]
    if sr > 1:
        kernel, bias = w["sr"]
        hr, wr = h // sr, wd // sr
        red = np.zeros((b, hr, wr, c))
        for i in range(hr):
            for j in range(wr):
                patch = x[:, i * sr : (i + 1) * sr, j * sr : (j + 1) * sr, :]
                red[:, i, j] = np.einsum("bijc,ijco->bo", patch, kernel) + bias
        red = np_layer_norm(red.reshape(b, hr * wr, c), *w["norm"], 1e-5)
    else:
        red = x.reshape(b, h * wd, c)
    k = red @ w["k"][0] + w["k"][1]
    v = red @ w["v"][0] + w["v"][1]
    heads = []
    for n in range(num_heads):
        sl = slice(n * d, (n + 1) * d)
        scores = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / np.sqrt(d)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        heads.append(p @ v[..., sl])
    out = np.concatenate(heads, -1) @ w["proj"][0] + w["proj"][1]
    return out.reshape(b, h, wd, c)


def _sublayer_weights(layer, names):
    return {n: [np.asarray(v, np.float64) for v in getattr(layer, n).weights] for n in names}


@pytest.mark.parametrize("num_heads, sr", [(2, 2), (1, 1), (4, 3)])
def test_efficient_attention_matches_numpy(num_heads, sr):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 12, 8)).astype("float32")
    layer = EfficientSelfAttention(num_heads, sr_ratio=sr, name="attn")
    layer.build(x.shape)
    for v in layer.weights:  # non-trivial biases and norm parameters
        v.assign(rng.normal(0, 0.3, v.shape) + (1.0 if v.name == "gamma" else 0.0))
    names = ["q", "k", "v", "proj"] + (["sr", "norm"] if sr > 1 else [])
    expected = np_attention(x.astype(np.float64), _sublayer_weights(layer, names), num_heads, sr)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-5)
    assert [la.name for la in (layer.q, layer.k, layer.v, layer.proj)] == [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_proj",
    ]


def test_efficient_attention_rejects_heads_not_dividing_channels():
    with pytest.raises(ValueError, match=r"num_heads=3"):
        EfficientSelfAttention(3)(np.zeros((1, 4, 4, 8), "float32"))


def test_mix_ffn_and_patch_embedding_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 7, 4)).astype("float32")
    ffn = MixFFN(6)
    ffn.build(x.shape)
    for v in ffn.weights:
        v.assign(rng.normal(0, 0.5, v.shape))
    (w1, b1), (dw, db), (w2, b2) = (
        [np.asarray(v, np.float64) for v in la.weights] for la in (ffn.fc1, ffn.dwconv, ffn.fc2)
    )
    h = x.astype(np.float64) @ w1 + b1
    padded = np.pad(h, [(0, 0), (1, 1), (1, 1), (0, 0)])
    conv = sum(
        padded[:, i : i + 5, j : j + 7, :] * dw[i, j, :, 0] for i in range(3) for j in range(3)
    )
    from scipy.special import erf

    conv = conv + db
    gelu = 0.5 * conv * (1 + erf(conv / np.sqrt(2)))
    np.testing.assert_allclose(np.asarray(ffn(x)), gelu @ w2 + b2, rtol=1e-4, atol=1e-5)

    # Patch embedding: padding 1 on every side (not Keras' "same", which pads bottom/right).
    img = rng.normal(size=(1, 8, 6, 3)).astype("float32")
    embed = OverlapPatchEmbedding(5, patch_size=3, strides=2)
    embed.build(img.shape)
    for v in embed.weights:
        v.assign(rng.normal(0, 0.5, v.shape))
    kernel, bias = (np.asarray(v, np.float64) for v in embed.proj.weights)
    p = np.pad(img.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = (
        np.stack(
            [
                np.stack(
                    [
                        np.einsum("ijc,ijco->o", p[0, 2 * r : 2 * r + 3, 2 * c : 2 * c + 3], kernel)
                        for c in range(3)
                    ]
                )
                for r in range(4)
            ]
        )[None]
        + bias
    )
    gamma, beta = (np.asarray(v, np.float64) for v in embed.norm.weights)
    expected = np_layer_norm(out, gamma, beta, 1e-5)
    np.testing.assert_allclose(np.asarray(embed(img)), expected, rtol=1e-4, atol=1e-5)


def test_drop_path_drops_whole_samples_in_training_only():
    x = np.ones((4000, 2, 2, 3), "float32")
    layer = DropPath(0.25, seed=1)
    assert np.array_equal(np.asarray(layer(x)), x)  # inference: identity
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one decision per sample
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05  # expectation kept
    with pytest.raises(ValueError, match=r"rate=1\.0"):
        DropPath(1.0)


@pytest.mark.parametrize(
    "layer",
    [
        DropPath(0.1, seed=3, name="dp"),
        EfficientSelfAttention(2, sr_ratio=2, qkv_bias=False, epsilon=1e-6, name="a"),
        MixFFN(16, name="f"),
        OverlapPatchEmbedding(8, 3, 2, epsilon=1e-6, name="p"),
        BilinearUpsampling(2, align_corners=True, name="u"),
        AllMLPFuse(8, (16, 8, 4), name="fuse"),
    ],
    ids=lambda la: type(la).__name__,
)
def test_layers_serialize(layer, tmp_path):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    rng = np.random.default_rng(0)
    if isinstance(layer, AllMLPFuse):  # levels of a 32x32 image at strides 16, 8, 4
        x = [keras.Input((32 // s, 32 // s, 3)) for s in layer.strides]
        data = [rng.normal(size=(1, 32 // s, 32 // s, 3)).astype("float32") for s in layer.strides]
    else:
        x = keras.Input((8, 8, 8))
        data = rng.normal(size=(1, 8, 8, 8)).astype("float32")
    model = keras.Model(x, layer(x))
    assert_save_load_identical(model, data, tmp_path / "layer.keras")


def count_trainable_vars(variables):
    return int(sum(np.prod(v.shape) for v in variables))


# --- Encoders and model ----------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["mit_b0", "mit_b2"])
def test_param_counts_equal_smp(encoder):
    # smp 0.6: Segformer(encoder, encoder_weights=None, classes=1) (from the issue) and its
    # encoder alone; tests/test_parity_smp.py recomputes every variant with smp itself.
    expected = {"mit_b0": 3_714_401, "mit_b2": 24_722_369}[encoder]
    with shapes_only():  # counts from shapes: no weight drawn
        model = zoo.create_model("segformer", encoder=encoder)
        assert count_trainable(model) == expected
    encoder_part = [v for v in model.trainable_variables if v.path.startswith("encoder_")]
    assert count_trainable_vars(encoder_part) == zoo.encoders.mit.PARAMS[encoder]


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (160, 64)])
def test_segformer_shapes_at_several_sizes(size):
    model = build_tiny("segformer", num_classes=3)
    head = keras.Model(model.input, model.get_layer("head_conv").output)
    x = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    assert tuple(model(x).shape) == (1, *size, 3)
    assert tuple(head(x).shape) == (1, size[0] // 4, size[1] // 4, 3)
    enc = zoo.create_encoder("mit_b0", input_shape=(*size, 3), **TINY_MIT)
    widths = TINY_MIT["embed_dims"]
    for (stride, fmap), width in zip(sorted(enc(x).items()), widths):
        assert tuple(fmap.shape) == (1, size[0] // stride, size[1] // stride, width)


def test_mit_argument_errors():
    with pytest.raises(ValueError, match=r"output_stride=16"):
        zoo.create_encoder("mit_b0", output_stride=16)
    with pytest.raises(ValueError, match=r"embed_dims=\(8, 16\)"):
        zoo.create_encoder("mit_b0", embed_dims=(8, 16))
    with pytest.raises(ValueError, match=r"num_heads=\(3, 2, 5, 8\)"):
        zoo.create_encoder("mit_b0", num_heads=(3, 2, 5, 8))
    with pytest.raises(ValueError, match=r"input_normalization='imagenet'"):
        zoo.create_encoder("mit_b0", input_normalization="imagenet")
    with pytest.raises(ValueError, match=r"decoder_channels=0"):
        build_tiny("segformer", decoder_channels=0)


def test_drop_path_schedule_is_linear_up_to_the_rate():
    enc = zoo.create_encoder("mit_b0", input_shape=(64, 64, 3), depths=(2, 1, 1, 1))
    rates = {la.name: la.rate for la in all_layers(enc) if isinstance(la, DropPath)}
    # 5 blocks: 0, 0.025, 0.05, 0.075, 0.1; the first block has none.
    assert rates == pytest.approx(
        {
            f"encoder_{b}_drop_path{i}": r
            for b, r in [
                ("stage1_block2", 0.025),
                ("stage2_block1", 0.05),
                ("stage3_block1", 0.075),
                ("stage4_block1", 0.1),
            ]
            for i in (1, 2)
        }
    )
    assert not [la for la in all_layers(build_tiny("segformer")) if isinstance(la, DropPath)]


def test_weights_bring_their_normalization_inside(tmp_path):
    # With weights: [0, 1] images, normalized inside = the same weights on images normalized
    # by hand (input_normalization=None). Without weights: the plain graph, as before.
    path = tmp_path / "mit.safetensors"
    save_file(smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(0)), str(path))
    inside = zoo.create_encoder("mit_b0", input_shape=(64, 64, 3), weights=str(path), **TINY)
    outside = zoo.create_encoder(
        "mit_b0", input_shape=(64, 64, 3), weights=str(path), input_normalization=None, **TINY
    )
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    by_hand = ((x - MEAN) / STD).astype("float32")
    np.testing.assert_allclose(
        np.asarray(inside(x)[32]), np.asarray(outside(by_hand)[32]), rtol=1e-4, atol=1e-4
    )
    assert "encoder_preprocess" in {la.name for la in inside.layers}
    assert "encoder_preprocess" not in {la.name for la in outside.layers}
    plain = zoo.create_encoder("mit_b0", input_shape=(64, 64, 3), **TINY)
    assert [la.name for la in plain.layers][:2] == ["image", "encoder_stage1_patch_embed"]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_logits_are_finite_float32_and_close(policy):
    keras.utils.set_random_seed(0)
    ref = build_tiny("segformer", num_classes=2)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_tiny("segformer", num_classes=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(ref.get_weights())
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    out = model(x)
    assert out.dtype == "float32"
    out = np.asarray(out)
    assert np.all(np.isfinite(out))
    want = np.asarray(ref(x))
    assert np.abs(out - want).max() < 0.1 * np.abs(want).max()
    attn = model.get_layer("encoder_stage1_block1_attn")
    assert attn.compute_dtype == policy.split("_")[1]


def test_mit_encoder_saves_and_loads(tmp_path):
    enc = zoo.create_encoder("mit_b0", input_shape=(None, None, 3), **TINY_MIT)
    x = np.random.default_rng(0).random((1, 64, 32, 3), dtype=np.float32)
    enc.save(tmp_path / "enc.keras")
    loaded = keras.saving.load_model(tmp_path / "enc.keras", safe_mode=True)
    # (a loaded functional model's dict outputs have string keys)
    got = {int(k): np.asarray(v) for k, v in loaded(x).items()}
    for stride, fmap in enc(x).items():
        np.testing.assert_array_equal(np.asarray(fmap), got[stride])


@pytest.mark.parametrize("name", ["unet", "fpn"])
def test_other_decoders_on_mit(name):
    # No stride-2 level: the U-Net's stride-2 block has no skip, the FPN never asks for one.
    model = build_tiny(name, input_shape=(64, 96, 3), encoder="mit_b0", encoder_kwargs=TINY_MIT)
    out = np.asarray(model(np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)))
    assert out.shape == (1, 64, 96, 2) and np.all(np.isfinite(out))
    assert "encoder_stage4_norm" in {la.name for la in model.layers}  # all four stages used


def test_segformer_uses_a_stride2_level_like_smp():
    # smp projects every encoder level from stride 2 on and resizes the stride-2 one to
    # stride 4 (bilinear, half-pixel: a 2x2 average); resnet counts are checked against smp
    # in tests/test_parity_smp.py.
    model = build_tiny("segformer", encoder="resnet18", encoder_kwargs={"base_width": 8})
    assert model.get_layer("decoder_fuse").strides == (32, 16, 8, 4, 2)
    x = np.arange(32, dtype="float32").reshape(1, 4, 4, 2)
    pooled = keras.layers.AveragePooling2D(2)(x)
    resized = keras.layers.Resizing(2, 2, interpolation="bilinear")(x)
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(resized), atol=1e-6)


def _unfused_fuse(layer, inputs):
    """What `AllMLPFuse` stands for, with Keras layers and its variables: Dense per level,
    bilinear upsampling (or the half-size bilinear resize), concatenation, 1x1 conv."""
    import tensorflow as tf

    branches = []
    for stride, x, kernel, bias in zip(layer.strides, inputs, layer.kernels, layer.biases):
        y = tf.tensordot(tf.cast(x, "float32"), kernel, 1) + bias
        if stride > 4:
            y = keras.layers.UpSampling2D(stride // 4, interpolation="bilinear")(y)
        elif stride < 4:
            h, w = y.shape[1] // 2, y.shape[2] // 2
            y = keras.layers.Resizing(h, w, interpolation="bilinear")(y)
        branches.append(y)
    return tf.nn.conv2d(tf.concat(branches, -1), layer.fuse_kernel, 1, "VALID")


@pytest.mark.parametrize("strides", [(32, 16, 8, 4), (32, 16, 8, 4, 2), (16, 8)])
def test_all_mlp_fuse_equals_project_resize_concat_conv(strides):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    h, w = 8, 16  # at stride 4 (stride 32: 1 x 2)
    inputs = [
        tf.constant(rng.normal(size=(2, h * 4 // s, w * 4 // s, 3 + i)).astype("float32"))
        for i, s in enumerate(strides)
    ]
    layer = AllMLPFuse(5, strides)
    layer.build([x.shape for x in inputs])
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape))
    upstream = tf.constant(rng.normal(size=(2, h, w, 5)).astype("float32"))

    def value_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = fn()
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [*inputs, *layer.weights])

    y, grads = value_and_grads(lambda: layer(inputs))
    y_ref, grads_ref = value_and_grads(lambda: _unfused_fuse(layer, inputs))
    assert tuple(y.shape) == (2, h, w, 5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_all_mlp_fuse_rejects_bad_strides():
    with pytest.raises(ValueError, match=r"strides=\(32, 12\)"):
        AllMLPFuse(8, (32, 12))


# --- Pretrained weights and porting: tables and errors, without torch ---------------------


def smp_state(dims, depths, rng, sr_ratios=(8, 4, 2, 1)):
    """An smp/original-layout MiT state dict written out by hand (random values)."""
    state = {}

    def add(key, *shape):
        state[key] = rng.normal(size=shape).astype("float32")

    for s in range(1, 5):
        d, cin, k = dims[s - 1], 3 if s == 1 else dims[s - 2], 7 if s == 1 else 3
        add(f"patch_embed{s}.proj.weight", d, cin, k, k)
        for p in ("proj.bias", "norm.weight", "norm.bias"):
            add(f"patch_embed{s}.{p}", d)
        for b in range(depths[s - 1]):
            pre = f"block{s}.{b}."
            for n in ("norm1", "norm2"):
                add(pre + n + ".weight", d)
                add(pre + n + ".bias", d)
            add(pre + "attn.q.weight", d, d)
            add(pre + "attn.q.bias", d)
            add(pre + "attn.kv.weight", 2 * d, d)
            add(pre + "attn.kv.bias", 2 * d)
            add(pre + "attn.proj.weight", d, d)
            add(pre + "attn.proj.bias", d)
            sr = sr_ratios[s - 1]
            if sr > 1:
                add(pre + "attn.sr.weight", d, d, sr, sr)
                add(pre + "attn.sr.bias", d)
                add(pre + "attn.norm.weight", d)
                add(pre + "attn.norm.bias", d)
            add(pre + "mlp.fc1.weight", 4 * d, d)
            add(pre + "mlp.fc1.bias", 4 * d)
            add(pre + "mlp.dwconv.dwconv.weight", 4 * d, 1, 3, 3)
            add(pre + "mlp.dwconv.dwconv.bias", 4 * d)
            add(pre + "mlp.fc2.weight", d, 4 * d)
            add(pre + "mlp.fc2.bias", d)
        add(f"norm{s}.weight", d)
        add(f"norm{s}.bias", d)
    return state


def transformers_state(dims, depths, sr_ratios, classes, decoder, rng):
    """A transformers SegformerForSemanticSegmentation state dict written out by hand in its
    published key names (random values)."""
    state = {}

    def add(key, *shape):
        state[key] = rng.normal(size=shape).astype("float32")

    enc = "segformer.encoder."
    for s in range(4):
        d, cin, k = dims[s], 3 if s == 0 else dims[s - 1], 7 if s == 0 else 3
        add(f"{enc}patch_embeddings.{s}.proj.weight", d, cin, k, k)
        for p in ("proj.bias", "layer_norm.weight", "layer_norm.bias"):
            add(f"{enc}patch_embeddings.{s}.{p}", d)
        for b in range(depths[s]):
            pre = f"{enc}block.{s}.{b}."
            for n in ("layer_norm_1", "layer_norm_2"):
                add(pre + n + ".weight", d)
                add(pre + n + ".bias", d)
            for n in ("self.query", "self.key", "self.value", "output.dense"):
                add(pre + f"attention.{n}.weight", d, d)
                add(pre + f"attention.{n}.bias", d)
            sr = sr_ratios[s]
            if sr > 1:
                add(pre + "attention.self.sr.weight", d, d, sr, sr)
                add(pre + "attention.self.sr.bias", d)
                add(pre + "attention.self.layer_norm.weight", d)
                add(pre + "attention.self.layer_norm.bias", d)
            add(pre + "mlp.dense1.weight", 4 * d, d)
            add(pre + "mlp.dense1.bias", 4 * d)
            add(pre + "mlp.dwconv.dwconv.weight", 4 * d, 1, 3, 3)
            add(pre + "mlp.dwconv.dwconv.bias", 4 * d)
            add(pre + "mlp.dense2.weight", d, 4 * d)
            add(pre + "mlp.dense2.bias", d)
        add(f"{enc}layer_norm.{s}.weight", d)
        add(f"{enc}layer_norm.{s}.bias", d)
    for i, d in enumerate(dims):  # finest level first
        add(f"decode_head.linear_c.{i}.proj.weight", decoder, d)
        add(f"decode_head.linear_c.{i}.proj.bias", decoder)
    add("decode_head.linear_fuse.weight", decoder, 4 * decoder, 1, 1)
    for p in ("weight", "bias", "running_mean"):
        add(f"decode_head.batch_norm.{p}", decoder)
    state["decode_head.batch_norm.running_var"] = rng.uniform(0.5, 1.5, decoder).astype("float32")
    state["decode_head.batch_norm.num_batches_tracked"] = np.array(3, np.int64)
    add("decode_head.classifier.weight", classes, decoder, 1, 1)
    add("decode_head.classifier.bias", classes)
    return state


def weight_of(model, layer, variable):
    found = [v for v in model.get_layer(layer).weights if v.path.endswith(f"/{variable}")]
    assert len(found) == 1, (layer, variable, [v.path for v in model.get_layer(layer).weights])
    return np.asarray(found[0])


def test_smp_layout_file_lands_in_every_variable(tmp_path):
    state = smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(0))
    state["head.weight"] = np.zeros((10, 32), "float32")  # the ImageNet classifier: ignored
    path = tmp_path / "mit.safetensors"
    save_file(state, str(path))
    enc = zoo.create_encoder("mit_b0", weights=str(path), **TINY)
    # Every variable has its key and every key but the classifier is used (kv twice).
    writes = plan(enc, state, get_table("mit").bind(ours="encoder_"))
    assert sorted(w.variable.path for w in writes) == sorted(v.path for v in enc.weights)
    assert {w.key for w in writes} == set(state) - {"head.weight"}

    kv, d = state["block2.1.attn.kv.weight"], 16
    blk = "encoder_stage2_block2_attn"
    np.testing.assert_array_equal(weight_of(enc, blk, f"{blk}_k/kernel"), kv[:d].T)
    np.testing.assert_array_equal(weight_of(enc, blk, f"{blk}_v/kernel"), kv[d:].T)
    np.testing.assert_array_equal(
        weight_of(enc, blk, f"{blk}_v/bias"), state["block2.1.attn.kv.bias"][d:]
    )
    np.testing.assert_array_equal(
        weight_of(enc, blk, f"{blk}_sr/kernel"),
        state["block2.1.attn.sr.weight"].transpose(2, 3, 1, 0),
    )
    mlp = "encoder_stage3_block1_mlp"
    np.testing.assert_array_equal(
        weight_of(enc, mlp, f"{mlp}_dwconv/kernel"),
        state["block3.0.mlp.dwconv.dwconv.weight"].transpose(2, 3, 0, 1),
    )
    np.testing.assert_array_equal(
        weight_of(enc, mlp, f"{mlp}_fc1/kernel"), state["block3.0.mlp.fc1.weight"].T
    )
    pe = "encoder_stage1_patch_embed"
    np.testing.assert_array_equal(
        weight_of(enc, pe, f"{pe}_proj/kernel"),
        state["patch_embed1.proj.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        weight_of(enc, "encoder_stage4_norm", "gamma"), state["norm4.weight"]
    )
    np.testing.assert_array_equal(
        weight_of(enc, "encoder_stage2_block1_norm2", "beta"), state["block2.0.norm2.bias"]
    )


def test_transformers_segformer_port_reads_the_architecture(tmp_path, capsys):
    state = transformers_state(TINY["embed_dims"], TINY["depths"], (4, 2, 1, 1), 5, 16,
                               np.random.default_rng(0))  # fmt: skip
    path = tmp_path / "segformer.safetensors"
    save_file(state, str(path))
    # The weights give widths, depths, reductions, classes, decoder width; not the heads.
    model = port_transformers(path, encoder_kwargs={"num_heads": TINY["num_heads"]})
    config = model.get_config()
    assert (config["encoder"], config["num_classes"], config["decoder_channels"]) == (
        "mit_b0", 5, 16
    )  # fmt: skip
    assert config["encoder_kwargs"] == {**TINY, "sr_ratios": (4, 2, 1, 1)}
    assert config["encoder_weights"] == str(path)
    enc = "segformer.encoder.block.1.1.attention.self."
    blk = "encoder_stage2_block2_attn"
    np.testing.assert_array_equal(
        weight_of(model, blk, f"{blk}_k/kernel"), state[enc + "key.weight"].T
    )
    np.testing.assert_array_equal(weight_of(model, blk, f"{blk}_v/bias"), state[enc + "value.bias"])
    # linear_c counts levels finest first; the fuse kernel is over [32, 16, 8, 4] (deepest first)
    np.testing.assert_array_equal(
        weight_of(model, "decoder_fuse", "linear32_kernel"),
        state["decode_head.linear_c.3.proj.weight"].T,
    )
    np.testing.assert_array_equal(
        weight_of(model, "decoder_fuse", "linear4_bias"), state["decode_head.linear_c.0.proj.bias"]
    )
    np.testing.assert_array_equal(
        weight_of(model, "decoder_fuse", "fuse_kernel"),
        state["decode_head.linear_fuse.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        weight_of(model, "decoder_fuse_bn", "moving_variance"),
        state["decode_head.batch_norm.running_var"],
    )
    np.testing.assert_array_equal(
        weight_of(model, "head_conv", "kernel"),
        state["decode_head.classifier.weight"].transpose(2, 3, 1, 0),
    )
    assert "encoder_preprocess" in {la.name for la in model.layers}  # [0, 1] images
    with pytest.raises(ValueError, match=r"head has 5 classes\. Received: num_classes=2"):
        port_transformers(path, num_classes=2)
    # The command line: one line for a file of another kind (an smp encoder's).
    other = tmp_path / "mit.safetensors"
    save_file(smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(0)), str(other))
    rc = port_main(["transformers", "--checkpoint", str(other), "--out", str(tmp_path / "o.keras")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert "missing key 'segformer.encoder.patch_embeddings.0.proj.weight'" in err


def test_wrong_weights_files_are_one_line_naming_the_key(tmp_path):
    rng = np.random.default_rng(0)
    dims, depths = TINY["embed_dims"], TINY["depths"]
    missing = smp_state(dims, depths, rng)
    del missing["block3.0.attn.kv.weight"]
    cases = [
        (missing, r"missing key 'block3\.0\.attn\.kv\.weight'"),
        (smp_state(dims, (1, 3, 1, 1), rng), r"unexpected key 'block2\.2\."),
        (
            smp_state((8, 16, 24, 40), depths, rng),
            r"shape mismatch for key '\S*4\.\S+': \S+ has \((40|40, \d+|\d+, 40)\b.*our "
            r"variable 'encoder_stage4_\w+/\w+' has \((32|32, \d+|\d+, 32)\b",
        ),
        ({"conv1.weight": np.zeros((4, 3, 7, 7), "float32")},
         r"none of the keys 'patch_embed1\.proj\.weight', .*'encoder\.patch_embeddings"),
    ]  # fmt: skip
    for i, (state, pattern) in enumerate(cases):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(state, str(path))
        with pytest.raises(PortError, match=pattern) as err:
            zoo.create_encoder("mit_b0", weights=str(path), **TINY)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_imagenet_is_smp_hubs_file_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    monkeypatch.setenv("SEGZOO_OFFLINE", "1")
    cached = tmp_path / "weights" / "smp-hub" / "mit_b0.imagenet" / "model.safetensors"
    with pytest.raises(OSError) as err:
        zoo.create_model("segformer", encoder_weights="imagenet")
    # smp 0.6's pinned revision (segmentation_models_pytorch/encoders/mix_transformer.py)
    url = (
        "https://huggingface.co/smp-hub/mit_b0.imagenet/resolve/"
        "9ce53d104d92d75aabb00aae70677aaab67e7c84/model.safetensors"
    )
    assert url in str(err.value) and str(cached) in str(err.value)
    assert "\n" not in str(err.value)
    # A file there is used (a small stand-in for the real one).
    state = smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(1))
    cached.parent.mkdir(parents=True)
    save_file(state, str(cached))
    enc = zoo.create_encoder("mit_b0", weights="imagenet", **TINY)
    np.testing.assert_array_equal(
        weight_of(enc, "encoder_stage3_norm", "beta"), state["norm3.bias"]
    )


def test_gray_and_four_band_inputs_take_the_rgb_weights(tmp_path):
    path = tmp_path / "mit.safetensors"
    save_file(smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(0)), str(path))
    rgb, gray, four = (
        zoo.create_encoder("mit_b0", input_shape=(64, 64, c), weights=str(path), **TINY)
        for c in (3, 1, 4)
    )
    g = np.random.default_rng(0).random((1, 64, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(gray(g)[32]), np.asarray(rgb(np.repeat(g, 3, -1))[32]), rtol=1e-5, atol=1e-5
    )
    kernel = weight_of(four, "encoder_stage1_patch_embed", "encoder_stage1_patch_embed_proj/kernel")
    assert kernel.shape == (7, 7, 4, 8)
    np.testing.assert_allclose(kernel[:, :, 3], kernel[:, :, 0])  # band 4 takes red's kernel
    assert four.get_layer("encoder_preprocess").scale == pytest.approx(1 / STD[[0, 1, 2, 0]])
    assert np.all(np.isfinite(np.asarray(four(np.ones((1, 64, 64, 4), "float32"))[32])))


def test_saved_segformer_never_rereads_its_weights(tmp_path):
    path = tmp_path / "mit.safetensors"
    save_file(smp_state(TINY["embed_dims"], TINY["depths"], np.random.default_rng(0)), str(path))
    model = build_tiny("segformer", encoder_kwargs=TINY, encoder_weights=str(path))
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    path.unlink()
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


# --- Porting: numerical parity with the references ---------------------------------------

IMAGE = np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Random-init smp Segformer, transformers SegformerForSemanticSegmentation and
    SegformerModel (all mit_b0, 3 classes): their .safetensors files and outputs on
    ImageNet-normalized images (the published weights' input; ported models normalize
    inside)."""
    out_dir = tmp_path_factory.mktemp("segformer_ref")
    layouts = ["smp", "transformers", "transformers_encoder"]
    arrays = run_reference(
        "segformer_reference",
        {"image": IMAGE},
        layouts=layouts,
        normalize=layouts,
        encoder="mit_b0",
        classes=3,
        out_dir=str(out_dir),
    )
    return out_dir, arrays


def stage_outputs(model, extra=()):
    names = [f"encoder_stage{s}_norm" for s in (1, 2, 3, 4)] + list(extra)
    return keras.Model(model.input, [model.get_layer(n).output for n in names])


def assert_features(outputs, ref, prefix):
    for stride, f in zip((4, 8, 16, 32), outputs):
        np.testing.assert_allclose(f, ref[f"{prefix}_feat{stride}"], rtol=1e-4, atol=1e-4)


REF = requires_reference("torch", "segmentation_models_pytorch", "transformers", "safetensors")


@REF
def test_smp_segformer_ported_by_zoo_port_reproduces_smp(reference, tmp_path):
    out_dir, ref = reference
    out = tmp_path / "segformer.keras"
    args = ["smp", "--checkpoint", str(out_dir / "smp.safetensors"), "--model", "segformer",
            "--encoder", "mit_b0", "--out", str(out)]  # fmt: skip
    assert port_main(args) == 0
    model = keras.saving.load_model(out, safe_mode=True)
    assert model.get_config()["num_classes"] == 3  # read from the weights
    *feats, logits = stage_outputs(model, ["head_upsample"])(IMAGE)  # [0, 1] images
    assert_features(feats, ref, "smp")
    np.testing.assert_allclose(logits, ref["smp_logits"], rtol=1e-4, atol=1e-4)


@REF
def test_transformers_segformer_port_reproduces_stride4_logits(reference, tmp_path):
    out_dir, ref = reference
    out = tmp_path / "segformer.keras"
    args = ["transformers", "--checkpoint", str(out_dir / "transformers.safetensors"),
            "--out", str(out)]  # fmt: skip
    assert port_main(args) == 0
    model = keras.saving.load_model(out, safe_mode=True)
    config = model.get_config()
    assert (config["encoder"], config["encoder_kwargs"], config["decoder_channels"]) == (
        "mit_b0", {}, 256
    )  # fmt: skip
    # Block and stage layer norms: transformers' eps 1e-5 vs our (original) 1e-6.
    *feats, logits = stage_outputs(model, ["head_conv"])(IMAGE)
    assert_features(feats, ref, "transformers")
    np.testing.assert_allclose(logits, ref["transformers_logits"], rtol=1e-4, atol=1e-4)


@REF
def test_mit_checkpoints_as_encoder_weights_of_any_model(reference):
    out_dir, ref = reference
    # A transformers SegformerModel file into a standalone encoder ...
    path = out_dir / "transformers_encoder.safetensors"
    enc = zoo.create_encoder("mit_b0", input_shape=(None, None, 3), weights=str(path))
    features = enc(IMAGE)
    assert_features([features[s] for s in (4, 8, 16, 32)], ref, "transformers_encoder")
    # ... and a whole smp Segformer's file (its encoder. part) into a U-Net.
    unet = zoo.create_model(
        "unet",
        encoder="mit_b0",
        decoder_channels=(32, 16, 8, 8, 8),
        encoder_weights=str(out_dir / "smp.safetensors"),
    )
    assert_features(stage_outputs(unet)(IMAGE), ref, "smp")


@pytest.mark.slow  # a TensorFlow child process: ~30 s
def test_segformer_bench_smoke(tmp_path):
    # bench/segformer_bench.py runs and writes its rows (zoo side only; no timing asserted).
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.segformer_bench", "--smoke",
         "--precisions", "float32", "--out", str(out)],
        capture_output=True, text=True, cwd=root, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["encoder"], row["size"], row["batch"]) == ("mit_b0", 64, 2)
    assert row["zoo_train_img_s"] > 0 and row["zoo_infer_img_s"] > 0


def test_receptive_field_rules_for_segformer_layers():
    # MiT attention: global. With a CNN encoder the bound from the AllMLPFuse rule holds: one
    # changed input pixel moves no logit farther than the radius.
    from zoo.inference import receptive_field

    assert receptive_field(build_tiny("segformer")) == float("inf")
    keras.utils.set_random_seed(0)
    model = build_tiny("segformer", encoder="resnet18", encoder_kwargs={"base_width": 8})
    radius = receptive_field(model)
    size = -(-(2 * int(radius) + 64) // 32) * 32  # room around the field on every side
    probe = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    bumped = probe.copy()
    bumped[0, size // 2, size // 2] += 5.0
    diff = np.abs(np.asarray(model(bumped)) - np.asarray(model(probe))).max(-1)[0]
    changed = np.argwhere(diff > 0)
    assert len(changed) and np.abs(changed - size // 2).max() <= radius < size
