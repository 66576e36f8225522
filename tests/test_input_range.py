"""Encoders' `input_range` and the recipe's plan of it for data using a small part of [0, 1]."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import zoo
from zoo.recipe import fingerprint_arrays, plan_recipe
from zoo.recipe.intensity import INPUT_RANGE_BELOW, input_span

# (encoder, decoder_channels): the recipe's CPU encoder and its accelerator one's family.
ENCODERS = [("vgg13_bn", [16, 8, 8, 8]), ("resnet18", [16, 8, 8, 8, 8])]
ENCODERS += [("se_resnext50_32x4d", [16, 8, 8, 8, 8]), ("efficientnet-b0", [16, 8, 8, 8, 8])]


def _unet(encoder, decoder, **encoder_kwargs):
    return zoo.create_model(
        "unet",
        num_classes=1,
        input_shape=(32, 32, 1),
        encoder=encoder,
        encoder_kwargs={**zoo.encoder_info(encoder).tiny_config, **encoder_kwargs},
        decoder_channels=decoder,
    )


@pytest.mark.parametrize("encoder, decoder", ENCODERS)
def test_input_range_is_the_same_model_on_rescaled_input(encoder, decoder, tmp_path):
    # 12-bit-like counts in a 16-bit file: 100 + 0..400 counts / 65535.
    rng = np.random.default_rng(0)
    x = ((100 + rng.integers(0, 401, (2, 32, 32, 1))) / 65535).astype("float32")
    low, high = 100 / 65535, 500 / 65535
    ranged = _unet(encoder, decoder, input_range=[low, high])
    plain = _unet(encoder, decoder)
    assert ranged.count_params() == plain.count_params()  # preprocessing, no weights
    plain.set_weights(ranged.get_weights())
    layer = ranged.get_layer("encoder_input_range")
    assert layer.scale == pytest.approx(1 / (high - low)) and layer.compute_dtype == "float32"
    assert layer.offset == pytest.approx(-low / (high - low))
    expected = plain.predict((x - low) / (high - low), verbose=0)  # counts 100 -> 0, 500 -> 1
    np.testing.assert_allclose(ranged.predict(x, verbose=0), expected, atol=1e-5)
    # Saved with the model (no custom_objects): prediction applies it without being told.
    ranged.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def test_input_range_spreads_counts_in_float32_under_mixed_bfloat16():
    # bfloat16 holds 8 significant bits: 0.0050 and 0.00502 are one value. The range layer
    # computes in float32, so neighbouring counts stay apart after it.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        features = zoo.create_encoder("vgg13_bn", input_shape=(32, 32, 1), base_width=8,
                                      input_range=[0.0, 0.01])  # fmt: skip
        layer = features.get_layer("encoder_input_range")
        probe = keras.Model(features.input, layer.output)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    counts = np.arange(328, 328 + 32 * 32, dtype=np.float64).reshape(1, 32, 32, 1) / 65535
    out = np.asarray(probe.predict(counts.astype("float32"), verbose=0), np.float64)
    np.testing.assert_allclose(out, counts / 0.01, rtol=1e-6)
    assert len(np.unique(out)) == 32 * 32


@pytest.mark.parametrize(
    "bad", [[0.3, 0.1], [0.2, 0.2], [0.1], [0.0, 0.5, 1.0], [0.0, math.inf], [math.nan, 1.0], "ab"]
)
def test_bad_input_range_is_one_line_naming_it(bad):
    with pytest.raises(ValueError, match=r"input_range=.*") as info:
        _unet("vgg13_bn", [16, 8, 8, 8], input_range=bad)
    assert "\n" not in str(info.value) and "low < high" in str(info.value)


def _squares(n=8, size=64, seed=0):
    """Gray images: a background near 10 and two 12x12 squares at 200 (8-bit levels)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.int32)
        for y, x in rng.integers(2, size - 14, (2, 2)):
            mask[y : y + 12, x : x + 12] = 1
        images.append(np.clip(10 + 190 * mask + rng.normal(0, 3, mask.shape), 0, 255))
        masks.append(mask)
    return images, masks


def test_recipe_spreads_16_bit_counts_and_leaves_8_bit_data_alone():
    images, masks = _squares()
    eight = [im.astype(np.uint8) for im in images]
    # The same scenes as a camera's counts: an offset of 100 and 2 counts per 8-bit level,
    # so the data span (100 + 2 * 255) / 65535 < 1% of the 16-bit range.
    sixteen = [(100 + 2 * im).astype(np.uint16) for im in eight]
    fp16 = fingerprint_arrays(sixteen, masks)
    pixels = np.concatenate([im.ravel() for im in sixteen]) / 65535
    want = [float(np.percentile(pixels, q)) for q in (0.5, 99.5)]
    # The fingerprint keeps its percentiles to 5 decimals.
    assert input_span(fp16) == pytest.approx(tuple(want), abs=1e-5)
    assert want[1] - want[0] < 0.01 < INPUT_RANGE_BELOW
    plan = plan_recipe(fp16, budget_s=60, cores=2)
    kwargs = plan.get("model.encoder_kwargs")
    assert kwargs["input_range"] == pytest.approx(want, abs=1e-5)
    assert "input_range" in plan.table() and "spread to 0..1 inside the model" in plan.table()
    # The 8-bit files span ~0.75 of [0, 1]: the plain input, as the quality table measured.
    plan8 = plan_recipe(fingerprint_arrays(eight, masks), budget_s=60, cores=2)
    assert "input_range" not in plan8.get("model.encoder_kwargs")
    # The planned kwargs build the model the app builds.
    model = zoo.create_model("unet", num_classes=1, input_shape=(64, 64, 1), encoder="vgg13_bn",
                             encoder_kwargs=kwargs, decoder_channels=[16, 8, 8, 8])  # fmt: skip
    assert model.get_layer("encoder_input_range").offset == pytest.approx(
        -kwargs["input_range"][0] / (kwargs["input_range"][1] - kwargs["input_range"][0])
    )


def _sixteen_bit_folder(root):
    from PIL import Image

    images, masks = _squares(n=8)
    for i, (im, mask) in enumerate(zip(images, masks)):
        split = "train" if i < 6 else "val"
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray((100 + 2 * im).astype(np.uint16)).save(root / split / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / "masks" / f"{i}.png")
    return root


def test_recipe_auto_composes_the_planned_input_range(tmp_path, monkeypatch):
    # The override goes through Hydra and the config schema like every planned key.
    from tests.test_recipe import compose
    from zoo.config import validate
    from zoo.recipe.apply import apply_recipe

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    root = _sixteen_bit_folder(tmp_path / "data")
    cfg = compose(["recipe=auto", "data=folder", f"data.root={root}"])
    planned, outcome = apply_recipe(cfg, explicit=set(), run_dir=tmp_path / "run")
    run = validate(planned, set())
    low, high = run.model.kwargs["encoder_kwargs"]["input_range"]
    assert 100 / 65535 <= low < high <= 610 / 65535
    assert "model.encoder_kwargs" in outcome.applied


@pytest.mark.parametrize(
    "encoder, kept",
    [("resnet18", {"base_width", "input_range"}), ("mit_b0", None), ("keras_mobilenetv2", None)],
)
def test_planned_encoder_kwargs_fit_an_encoder_set_on_the_command_line(
    tmp_path, monkeypatch, encoder, kept
):
    # The plan's width and input_range are VGG/ResNet arguments: an encoder typed on the
    # command line gets those it takes, and builds (a Mix Transformer has no base_width).
    from tests.test_recipe import compose
    from zoo.config import validate
    from zoo.recipe import user_keys_from_overrides
    from zoo.recipe.apply import apply_recipe

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    root = _sixteen_bit_folder(tmp_path / "data")
    user = [f"model.encoder={encoder}"]
    cfg = compose(["recipe=auto", "data=folder", f"data.root={root}", *user])
    planned, outcome = apply_recipe(cfg, explicit=user_keys_from_overrides(user))
    kwargs = planned.model.encoder_kwargs
    if kept is None:
        assert kwargs is None and "model.encoder_kwargs" not in outcome.applied
        assert any(f"model.encoder={encoder}" in n for n in outcome.recipe.notes)
    else:
        assert set(kwargs) == kept
    run = validate(planned, set(user))
    model = zoo.create_model("unet", **{**run.model.kwargs, "input_shape": (64, 64, 3)})
    assert model.count_params() > 0
