"""Loss specs and the composition wrapper `losses.attach`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import WeightedBCE

VALID = "dice, focal, jaccard, lovasz, mcc, tversky, wbce, wce"


def tiny_model(channels=1, size=16, name="tiny", l2=None):
    image = keras.Input((size, size, 3), name="image")
    reg = keras.regularizers.L2(l2) if l2 else None
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer=reg)(image)
    logits = keras.layers.Conv2D(channels, 1, name="logits")(x)
    return keras.Model(image, logits, name=name)


def batch(n=4, size=16, channels=1, mode="binary", seed=0, ignore=None):
    rng = np.random.default_rng(seed)
    image = rng.random((n, size, size, 3)).astype(np.float32)
    if mode == "multiclass":
        mask = rng.integers(0, channels, (n, size, size, 1))
    else:
        mask = rng.random((n, size, size, 1 if mode == "binary" else channels)) > 0.5
    mask = mask.astype(np.int32)
    if ignore is not None:
        mask[:, : size // 4] = ignore
    weight = rng.uniform(0.1, 3.0, (n, size, size, 1)).astype(np.float32)
    return {"image": image, "mask": mask, "weight": weight}


def np_bce(mask, logits, weight):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    loss = -(mask * np.log(p) + (1 - mask) * np.log(1 - p))
    return (weight * loss).sum() / weight.sum()


def np_dice(mask, logits, weight, smooth=1.0):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    tp = (weight * p * mask).sum()
    return 1 - (2 * tp + smooth) / ((weight * p).sum() + (weight * mask).sum() + smooth + 1e-7)


# --------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("wbce+dice", [(1.0, "wbce"), (1.0, "dice")]),
        ("dice+wbce", [(1.0, "dice"), (1.0, "wbce")]),
        ("0.5*wbce+dice", [(0.5, "wbce"), (1.0, "dice")]),
        ("wbce + 2*dice", [(1.0, "wbce"), (2.0, "dice")]),
        (" 1e-1 * focal ", [(0.1, "focal")]),
        (["wbce", "dice"], [(1.0, "wbce"), (1.0, "dice")]),
        (("wbce", "0.25*jaccard"), [(1.0, "wbce"), (0.25, "jaccard")]),
        ([(0.5, "wbce"), "dice"], [(0.5, "wbce"), (1.0, "dice")]),
        ([(2, "0.5*dice")], [(1.0, "dice")]),
        ("dice+dice", [(2.0, "dice")]),
        ("dice+0.5*wbce+dice", [(2.0, "dice"), (0.5, "wbce")]),
    ],
)
def test_parse_spec_forms(spec, expected):
    assert losses.parse_spec(spec) == expected


def test_parse_spec_accepts_hydra_listconfig_and_layers():
    omegaconf = pytest.importorskip("omegaconf")
    assert losses.parse_spec(omegaconf.OmegaConf.create(["wbce", "dice"])) == [
        (1.0, "wbce"),
        (1.0, "dice"),
    ]
    layers = [WeightedBCE(), losses.get("dice", name="dice_fg")]
    assert losses.parse_spec(layers) == [(1.0, "wbce"), (1.0, "dice_fg")]
    assert losses.parse_spec([(0.5, layers[0])]) == [(0.5, "wbce")]


@pytest.mark.parametrize(
    "spec,reason",
    [
        ("wbce+dise", "unknown term 'dise'"),
        ("WBCE", "unknown term 'WBCE'"),
        ("-1*wbce", "must be a finite number > 0"),
        ("0*wbce", "must be a finite number > 0"),
        ("nan*dice", "must be a finite number > 0"),
        ("inf*dice", "must be a finite number > 0"),
        ("abc*dice", "weight 'abc' is not a number"),
        ("wbce+", "empty term"),
        ("wbce++dice", "empty term"),
        ("", "empty term"),
        ("2*wbce*3", "not of the form"),
        ("wbce dice", "not of the form"),
        ("dice*0.5", "weight 'dice' is not a number"),
        ([], "non-empty list"),
        (None, "expected a string"),
        (3, "expected a string"),
        ([("wbce",)], "not a term name"),
        ([(0.5, 3)], "not a term name"),
        ([(-0.5, "wbce")], "must be a finite number > 0"),
        ([WeightedBCE(), WeightedBCE()], "two terms are named 'wbce'"),
    ],
)
def test_parse_spec_errors(spec, reason):
    with pytest.raises(ValueError) as info:
        losses.parse_spec(spec)
    message = str(info.value)
    assert reason in message
    assert f"Invalid loss spec {spec!r}" in message
    assert VALID in message
    assert "\n" not in message


# --------------------------------------------------------------------------- attach


def test_attach_sum_rule_term_values_and_weight_sharing():
    model = tiny_model()
    train = losses.attach(model, "0.5*wbce + 2*dice")
    assert sorted(train.input.keys()) == ["image", "mask", "weight"]
    train.compile(optimizer=keras.optimizers.SGD(0.5))
    data = batch()
    got = train.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    logits = model.predict(data["image"], verbose=0)
    mask, weight = data["mask"], data["weight"]
    # Logged terms are already multiplied by their spec weight and add up to `loss`.
    assert got["wbce_loss"] == pytest.approx(0.5 * np_bce(mask, logits, weight), rel=1e-5)
    assert got["dice_loss"] == pytest.approx(2 * np_dice(mask, logits, weight), rel=1e-5)
    assert got["loss"] == pytest.approx(got["wbce_loss"] + got["dice_loss"], rel=1e-6)
    # Shared weights: the training model holds the very same variables.
    assert {id(v) for v in model.weights} <= {id(v) for v in train.weights}
    history = train.fit(
        tf.data.Dataset.from_tensor_slices(data).batch(2), epochs=3, verbose=0
    ).history
    for i in range(3):
        total = history["wbce_loss"][i] + history["dice_loss"][i]
        assert history["loss"][i] == pytest.approx(total, rel=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    assert not np.allclose(model.predict(data["image"], verbose=0), logits)


def test_attach_regularization_is_outside_the_terms():
    model = tiny_model(l2=0.1)
    train = losses.attach(model, "wbce")
    train.compile(optimizer="sgd")
    got = train.evaluate(batch(), batch_size=4, return_dict=True, verbose=0)
    kernel = model.layers[1].kernel.numpy()
    assert got["loss"] - got["wbce_loss"] == pytest.approx(0.1 * (kernel**2).sum(), rel=1e-4)


def test_attach_modes_options_and_ignore():
    model = tiny_model(channels=3)
    train = losses.attach(
        model, "wce+dice", ignore_index=255, wce={"class_weights": [1.0, 2.0, 0.5]}
    )
    wce_layer = train.get_layer("loss_terms").terms[0]
    assert wce_layer.mode == "multiclass" and wce_layer.ignore_index == 255
    assert wce_layer.options["class_weights"] == [1.0, 2.0, 0.5]
    train.compile(optimizer="sgd")
    data = batch(channels=3, mode="multiclass", ignore=255)
    first = train.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    expected = losses.functional.wce(
        data["mask"],
        model.predict(data["image"], verbose=0),
        data["weight"],
        ignore_index=255,
        class_weights=[1.0, 2.0, 0.5],
    )
    assert first["wce_loss"] == pytest.approx(float(expected), rel=1e-5)
    ml = losses.attach(tiny_model(channels=3), "wbce+jaccard", mode="multilabel")
    assert tuple(ml.input["mask"].shape) == (None, 16, 16, 3)
    assert np.isfinite(first["loss"])
    no_weight = losses.attach(tiny_model(), "dice", weight=False)
    assert sorted(no_weight.input.keys()) == ["image", "mask"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"spec": "wbce", "mode": "binary", "channels": 3}, "'binary' needs 1 output channel"),
        ({"spec": "wbce", "mode": "multiclass", "channels": 3}, "wbce"),
        ({"spec": "wbce", "dice": {"smooth": 0.0}}, "not a named term of the spec"),
        ({"spec": "dice", "dice": 0.5}, "must be a dict"),
        ({"spec": "dice", "dice": {"smoth": 0.5}}, "Unknown option"),
        ({"spec": "dice", "mode": "sparse"}, "mode"),
    ],
)
def test_attach_errors(kwargs, match):
    channels = kwargs.pop("channels", 1)
    spec = kwargs.pop("spec")
    with pytest.raises(ValueError, match=match):
        losses.attach(tiny_model(channels=channels), spec, **kwargs)


def test_attach_rejects_models_without_pixel_logits():
    inp = keras.Input((8,))
    with pytest.raises(ValueError, match="per-pixel logits"):
        losses.attach(keras.Model(inp, keras.layers.Dense(1)(inp)), "wbce")


def test_seed_style_model_by_hand():
    image = keras.Input((16, 16, 3), name="image")
    label = keras.Input((16, 16, 1), dtype="int32", name="label")
    weight = keras.Input((16, 16, 1), name="weight")
    logits = keras.layers.Conv2D(1, 3, padding="same")(image)
    loss = WeightedBCE()([label, weight, logits])
    model = keras.Model([image, label, weight], [logits, loss])
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    data = batch()
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": data["image"], "label": data["mask"], "weight": data["weight"]}
    ).batch(4)
    history = model.fit(ds, epochs=3, verbose=0).history
    assert history["loss"] == pytest.approx(history["wbce_loss"], rel=1e-6)
    assert history["loss"][-1] < history["loss"][0]


def test_save_and_load_without_custom_objects(tmp_path):
    model = tiny_model()
    train = losses.attach(model, "0.5*wbce+tversky", tversky={"alpha": 0.3, "beta": 0.7})
    train.compile(optimizer="adam")
    data = batch()
    before = train.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    train.save(tmp_path / "train.keras")
    model.save(tmp_path / "model.keras")
    train2 = keras.saving.load_model(tmp_path / "train.keras", safe_mode=True)
    model2 = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    after = train2.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    for key in ("loss", "wbce_loss", "tversky_loss"):
        assert after[key] == pytest.approx(before[key], rel=1e-6)
    np.testing.assert_allclose(
        model2.predict(data["image"], verbose=0), model.predict(data["image"], verbose=0), 1e-6
    )
    assert train2.get_layer("loss_terms").terms[1].options["alpha"] == 0.3


# --------------------------------------------------------------------------- mask value checks


@pytest.mark.parametrize("jit_compile", [False, True])
def test_attach_refuses_0_255_masks_with_one_line_and_learns_nothing(jit_compile):
    """0/255 binary masks without ignore_index gave WBCE -23.8 and a negative Dice."""
    model = tiny_model()
    train = losses.attach(model, "wbce+dice")
    train.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    data = batch()
    data["mask"] = data["mask"] * 255
    before = [w.copy() for w in model.get_weights()]
    message = (
        r"^Invalid mask value 255 for losses 'wbce', 'dice' \(binary mode\): expected values in "
        r"\[0, 1\]\. To fix: pass ignore_index=255 .*Received: mask values in \[0, 255\]$"
    )
    for run in (
        lambda: train.fit(data, batch_size=4, epochs=1, verbose=0),
        lambda: train.evaluate(data, batch_size=4, verbose=0),
        lambda: train.train_on_batch(data),
    ):
        with pytest.raises(ValueError, match=message):
            run()
    # The refused batches contributed nothing: plain SGD left every weight as it was.
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    # Fixed data trains afterwards: nothing stale is left in the check.
    data["mask"] = data["mask"] // 255
    got = train.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    logits = model.predict(data["image"], verbose=0)
    assert got["wbce_loss"] == pytest.approx(np_bce(data["mask"], logits, data["weight"]), 1e-5)


def test_attach_refuses_a_bad_batch_late_in_an_epoch_and_multiclass_ids():
    train = losses.attach(tiny_model(channels=3), "wce+dice", ignore_index=255)
    train.compile(optimizer="sgd")
    data = batch(n=6, channels=3, mode="multiclass", ignore=255)
    data["mask"][5, 3, 3] = 3  # one pixel of the last batch: class 3 of 3 channels
    with pytest.raises(ValueError, match=r"value 3 .*class ids 0\.\.2 .*or ignore_index=255"):
        train.fit(data, batch_size=2, epochs=1, verbose=0, shuffle=False)


# --------------------------------------------------------------------------- distribution


def test_mirrored_strategy_matches_single_device(mirrored_strategy):
    strategy = mirrored_strategy
    spec = "0.5*wbce+dice+0.5*jaccard"
    options = {"dice": {"reduction": "image"}}
    data = batch(ignore=255, seed=1)
    # Uneven ignored areas and weights per replica: per-replica means would differ.
    data["mask"][:2, :, :12] = 255
    keras.utils.set_random_seed(1)
    single = tiny_model()
    with strategy.scope():
        mirrored = tiny_model()
        mirrored.set_weights(single.get_weights())
        train_m = losses.attach(mirrored, spec, ignore_index=255, **options)
        train_m.compile(optimizer=keras.optimizers.SGD(0.5))
    train_s = losses.attach(single, spec, ignore_index=255, **options)
    train_s.compile(optimizer=keras.optimizers.SGD(0.5))
    got_s = train_s.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    got_m = train_m.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    for key in got_s:
        assert got_m[key] == pytest.approx(got_s[key], rel=1e-5), key
    ds = tf.data.Dataset.from_tensor_slices(data).batch(4)
    hist_s = train_s.fit(ds, epochs=3, verbose=0).history
    hist_m = train_m.fit(ds, epochs=3, verbose=0).history
    np.testing.assert_allclose(hist_m["loss"], hist_s["loss"], rtol=1e-4)
    for a, b in zip(mirrored.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mirrored_strategy_refuses_bad_masks_on_any_replica(mirrored_strategy):
    with mirrored_strategy.scope():
        train = losses.attach(tiny_model(), "wbce+dice", ignore_index=7)
        train.compile(optimizer="sgd")
    data = batch()
    data["mask"][3] *= 255  # the second replica's half of the batch only
    with pytest.raises(ValueError, match=r"value 255 .*or ignore_index=7\. .*\[0, 255\]$"):
        train.evaluate(data, batch_size=4, verbose=0)
    data["mask"][3] //= 255
    assert np.isfinite(train.evaluate(data, batch_size=4, verbose=0)[0])


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_mirrored_strategy_every_term_with_an_image_left_out(mirrored_strategy, mode):
    """Every term over the global batch when replica 0 holds an image with no pixel that
    counts: equal to one device, and Dice per image equal to NumPy over the other images."""
    channels = 1 if mode == "binary" else 3
    if mode == "binary":
        spec = "wbce+focal+dice+jaccard+tversky+mcc+lovasz"
        options = {
            "dice": {"reduction": "image", "smooth": 0.0},
            "tversky": {"alpha": 0.3},
            "lovasz": {"reduction": "image"},  # exact over replicas ("batch" is their mean)
        }
    else:
        spec = "wce+focal+dice+jaccard+mcc+lovasz"
        options = {
            "wce": {"class_weights": [0.5, 1.0, 2.0]},
            "dice": {"reduction": "image"},
            "lovasz": {"reduction": "image"},
        }
    data = batch(channels=channels, mode=mode, ignore=255, seed=6)
    data["mask"][1] = 255  # all of image 1 ignored (on replica 0)
    single = tiny_model(channels)
    with mirrored_strategy.scope():
        mirrored = tiny_model(channels)
        mirrored.set_weights(single.get_weights())
        train_m = losses.attach(mirrored, spec, ignore_index=255, **options)
        train_m.compile(optimizer="sgd")
    train_s = losses.attach(single, spec, ignore_index=255, **options)
    train_s.compile(optimizer="sgd")
    got_s = train_s.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    got_m = train_m.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    for key in got_s:
        assert got_m[key] == pytest.approx(got_s[key], rel=1e-5), key
    if mode == "binary":
        logits = single.predict(data["image"], verbose=0)
        valid = data["mask"] != 255
        mask, weight = np.where(valid, data["mask"], 0), data["weight"] * valid
        want = np.mean([np_dice(mask[i], logits[i], weight[i], smooth=0.0) for i in (0, 2, 3)])
        assert got_s["dice_loss"] == pytest.approx(want, rel=1e-4)


def test_mirrored_strategy_keras_loss_path(mirrored_strategy):
    strategy = mirrored_strategy
    data = batch(ignore=255, seed=2)
    data["mask"][:2, :, :12] = 255
    single = tiny_model()
    with strategy.scope():
        mirrored = tiny_model()
        mirrored.set_weights(single.get_weights())
        mirrored.compile(optimizer="sgd", loss=losses.WeightedBCELoss(ignore_index=255))
    single.compile(optimizer="sgd", loss=losses.WeightedBCELoss(ignore_index=255))
    args = (data["image"], data["mask"])
    kw = {"sample_weight": data["weight"], "batch_size": 4, "verbose": 0}
    assert mirrored.evaluate(*args, **kw) == pytest.approx(single.evaluate(*args, **kw), rel=1e-5)


def test_mirrored_strategy_standalone_layer_is_replica_local_and_not_duplicated(mirrored_strategy):
    strategy = mirrored_strategy
    data = batch(seed=3)
    single = tiny_model()

    def seed_model(base):
        label = keras.Input((16, 16, 1), dtype="int32", name="mask")
        weight = keras.Input((16, 16, 1), name="weight")
        logits = base.output
        loss = WeightedBCE(normalization="mean")([label, weight, logits])
        return keras.Model({"image": base.input, "mask": label, "weight": weight}, [logits, loss])

    with strategy.scope():
        mirrored = tiny_model()
        mirrored.set_weights(single.get_weights())
        model_m = seed_model(mirrored)
        model_m.compile(optimizer="sgd")
    model_s = seed_model(single)
    model_s.compile(optimizer="sgd")
    # "mean" over equal per-replica pixel counts: the mean of replica means is the global mean.
    got_m = model_m.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    got_s = model_s.evaluate(data, batch_size=4, return_dict=True, verbose=0)
    assert got_m["loss"] == pytest.approx(got_s["loss"], rel=1e-5)
    assert got_m["wbce_loss"] == pytest.approx(got_s["wbce_loss"], rel=1e-5)
