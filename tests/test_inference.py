"""Tiled inference (zoo.inference): exactness, blending, scale, TTA, distribution, memory,
full-resolution evaluation and large-image IO.

Reference values come from independent computations: the model run on the whole image,
NumPy flips/rotations, hand-worked tile layouts and closed forms (a linear ramp survives
resampling), and confusion counts from `np.bincount`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import build_tiny
from PIL import Image

import zoo
import zoo.inference as inf
from zoo.inference import io as lio
from zoo.inference import scale as scaling
from zoo.inference import tiling, tta
from zoo.inference import writers as wr

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- test models


def conv_model(
    classes: int = 1, seed: int = 0, symmetric: bool = False, mode: str | None = None
) -> keras.Model:
    """Two 3x3 convs (stride 1, receptive-field radius 2). `symmetric`: D4-invariant kernels,
    so the model commutes with every flip and quarter turn."""
    rng = np.random.default_rng(seed)
    image = keras.Input((None, None, 3))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")
    c2 = keras.layers.Conv2D(classes, 3, padding="same")
    model = keras.Model(image, c2(c1(image)))
    for conv in (c1, c2):
        kernel, bias = (w.numpy() for w in conv.weights)
        k = rng.normal(0, 0.7, kernel.shape).astype(np.float32)
        if symmetric:  # center, edge and corner taps: invariant under the square's symmetries
            a, b, c = k[1, 1], k[0, 1], k[0, 0]
            k = np.stack([np.stack([c, b, c]), np.stack([b, a, b]), np.stack([c, b, c])])
        conv.set_weights([k, rng.normal(0, 0.3, bias.shape).astype(np.float32)])
    if mode is not None:
        model.metadata = {"mode": mode}
    return model


def affine_model(weights: list[list[float]], bias: list[float]) -> keras.Model:
    """1x1 conv: logits = image @ weights + bias (no spatial context at all)."""
    image = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(len(bias), 1)
    model = keras.Model(image, conv(image))
    conv.set_weights([np.asarray(weights, np.float32)[None, None], np.asarray(bias, np.float32)])
    return model


def whole(model: keras.Model, image: np.ndarray) -> np.ndarray:
    return np.asarray(model(image[None], training=False))[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


# --------------------------------------------------------------------------- tile layout


def test_tile_starts_hand_worked_and_properties():
    # span 488, step 256 -> 3 tiles; 244 rounds to the 32-grid at 256; the last is shifted.
    assert inf.tile_starts(1000, 512, 0.5, align=32) == [0, 256, 488]
    assert inf.tile_starts(100, 64, 0.5) == [0, 18, 36]  # evenly spread, gaps <= 32
    assert inf.tile_starts(64, 64, 0.5) == [0] and inf.tile_starts(10, 64, 0.0) == [0]
    assert inf.tile_starts(128, 64, 0.0) == [0, 64]
    for size, tile, overlap, align in [(1000, 96, 0.25, 32), (777, 64, 0.5, 16), (65, 64, 0.9, 1)]:
        starts = inf.tile_starts(size, tile, overlap, align)
        step = tiling.tile_step(tile, overlap)
        assert starts[0] == 0 and starts[-1] == size - tile  # covers, never hangs off
        assert all(0 < b - a <= step for a, b in zip(starts, starts[1:]))
        if step >= align:
            assert all(s % align == 0 for s in starts[:-1])


def test_gaussian_profile_hand_worked():
    local = np.arange(8, dtype=np.float64)
    w = tiling.profile("gaussian", local, 8, first=False, last=False)
    np.testing.assert_allclose(w, np.exp(-0.5 * (local - 3.5) ** 2))  # sigma = 8 / 8
    first = tiling.profile("gaussian", local, 8, first=True, last=False)
    np.testing.assert_allclose(first, np.where(local < 3.5, 1.0, w))  # flat towards the border
    c = tiling.profile("center", local, 8, False, False, lo=2.0, hi=5.0)
    np.testing.assert_array_equal(c, [0, 0, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("blend", inf.BLENDS)
@pytest.mark.parametrize(
    "size,scaled,tile", [(100, 100, 32), (37, 37, 16), (9, 9, 16), (100, 47, 16), (30, 71, 16)]
)
def test_weights_normalize_on_every_pixel(blend, size, scaled, tile):
    tile = tile if scaled >= tile else -(-scaled // 8) * 8
    plan = tiling.plan_axis(size, scaled, tile, 0.5, blend, align=8)
    np.testing.assert_allclose(tiling.coverage(plan), 1.0, atol=1e-6)


@pytest.mark.parametrize("blend", inf.BLENDS)
@pytest.mark.parametrize(
    "shape,tile,scale", [((45, 77), 16, 1.0), ((13, 9), 16, 1.0), ((40, 50), (16, 24), (0.6, 1.7))]
)
def test_constant_model_gives_the_constant_at_borders_and_corners(blend, shape, tile, scale):
    model = affine_model([[0.0, 0.0]] * 3, [0.75, -2.5])
    out = inf.predict(
        model,
        rand_image(*shape),
        tile=tile,
        overlap=0.25,
        blend=blend,
        output="logits",
        scale=scale,
        batch_size=3,
    )
    assert out.shape == (*shape, 2)
    np.testing.assert_allclose(out[..., 0], 0.75, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], -2.5, atol=1e-6)


@pytest.mark.parametrize("blend", inf.BLENDS)
def test_every_pixel_lands_where_it_belongs(blend):
    """Identity model: the blended output is the input image, pixel for pixel."""
    model = affine_model([[1.0], [0.0], [0.0]], [0.0])
    image = rand_image(53, 70, seed=3)
    out = inf.predict(model, image, tile=(16, 24), overlap=0.4, blend=blend, output="logits")
    np.testing.assert_allclose(out[..., 0], image[..., 0], atol=1e-6)


# --------------------------------------------------------------------------- exactness


def test_receptive_field_of_the_test_model_is_hand_worked():
    assert inf.receptive_field(conv_model()) == 2.0  # two 3x3 convs: 1 + 1
    assert inf.receptive_overlap(2, 16) == pytest.approx(1 - 11 / 16)  # 2*2+1 <= 16-11


@pytest.mark.parametrize("classes,mode", [(1, "binary"), (3, "multiclass"), (3, "multilabel")])
@pytest.mark.parametrize("shape", [(37, 53), (16, 45), (10, 13)])
def test_center_blend_reproduces_whole_image_logits(classes, mode, shape):
    model = conv_model(classes, mode=mode)
    image = rand_image(*shape, seed=1)
    overlap = inf.receptive_overlap(inf.receptive_field(model), 16)
    logits = inf.predict(
        model, image, tile=16, overlap=overlap, blend="center", output="logits", batch_size=4
    )
    reference = whole(model, image)
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    probs = inf.predict(model, image, tile=16, overlap=overlap, blend="center", batch_size=4)
    expected = softmax(reference) if mode == "multiclass" else sigmoid(reference)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    if min(shape) > 16:  # a plain average mixes in tile-edge pixels: the check can fail
        uniform = inf.predict(
            model, image, tile=16, overlap=overlap, blend="uniform", output="logits"
        )
        assert np.abs(uniform - reference).max() > 1e-3


def _registered(global_context: bool) -> list[str]:
    return [
        n
        for n in zoo.list_models()
        if bool(zoo.model_info(n).metadata.get("global_context")) == global_context
    ]


@pytest.mark.parametrize("name", zoo.list_models())
def test_global_context_flag_matches_the_graph(name):
    model = build_tiny(name)
    assert inf.has_global_context(model) == bool(
        zoo.model_info(name).metadata.get("global_context")
    )


@pytest.mark.parametrize("name", _registered(global_context=False))
def test_registered_models_tile_exactly(name):
    """Margin >= the receptive-field bound, tile starts on the stride grid: tiled == whole."""
    keras.utils.set_random_seed(0)
    model = build_tiny(name)
    d = model.divisor
    radius = inf.receptive_field(model)
    tile = -(-(2 * int(radius) + 1 + d) // d) * d  # step = d leaves 2 * radius + 1
    image = rand_image(tile + 2 * d, tile + d, seed=2)  # 3 x 2 tiles, all aligned
    # The bound really bounds: one changed pixel moves no output farther than `radius`.
    probe = rand_image(tile, tile, seed=4)
    bumped = probe.copy()
    bumped[tile // 2, tile // 2] += 5.0
    changed = np.argwhere(np.abs(whole(model, bumped) - whole(model, probe)).max(-1) > 0)
    assert np.abs(changed - tile // 2).max() <= radius
    logits = inf.predict(
        model, image, tile=tile, overlap=1 - d / tile, blend="center", output="logits", batch_size=2
    )
    np.testing.assert_allclose(logits, whole(model, image), atol=1e-4)


@pytest.fixture(scope="module")
def trained_global_model():
    """A tiny global-context model after a short training on the default shapes size (96)."""
    import losses
    from zoo.data import build_datasets

    name = _registered(global_context=True)[0]
    keras.utils.set_random_seed(0)
    bundle = build_datasets(
        {
            "name": "shapes",
            "train_size": 64,
            "val_size": 8,
            "image_size": [96, 96],
            "weight_map": "none",
            "cache": False,
        },
        global_batch_size=8,
    )
    model = build_tiny(name, num_classes=1, dropout=0.0)
    train = losses.attach(model, "wbce+dice")
    train.compile(optimizer=keras.optimizers.Adam(5e-3), jit_compile=False)
    # 160 steps: at 80 the masks are still undecided along the object borders (val Dice 0.94,
    # tile agreement 98.9%); at 160 Dice is 0.97 and agreement 99.7%.
    train.fit(bundle.train, steps_per_epoch=160, epochs=1, verbose=0, shuffle=False)
    return model


def test_global_context_model_agrees_on_the_shapes_validation_images(trained_global_model):
    """Tiles of the training size on validation images twice as large: the image-pooling
    context differs per tile, so agreement (not equality) is the claim."""
    from zoo.data import generate_shapes

    model = trained_global_model
    val = generate_shapes(6, image_size=(192, 192), split="val")
    truth = val.masks(num_classes=1) > 0
    tiled, full = [], []
    for image in val.images:
        tiled.append(inf.predict(model, image, tile=96, overlap=0.5, output="logits")[..., 0] > 0)
        full.append(whole(model, image.astype(np.float32) / 255)[..., 0] > 0)
    tiled, full = np.stack(tiled), np.stack(full)
    # The model learned the task (so agreement is not two empty masks agreeing).
    assert 2 * (full & truth).sum() / (full.sum() + truth.sum()) > 0.7
    assert np.mean(tiled == full) >= 0.99


# --------------------------------------------------------------------------- scale


def test_input_scale_rule_hand_worked():
    assert inf.input_scale_from_sizes([(1024, 2048), (1000, 2000), (2048, 2048)], (256, 512)) == [
        0.25,
        0.25,
    ]
    # crop: native resolution unless smaller than the crop (then upscaled to fit)
    assert inf.input_scale_from_sizes(
        [(50, 100), (300, 300), (400, 500)], (100, 100), resize="crop"
    ) == [1.0, 1.0]
    with pytest.raises(ValueError, match="resize"):
        inf.input_scale_from_sizes([(1, 1)], (8, 8), resize="pad")
    model = affine_model([[1.0]] * 3, [0.0])
    model.metadata = {"input_scale": [0.5, 0.25]}
    assert scaling.resolve_scale(model) == (0.5, 0.25)
    assert scaling.resolve_scale(model, 2) == (2.0, 2.0)
    with pytest.raises(ValueError, match="scale"):
        scaling.resolve_scale(model, -1)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("factor", [0.3, 1.7])
def test_tile_resampling_equals_cropping_the_whole_resample(dtype, factor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (61, 83, 3)).astype(np.uint8)
    if dtype == "float32":
        image = image.astype(np.float32) / 255
    h, w = scaling.scaled_size(image.shape[:2], (factor, factor))
    if dtype == "uint8":
        full = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)) / 255.0
    else:
        full = np.stack(
            [
                np.asarray(Image.fromarray(image[..., c], "F").resize((w, h), Image.BILINEAR))
                for c in range(3)
            ],
            -1,
        )
    fy, fx = 61 / h, 83 / w
    for y0, x0, th, tw in [(0, 0, 16, 16), (2, 5, 12, 16), (h - 16, w - 16, 16, 16)]:
        box = (y0 * fy, x0 * fx, (y0 + th) * fy, (x0 + tw) * fx)
        tile = scaling.resample_region(image, box, (th, tw), 3)
        # uint8: Pillow rounds fixed-point coefficients, and the box's float origin can tip
        # one of them: at most one 8-bit level, at a few pixels.
        tol = 1.01 / 255 if dtype == "uint8" else 1e-6
        np.testing.assert_allclose(tile, full[y0 : y0 + th, x0 : x0 + tw], atol=tol)
        assert np.mean(np.abs(tile - full[y0 : y0 + th, x0 : x0 + tw]) > 1e-6) < 0.01


@pytest.mark.parametrize("factor", [0.5, (0.25, 2.0)])
def test_scaled_prediction_maps_back_to_native_pixels(factor):
    """Identity model on a linear ramp: Pillow's filters keep a linear function at integer
    shrink factors and at 2x enlargement (symmetric taps), and bilinear interpolation back is
    exact, so a half-pixel slip in the mapping (0.002 here) would show."""
    model = affine_model([[1.0], [0.0], [0.0]], [0.0])
    yy, xx = np.mgrid[0:96, 0:120].astype(np.float32)  # 96 * 0.25 and 120 * 2: whole
    ramp = (0.1 + 0.004 * yy + 0.003 * xx)[..., None].repeat(3, -1)
    out = inf.predict(model, ramp, tile=16, overlap=0.5, output="logits", scale=factor)
    m = 6  # the resampling filter is clipped (renormalized) at the image border
    np.testing.assert_allclose(out[m:-m, m:-m, 0], ramp[m:-m, m:-m, 0], atol=1e-5)


def test_metadata_scale_is_used_by_default():
    model = conv_model()
    image = rand_image(40, 60)
    explicit = inf.predict(model, image, tile=16, scale=0.5)
    model.metadata = {"input_scale": 0.5}
    np.testing.assert_array_equal(inf.predict(model, image, tile=16), explicit)
    assert np.abs(explicit - inf.predict(model, image, tile=16, scale=1)).max() > 1e-3


# --------------------------------------------------------------------------- TTA


@pytest.mark.parametrize("mirror,k", tta.TRANSFORMS["d4"])
def test_each_transform_matches_numpy_and_inverts_exactly(mirror, k):
    x = np.random.default_rng(0).random((2, 5, 7, 3)).astype(np.float32)
    y = tta.forward(tf.constant(x), mirror, k).numpy()
    expected = np.rot90(x[:, :, ::-1] if mirror else x, k, axes=(1, 2))
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(tta.inverse(tf.constant(y), mirror, k).numpy(), x)
    np.testing.assert_array_equal(tta.inverse_np(tta.forward_np(x, mirror, k), mirror, k), x)


def test_flip_set_is_the_four_flips():
    x = np.arange(12.0).reshape(1, 3, 4, 1)
    got = {tta.forward_np(x, m, k).tobytes() for m, k in tta.TRANSFORMS["flip"]}
    want = {
        np.ascontiguousarray(v).tobytes() for v in (x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1])
    }
    assert got == want
    assert len({tta.forward_np(x, m, k).tobytes() for m, k in tta.TRANSFORMS["d4"]}) == 8
    hflip = {tta.forward_np(x, m, k).tobytes() for m, k in tta.TRANSFORMS["hflip"]}
    assert hflip == {np.ascontiguousarray(v).tobytes() for v in (x, x[:, :, ::-1])}


@pytest.mark.parametrize("mode", ["hflip", "flip", "d4"])
def test_tta_on_an_equivariant_model_changes_nothing(mode):
    model = conv_model(2, seed=5, symmetric=True, mode="multiclass")
    image = rand_image(41, 58, seed=6)
    plain = inf.predict(model, image, tile=(16, 24), overlap=0.5)
    np.testing.assert_allclose(inf.predict(model, image, tile=(16, 24), tta=mode), plain, atol=1e-5)


@pytest.mark.parametrize("mode,n", [("hflip", 2), ("d4", 8)])
def test_tta_on_a_random_model_is_the_average_of_its_views(mode, n):
    model = conv_model(1, seed=7)
    image = rand_image(37, 50, seed=8)
    overlap = inf.receptive_overlap(2, 16)
    got = inf.predict(model, image, tile=(16, 24), overlap=overlap, blend="center", tta=mode)
    views = [
        tta.inverse_np(
            sigmoid(whole(model, np.ascontiguousarray(tta.forward_np(image, m, k)))), m, k
        )
        for m, k in tta.TRANSFORMS[mode]
    ]
    assert len(views) == n
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-5)
    plain = inf.predict(model, image, tile=(16, 24), overlap=overlap, blend="center")
    assert np.abs(got - plain).max() > 1e-2


def test_a_model_recording_a_tta_predicts_with_it_by_default():
    model = conv_model(1, seed=7)
    image = rand_image(37, 50, seed=8)
    # Tiles blended so that they give the whole-image logits exactly (the test above).
    kw = dict(tile=(16, 24), overlap=inf.receptive_overlap(2, 16), blend="center")
    plain = inf.predict(model, image, **kw)
    model.metadata = {"tta": "hflip"}  # as recipe=auto records it
    own = inf.predict(model, image, **kw)
    assert np.abs(own - plain).max() > 1e-2
    # The model's own views: the image and its mirror, averaged (as tta="hflip" computes).
    mirrored = sigmoid(whole(model, np.ascontiguousarray(image[:, ::-1])))[:, ::-1]
    np.testing.assert_allclose(own, (sigmoid(whole(model, image)) + mirrored) / 2, atol=1e-5)
    np.testing.assert_array_equal(inf.predict(model, image, **kw, tta="none"), plain)
    # Logits have no TTA average: None means "none" there; an explicit mode is refused.
    logits = inf.predict(model, image, **kw, output="logits")
    np.testing.assert_allclose(sigmoid(logits), plain, atol=1e-6)
    with pytest.raises(ValueError, match="logits are not defined"):
        inf.TiledPredictor(model, tile=16, tta="hflip", output="logits")
    model.metadata = {"tta": "rot45"}
    with pytest.raises(ValueError, match=r"metadata\['tta'\]='rot45'"):
        inf.TiledPredictor(model, tile=16)


# --------------------------------------------------------------------------- API behaviour


def test_streaming_masks_and_model_activation():
    model = conv_model(3, seed=2, mode="multilabel")
    model.metadata = {"mode": "multilabel", "threshold": [0.3, 0.5, 0.7]}
    image = rand_image(30, 41)
    probs = inf.predict(model, image, tile=16)
    mask = inf.TiledPredictor(model, tile=16).predict_mask(image)
    np.testing.assert_array_equal(mask, probs > np.array([0.3, 0.5, 0.7], np.float32))
    assert inf.to_mask(np.array([[0.2, 0.9, 0.6]]), "multiclass").tolist() == [1]
    assert inf.to_mask(np.array([[0.0], [1.0]]), "binary", 0.5, from_logits=True).tolist() == [0, 1]
    # A model built with activation="sigmoid" already outputs probabilities.
    unet = build_tiny("unet", num_classes=1, activation="sigmoid")
    x = rand_image(64, 64)
    np.testing.assert_allclose(inf.predict(unet, x, tile=64), whole(unet, x), atol=1e-6)


def test_one_compile_per_tile_shape_and_progress():
    model = conv_model()
    predictor = inf.TiledPredictor(model, tile=16, overlap=0.5, batch_size=3)
    calls = []
    predictor.predict(rand_image(40, 40), progress=lambda d, t: calls.append((d, t)))
    predictor.predict(rand_image(33, 70))
    assert calls[-1] == (calls[-1][1], calls[-1][1]) and len(calls) == -(-calls[-1][1] // 3)
    (fn,) = predictor._fns.values()
    assert fn.experimental_get_tracing_count() == 1
    for shape in [(9, 12), (13, 5), (20, 7)]:  # shorter than a tile: one dynamic signature
        predictor.predict(rand_image(*shape))
    assert sorted(predictor._fns, key=str) == [(16, 16), (None, None)]
    assert predictor._fns[(None, None)].experimental_get_tracing_count() == 1


def test_whole_image_mode_pads_to_the_divisor_like_the_untiled_predictor():
    """tile=None: one tile per image, edge-padded to the divisor and cropped back."""
    keras.utils.set_random_seed(1)
    model = build_tiny("unet", num_classes=2)
    image = rand_image(50, 70, seed=5)
    padded = np.pad(image, ((0, 14), (0, 26), (0, 0)), mode="edge")  # to 64 x 96
    got = inf.predict(model, image, tile=None, output="logits")
    np.testing.assert_allclose(got, whole(model, padded)[:50, :70], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tile": 24}, "multiple of the model's divisor 16"),
        ({"overlap": 1.0}, "overlap"),
        ({"blend": "cosine"}, "gaussian"),
        ({"tta": "rot"}, "d4"),
        ({"tta": "flip", "output": "logits"}, "logits are not defined"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    model = conv_model()
    model.divisor = 16
    with pytest.raises(ValueError, match=match):
        inf.TiledPredictor(model, **kwargs)


def test_channel_mismatch_is_one_clear_line():
    with pytest.raises(ValueError, match="integer images must be unsigned 8 or 16 bit"):
        inf.predict(conv_model(), np.zeros((20, 20, 3), np.uint32), tile=16)
    with pytest.raises(ValueError, match="has 2 channel"):
        inf.predict(conv_model(), np.zeros((20, 20, 2), np.float32), tile=16)
    gray = (rand_image(20, 20)[..., 0] * 255).astype(np.uint8)  # gray -> RGB as in training
    np.testing.assert_allclose(
        inf.predict(
            conv_model(),
            gray,
            tile=16,
            output="logits",
            blend="center",
            overlap=inf.receptive_overlap(2, 16),
        ),
        whole(conv_model(), np.repeat(gray[..., None], 3, -1) / np.float32(255)),
        atol=1e-5,
    )


def test_models_with_a_fixed_input_size_take_tiles_of_that_size():
    dynamic = conv_model(1, seed=4)
    image = keras.Input((16, 16, 3))
    static = keras.Model(image, dynamic.layers[2](dynamic.layers[1](image)))  # same weights
    overlap = inf.receptive_overlap(2, 16)
    x = rand_image(37, 29, seed=6)
    want = inf.predict(dynamic, x, tile=16, overlap=overlap, blend="center")
    np.testing.assert_allclose(
        inf.predict(static, x, tile=16, overlap=overlap, blend="center"), want, atol=1e-6
    )
    small = rand_image(9, 12, seed=7)  # edge-padded up to the fixed size, cropped back
    padded = np.pad(small, ((0, 7), (0, 4), (0, 0)), mode="edge")
    np.testing.assert_allclose(
        inf.predict(static, small, tile=16, output="logits"),
        whole(dynamic, padded)[:9, :12],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"exactly \(16, 16\)"):
        inf.TiledPredictor(static, tile=32)


def test_mirrored_strategy_gives_the_single_device_result(mirrored_strategy):
    with mirrored_strategy.scope():
        model = conv_model(2, seed=3, mode="multiclass")
    image = rand_image(45, 61, seed=9)
    single = inf.predict(model, image, tile=16, batch_size=3, tta="flip")
    spread = inf.predict(
        model, image, tile=16, batch_size=3, tta="flip", strategy=mirrored_strategy
    )
    np.testing.assert_allclose(spread, single, atol=1e-6)


# --------------------------------------------------------------------------- memory

_MEMORY_CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    sys.path.insert(0, {tests!r})
    import tensorflow as tf
    # One thread: the kernels' per-thread scratch (Eigen's, without oneDNN) is not the
    # predictor's, and with several threads it varied the peak by up to 25 MiB between runs.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import zoo.inference as inf
    from test_inference import conv_model

    def rss(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    n = int(sys.argv[1])
    model = conv_model()
    predictor = inf.TiledPredictor(model, tile=256, overlap=0.25, batch_size=4)
    predictor.predict(np.zeros((300, 300, 3), np.uint8))  # compile before measuring
    image = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    out = np.empty((n, n, 1), np.float32)
    out.fill(0)  # resident before measuring
    before = rss("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS
        f.write("5")
    predictor.predict(image, out=out)
    print(json.dumps({{"peak": rss("VmHWM:"), "before": before,
                       "arrays": image.nbytes + out.nbytes}}))
    """
)


def test_peak_memory_does_not_grow_with_the_image(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_MEMORY_CHILD.format(tests=str(ROOT / "tests")))
    procs = {
        n: subprocess.Popen(
            [sys.executable, str(script), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            # One malloc arena (and one thread, above): without oneDNN (CPUs without AVX-512)
            # per-thread arenas grew the peak by 31-38 MiB more at 4096^2 than at 1024^2;
            # single-threaded in one arena the growth is the row band's, 12-18 MiB.
            env={**os.environ, "MALLOC_ARENA_MAX": "1"},
        )
        for n in (1024, 4096)
    }
    res = {}
    for n, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        res[n] = json.loads(out.strip().splitlines()[-1])
    # The measure: peak RSS minus the input and output arrays.
    net = {n: r["peak"] - r["arrays"] for n, r in res.items()}
    assert net[4096] <= 1.5 * net[1024], res
    # Sharper: what predicting adds on top of the resident arrays may grow only by the row
    # band (width x at most tile + step rows x 4 B, doubled while it is extended): any
    # full-size buffer (a 48 MiB uint8 or 64 MiB float32 copy at 4096^2) breaks this.
    band = 2 * 4096 * (256 + 192) * 4
    extra = {n: r["peak"] - r["before"] for n, r in res.items()}
    assert extra[4096] <= extra[1024] + band + 16 * 2**20, res


# --------------------------------------------------------------------------- evaluation


def _counts(truth: np.ndarray, pred: np.ndarray, k: int, ignore: int | None) -> np.ndarray:
    keep = truth != ignore if ignore is not None else np.ones(truth.shape, bool)
    return np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def _dice_iou(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = np.diag(counts).astype(float)
    fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def test_full_resolution_evaluation_matches_independent_counts():
    # Binary: logit = 10 * (red - 0.5), so the prediction is red > 0.5.
    model = affine_model([[10.0], [0.0], [0.0]], [-5.0])
    rng = np.random.default_rng(0)
    pairs, truths, preds = [], [], []
    for h, w in [(37, 53), (20, 18)]:
        image = rng.random((h, w, 3), dtype=np.float32)
        truth = (rng.random((h, w)) > 0.4).astype(np.int32)
        truth[rng.random((h, w)) > 0.9] = 255
        pairs.append((image, truth))
        truths.append(truth.ravel())
        preds.append((image[..., 0] > 0.5).astype(np.int64).ravel())
    scores = inf.evaluate(model, pairs, ignore_index=255, tile=16, overlap=0.5)
    dice, iou = _dice_iou(_counts(np.concatenate(truths), np.concatenate(preds), 2, 255))
    assert scores["images"] == 2 and scores["scored_at"] == "full_resolution"
    assert scores["dice"] == pytest.approx(dice[1], abs=1e-6)
    assert scores["iou"] == pytest.approx(iou[1], abs=1e-6)

    # Multiclass: logits are the channels themselves.
    model = affine_model(np.eye(3).tolist(), [0.0, 0.0, 0.0])
    image = rng.random((29, 31, 3), dtype=np.float32)
    truth = rng.integers(0, 3, (29, 31)).astype(np.int32)
    scores = inf.evaluate(model, [(image, truth)], tile=16)
    dice, iou = _dice_iou(_counts(truth.ravel(), image.argmax(-1).ravel(), 3, None))
    assert scores["dice"] == pytest.approx(dice.mean(), abs=1e-6)
    for c in range(3):
        assert scores[f"iou_{c}"] == pytest.approx(iou[c], abs=1e-6)
    with pytest.raises(ValueError, match="mask has shape"):
        inf.evaluate(model, [(image, truth[:-1])], tile=16)

    # Multilabel: label k is on where channel k > 0.5, scored per label (never an arg-max).
    model = affine_model(np.eye(3).tolist(), [-0.5, -0.5, -0.5])
    model.metadata = {"mode": "multilabel"}
    labels = (rng.random((29, 31, 3)) > 0.5).astype(np.int32)
    scores = inf.evaluate(model, [(image, labels)], tile=16)
    per = [
        _dice_iou(_counts(labels[..., c].ravel(), (image[..., c] > 0.5).ravel(), 2, None))
        for c in range(3)
    ]
    for c in range(3):
        assert scores[f"dice_{c}"] == pytest.approx(per[c][0][1], abs=1e-6)
    assert scores["iou"] == pytest.approx(np.mean([p[1][1] for p in per]), abs=1e-6)


def test_folder_eval_pairs_read_native_size_with_the_split_and_mask_rules(tmp_path):
    from zoo.data.folder import split_pairs

    for name in ("a", "b", "c"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.full((23, 41, 3), 7, np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(
            np.where(np.arange(41) > 20, 255, 0).astype(np.uint8)[None].repeat(23, 0)
        ).save(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "images" / "d.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "d.png")
    cfg = {"name": "folder", "root": str(tmp_path), "val_ratio": 0.5, "skip_corrupt": True}
    skipped: list[str] = []
    pairs = list(inf.folder_eval_pairs(cfg, skipped=skipped))
    from zoo.data import parse_data_config

    _, val = split_pairs(parse_data_config(cfg))
    assert len(pairs) + len(skipped) == len(val) == 2
    for image, mask in pairs:
        assert image.shape == (23, 41, 3) and image.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}  # 0/255 binary masks read as 0/1


# --------------------------------------------------------------------------- large-image IO


def test_read_tiff_memory_mapped_compressed_and_planar(tmp_path):
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "zip.tif", rgb, photometric="rgb", compression="zlib", tile=(16, 16)
    )
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    for name in ("plain", "zip", "planar"):
        arr = lio.read_image(tmp_path / f"{name}.tif")
        assert isinstance(arr, np.memmap), name
        np.testing.assert_array_equal(arr, rgb)
    gray16 = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray16)
    np.testing.assert_array_equal(lio.read_image(tmp_path / "g.tif"), gray16)


def test_read_pillow_formats_limits_and_errors(tmp_path):
    from zoo.data.io import UnreadableFileError

    limit = Image.MAX_IMAGE_PIXELS
    rgb = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(lio.read_image(tmp_path / "a.png"), rgb)
    g16 = np.arange(600, dtype=np.uint16).reshape(30, 20) * 100
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(lio.read_image(tmp_path / "g16.png"), g16)
    with pytest.raises(ValueError, match=r"a\.png.*max_pixels=500"):
        lio.read_image(tmp_path / "a.png", max_pixels=500)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UnreadableFileError, match="bad.png"):
        lio.read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        lio.read_image(tmp_path / "nope.tif")
    assert Image.MAX_IMAGE_PIXELS == limit  # raised for the call only


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "I;16"])
def test_png_strip_writer_round_trips(tmp_path, mode):
    rng = np.random.default_rng(2)
    shape = (37, 29, 3) if mode == "RGB" else (37, 29)
    high = 65536 if mode == "I;16" else (5 if mode == "P" else 256)
    data = rng.integers(0, high, shape).astype(np.uint16 if mode == "I;16" else np.uint8)
    palette = rng.integers(0, 256, (5, 3)).astype(np.uint8) if mode == "P" else None
    path = tmp_path / "out.png"
    with wr.PngStripWriter(path, 37, 29, mode=mode, palette=palette) as png:
        for a, b in [(0, 1), (1, 17), (17, 37)]:
            png.write(data[a:b])
    with Image.open(path) as img:
        assert img.mode == ("I;16" if mode == "I;16" else mode)
        np.testing.assert_array_equal(np.asarray(img), data)
        if mode == "P":
            np.testing.assert_array_equal(
                np.asarray(img.getpalette()[:15], np.uint8).reshape(5, 3), palette
            )


def test_failed_writes_leave_the_old_file(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), wr.PngStripWriter(path, 10, 10) as png:
        png.write(np.zeros((4, 10), np.uint8))
        raise RuntimeError("prediction failed")
    with pytest.raises(ValueError, match="4 of 10 rows"), wr.PngStripWriter(path, 10, 10) as png:
        png.write(np.zeros((4, 10), np.uint8))
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_tiff_outputs_stream_tiles_and_memory_maps(tmp_path):
    import tifffile

    model = conv_model(2, mode="multiclass")
    image = rand_image(70, 45)
    predictor = inf.TiledPredictor(model, tile=32, overlap=0.25)
    probs = predictor.predict(image)
    masks = ((row, inf.to_mask(rows, "multiclass")) for row, rows in predictor.strips(image))
    wr.write_tiff_tiles(tmp_path / "m.tif", masks, (70, 45), np.uint8, tile=(32, 16))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.pages[0].is_tiled
        np.testing.assert_array_equal(tif.asarray(), probs.argmax(-1))
    with wr.tiff_memmap(tmp_path / "p.tif", (70, 45, 2)) as out:
        predictor.predict(image, out=out)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), probs)
