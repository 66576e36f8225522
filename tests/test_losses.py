"""Loss terms: hand-worked values, an independent NumPy reference, Keras agreement, invariants."""

import ast
import importlib
import inspect
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import functional as F

RNG = np.random.default_rng(0)
TERMS = ["wbce", "wce", "focal", "dice", "jaccard", "tversky", "lovasz", "mcc"]
MODES_OF = {
    "wbce": ["binary", "multilabel"],
    "wce": ["multiclass"],
    "focal": ["binary", "multiclass", "multilabel"],
    "dice": ["binary", "multiclass", "multilabel"],
    "jaccard": ["binary", "multiclass", "multilabel"],
    "tversky": ["binary", "multiclass", "multilabel"],
    "lovasz": ["binary", "multiclass", "multilabel"],
    "mcc": ["binary", "multiclass", "multilabel"],
}
CASES = [(t, m) for t in TERMS for m in MODES_OF[t]]


# --------------------------------------------------------------------------- NumPy reference


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_prepare(y, x, w, mode, ignore):
    """Independent re-derivation: targets shaped like x, weight per element of x."""
    x = x.astype(np.float64)
    y = y.astype(np.int64)
    valid = np.ones(y.shape, bool) if ignore is None else (y != ignore)
    y = np.where(valid, y, 0)
    if mode == "multiclass":
        t = np.eye(x.shape[-1])[y[..., 0]]
    else:
        t = y.astype(np.float64)
    ww = valid.astype(np.float64) * (1.0 if w is None else w.astype(np.float64))
    return t, x, np.broadcast_to(ww, x.shape if mode == "multilabel" else ww.shape)


def np_reduce(loss, w, normalization):
    w = np.broadcast_to(w, loss.shape)
    den = w.sum() if normalization == "weighted" else (w > 0).sum()
    return (w * loss).sum() / den


def np_loss(term, y, x, w=None, mode="binary", ignore=None, **o):
    t, x, ww = np_prepare(y, x, w, mode, ignore)
    norm = o.get("normalization", "weighted")
    if term == "wbce":
        pw, ls = o.get("pos_weight", 1.0), o.get("label_smoothing", 0.0)
        t = t * (1 - ls) + 0.5 * ls
        p = np_sigmoid(x)
        return np_reduce(-(pw * t * np.log(p) + (1 - t) * np.log(1 - p)), ww, norm)
    if term == "wce":
        p = np_softmax(x)
        loss = -np.log((p * t).sum(-1, keepdims=True))
        cw = o.get("class_weights")
        if cw is not None:
            ww = ww * (t * np.asarray(cw)).sum(-1, keepdims=True)
        return np_reduce(loss, ww, norm)
    if term == "focal":
        a, g = o.get("alpha", 0.25), o.get("gamma", 2.0)
        if mode == "multiclass":
            pt = (np_softmax(x) * t).sum(-1, keepdims=True)
            loss = -((1 - pt) ** g) * np.log(pt) * (1.0 if a is None else a)
        else:
            p = np_sigmoid(x)
            pt = np.where(t == 1, p, 1 - p)
            at = 1.0 if a is None else np.where(t == 1, a, 1 - a)
            loss = -at * (1 - pt) ** g * np.log(pt)
        return np_reduce(loss, ww, norm)
    # Region terms: explicit per-class (and per-image) loops.
    p = np_softmax(x) if mode == "multiclass" else np_sigmoid(x)
    ww = np.broadcast_to(ww, p.shape)
    if term == "lovasz":
        return np_lovasz(t, x, p, ww, mode, o.get("classes"), o.get("reduction", "batch"))
    smooth, eps = o.get("smooth", 1.0), o.get("eps", 1e-7)

    def overlap(num, den):  # 1 - score, or -log(score) (smp's log_loss, floored at eps)
        return -np.log(max(num / den, eps)) if o.get("log_loss") else 1 - num / den

    classes = o.get("classes") or range(x.shape[-1])
    groups = [slice(None)] if o.get("reduction", "batch") == "batch" else range(x.shape[0])
    class_weights = o.get("class_weights") or [1.0] * x.shape[-1]
    per_group = []
    for g in groups:
        vals, cws = [], []
        for c in classes:
            pc, tc, wc = p[g, ..., c], t[g, ..., c], ww[g, ..., c]
            if wc.sum() == 0:  # no pixel of this class (image) counts: an empty set, left out
                continue
            cws.append(class_weights[c])
            tp, fp, fn = (
                (wc * pc * tc).sum(),
                (wc * pc * (1 - tc)).sum(),
                (wc * (1 - pc) * tc).sum(),
            )
            if term == "mcc":
                e = o.get("eps", 1e-5)
                tn = (wc * (1 - pc) * (1 - tc)).sum()
                tp, fp, fn, tn = tp + e, fp + e, fn + e, tn + e
                num = tp * tn - fp * fn
                vals.append(1 - num / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
            elif term == "dice":
                vals.append(overlap(2 * tp + smooth, 2 * tp + fp + fn + smooth + eps))
            elif term == "jaccard":
                vals.append(overlap(tp + smooth, tp + fp + fn + smooth + eps))
            else:
                a, b, gm = o.get("alpha", 0.5), o.get("beta", 0.5), o.get("gamma", 1.0)
                vals.append(overlap(tp + smooth, tp + a * fp + b * fn + smooth + eps) ** gm)
        if sum(cws) > 0:  # a weighted class mean; classes of weight 0 do not count
            per_group.append(np.dot(vals, cws) / sum(cws))
    return float(np.mean(per_group)) if per_group else 0.0


def np_lovasz_extension(errors, t, w):
    """The Lovasz extension of the weighted Jaccard loss as a sum over level sets.

    For errors m >= 0, f(m) = sum_k (m_(k) - m_(k+1)) D(S_k): S_k the k largest errors,
    D(S) = w(S) / (w(gt) + w(S minus gt)) the set's Jaccard loss (0 / 0 = 0), m_(n+1) = 0.
    """
    order = np.argsort(-errors, kind="stable")
    m = np.append(errors[order], 0.0)
    total = 0.0
    for k in range(1, len(order) + 1):
        s = np.zeros(len(errors), bool)
        s[order[:k]] = True
        den = (w * t).sum() + (w * (1 - t) * s).sum()
        total += (m[k - 1] - m[k]) * ((w * s).sum() / den if den > 0 else 0.0)
    return total


def np_lovasz(t, x, p, ww, mode, classes, reduction):
    """Lovasz hinge (sigmoid modes) / Lovasz-softmax (multiclass), rows by image or batch."""
    if mode == "multiclass":
        err = np.abs(t - p)
    else:
        err = np.maximum(1.0 - x * (2 * t - 1), 0.0)
    groups = [slice(None)] if reduction == "batch" else range(x.shape[0])
    chans = classes if classes is not None else range(x.shape[-1])
    per_group = []
    for g in groups:
        vals = []
        for c in chans:
            e, tc, wc = (a[g, ..., c].ravel() for a in (err, t, ww))
            if wc.sum() == 0 or (mode == "multiclass" and classes is None and (wc * tc).sum() == 0):
                continue  # no pixel counts, or (multiclass) the class is absent
            vals.append(np_lovasz_extension(e, tc, wc))
        if vals:
            per_group.append(np.mean(vals))
    return float(np.mean(per_group)) if per_group else 0.0


def make_batch(mode, b=2, h=6, w=5, c=3, ignore=None, seed=0):
    rng = np.random.default_rng(seed)
    ch = 1 if mode == "binary" else c
    x = rng.normal(0, 2, (b, h, w, ch)).astype(np.float32)
    if mode == "multiclass":
        y = rng.integers(0, c, (b, h, w, 1)).astype(np.int32)
    else:
        y = (rng.random((b, h, w, ch)) > 0.6).astype(np.int32)
    if ignore is not None:
        y = np.where(rng.random(y.shape) < 0.2, ignore, y).astype(np.int32)
    weight = rng.uniform(0.2, 3.0, (b, h, w, 1)).astype(np.float32)
    return y, x, weight


def value(term, y, x, w=None, **kw):
    return float(getattr(F, term)(y, x, w, **kw))


# --------------------------------------------------------------------------- hand-worked values


def test_wbce_hand_worked():
    # Logits 0 -> p = 0.5, BCE = ln 2 everywhere; logit ln 3 -> p = 0.75 -> -ln 0.75 for t = 1.
    y = np.array([[[[1], [0]]]], np.int32)
    x = np.array([[[[math.log(3.0)], [0.0]]]], np.float32)
    w = np.array([[[[3.0], [1.0]]]], np.float32)
    expected = (3 * -math.log(0.75) + 1 * math.log(2)) / 4
    assert value("wbce", y, x, w) == pytest.approx(expected, rel=1e-6)
    assert value("wbce", y, x, w, normalization="mean") == pytest.approx(
        (3 * -math.log(0.75) + math.log(2)) / 2, rel=1e-6
    )
    # pos_weight 2 doubles the positive pixel's term (weights 1 here).
    assert value("wbce", y, x, pos_weight=2.0) == pytest.approx(
        (2 * -math.log(0.75) + math.log(2)) / 2, rel=1e-6
    )


def test_dice_jaccard_tversky_hand_worked():
    # Probabilities 0.75 / 0.25 (logits +-ln 3), targets 1 / 0 / 1 / 0 with one wrong pixel.
    lg = math.log(3.0)
    x = np.array([[[[lg], [-lg], [-lg], [lg]]]], np.float32)
    y = np.array([[[[1], [0], [1], [0]]]], np.int32)
    tp, fp, fn = 0.75 + 0.25, 0.25 + 0.75, 0.25 + 0.75
    assert value("dice", y, x, smooth=0.0, eps=0.0) == pytest.approx(
        1 - 2 * tp / (2 * tp + fp + fn)
    )
    assert value("jaccard", y, x, smooth=0.0, eps=0.0) == pytest.approx(1 - tp / (tp + fp + fn))
    assert value("tversky", y, x, smooth=0.0, eps=0.0, alpha=0.2, beta=0.8) == pytest.approx(
        1 - tp / (tp + 0.2 * fp + 0.8 * fn)
    )
    assert 1 - 2 * tp / (2 * tp + fp + fn) == pytest.approx(0.5)


def test_wce_class_weights_hand_worked():
    # Two pixels, 2 classes, logits 0 -> CE ln 2 each; class weights 1 and 3 -> mean still ln 2.
    y = np.array([[[[0], [1]]]], np.int32)
    x = np.zeros((1, 1, 2, 2), np.float32)
    assert value("wce", y, x, mode="multiclass", class_weights=[1.0, 3.0]) == pytest.approx(
        math.log(2)
    )
    x[0, 0, 1] = [0.0, math.log(3.0)]  # pixel 2: p(class 1) = 0.75
    expected = (1 * math.log(2) + 3 * -math.log(0.75)) / 4
    assert value("wce", y, x, mode="multiclass", class_weights=[1.0, 3.0]) == pytest.approx(
        expected, rel=1e-6
    )


# --------------------------------------------------------------------------- NumPy agreement

OPTIONS = {
    "wbce": [{}, {"pos_weight": 2.5, "label_smoothing": 0.1, "normalization": "mean"}],
    "wce": [{}, {"class_weights": [0.5, 1.0, 2.0], "normalization": "mean"}],
    "focal": [{}, {"alpha": None, "gamma": 1.5, "normalization": "mean"}],
    "dice": [
        {},
        {"smooth": 0.0, "reduction": "image", "classes": [0, 2]},
        {"class_weights": [0.5, 0.0, 2.0], "reduction": "image"},
        {"log_loss": True, "smooth": 0.0},
    ],
    "jaccard": [
        {},
        {"smooth": 0.5, "reduction": "image"},
        {"class_weights": [2.0, 1.0, 0.5], "log_loss": True},
    ],
    "tversky": [
        {},
        {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "reduction": "image"},
        {"gamma": 0.75, "class_weights": [1.0, 3.0, 0.5], "classes": [1, 2]},
        {"alpha": 0.7, "beta": 0.3, "gamma": 1.5, "log_loss": True, "reduction": "image"},
    ],
    "lovasz": [{}, {"reduction": "image", "classes": [0, 2]}],
    "mcc": [
        {},
        {"eps": 0.0, "reduction": "image", "classes": [0, 2]},
        {"class_weights": [0.5, 1.0, 2.0]},
    ],
}


@pytest.mark.parametrize("term,mode", CASES)
def test_matches_numpy_reference(term, mode):
    y, x, w = make_batch(mode, ignore=255)
    for opts in OPTIONS[term]:
        if mode == "binary" and opts.get("classes"):
            opts = {**opts, "classes": [0]}
        if mode == "binary" and opts.get("class_weights"):
            opts = {**opts, "class_weights": opts["class_weights"][:1]}
        for weight in (None, w):
            got = value(term, y, x, weight, mode=mode, ignore_index=255, **opts)
            want = np_loss(term, y, x, weight, mode=mode, ignore=255, **opts)
            assert got == pytest.approx(want, rel=2e-5, abs=1e-6), (opts, weight is None)


# --------------------------------------------------------------------------- Keras agreement


def test_wbce_matches_keras_binary_crossentropy():
    y, x, w = make_batch("binary")
    ref = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)
    want = float(ref(y.astype(np.float32), x, sample_weight=w))
    got = value("wbce", y, x, w, normalization="mean", label_smoothing=0.2)
    assert got == pytest.approx(want, rel=1e-5)


def test_focal_matches_keras_binary_focal_crossentropy():
    y, x, w = make_batch("multilabel")
    ref = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True
    )
    want = float(ref(y.astype(np.float32), x))
    assert value("focal", y, x, mode="multilabel", normalization="mean") == pytest.approx(
        want, rel=1e-5
    )


def test_wce_matches_keras_sparse_categorical_crossentropy():
    y, x, w = make_batch("multiclass")
    ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = float(ref(y, x, sample_weight=w))
    assert value("wce", y, x, w, mode="multiclass", normalization="mean") == pytest.approx(
        want, rel=1e-5
    )


def test_dice_and_tversky_match_keras():
    y, x, _ = make_batch("binary")
    p = keras.ops.sigmoid(x)
    yf = y.astype(np.float32)
    want = float(keras.losses.dice(yf, p))
    assert value("dice", y, x, smooth=0.0, eps=1e-7) == pytest.approx(want, rel=1e-5)
    # Keras' `alpha` multiplies sum(t * (1 - p)) (false negatives); ours follows Salehi et al.
    # (alpha on false positives), so the two agree with alpha and beta swapped.
    want = float(keras.losses.tversky(yf, p, alpha=0.3, beta=0.7))
    got = value("tversky", y, x, smooth=0.0, eps=1e-7, alpha=0.7, beta=0.3)
    assert got == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- layer == Loss


@pytest.mark.parametrize("term,mode", CASES)
def test_layer_and_loss_agree(term, mode):
    y, x, w = make_batch(mode, ignore=255, seed=3)
    layer = losses.get(term, mode=mode, ignore_index=255)
    loss = losses.get_loss(term, mode=mode, ignore_index=255)
    with_w = float(layer([y, w, x]))
    assert with_w == pytest.approx(float(loss(y, x, sample_weight=w)), rel=1e-6)
    assert float(layer([y, x])) == pytest.approx(float(loss(y, x)), rel=1e-6)
    # (B, H, W) maps are the same as (B, H, W, 1).
    assert float(loss(y, x, sample_weight=w[..., 0])) == pytest.approx(with_w, rel=1e-6)


def test_layer_logs_weighted_value_and_adds_loss():
    y, x, w = make_batch("binary")
    layer = losses.WeightedBCE(loss_weight=0.5)
    out = float(layer([y, w, x]))
    assert out == pytest.approx(0.5 * np_loss("wbce", y, x, w), rel=1e-5)
    assert float(layer.losses[0]) == pytest.approx(out)
    assert layer.tracker.name == "wbce_loss"
    assert float(layer.tracker.result()) == pytest.approx(out)


def test_loss_in_compile_with_sample_weight_map():
    image = keras.Input((8, 8, 2))
    model = keras.Model(image, keras.layers.Conv2D(1, 1)(image))
    model.compile(optimizer="sgd", loss=losses.DiceLoss())
    x = RNG.random((4, 8, 8, 2)).astype(np.float32)
    y = (RNG.random((4, 8, 8, 1)) > 0.5).astype(np.float32)
    w = RNG.uniform(0, 2, (4, 8, 8, 1)).astype(np.float32)
    got = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0)
    assert got == pytest.approx(np_loss("dice", y, model.predict(x, verbose=0), w), rel=1e-5)


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("term", ["dice", "jaccard", "tversky", "lovasz"])
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_perfect_prediction_is_zero(term, mode):
    y, _, w = make_batch(mode, ignore=255)
    t, _, _ = np_prepare(
        y, np.zeros(y.shape[:-1] + (1 if mode == "binary" else 3,)), None, mode, 255
    )
    x = (np.where(t > 0, 50.0, -50.0)).astype(np.float32)
    assert value(term, y, x, w, mode=mode, ignore_index=255) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("term,mode", CASES)
def test_ignored_pixels_do_not_matter_and_zero_weight_equals_ignore(term, mode):
    y, x, w = make_batch(mode, ignore=255, seed=5)
    ignored = y == 255
    if mode != "multilabel":
        ignored = np.broadcast_to(ignored, x.shape)
    x2 = np.where(ignored, RNG.normal(0, 20, x.shape), x).astype(np.float32)
    a = value(term, y, x, w, mode=mode, ignore_index=255)
    assert value(term, y, x2, w, mode=mode, ignore_index=255) == pytest.approx(a, rel=1e-6)
    if mode != "multilabel":  # weight maps are per pixel; multilabel ignore is per element
        w0 = np.where(y == 255, 0.0, w).astype(np.float32)
        y0 = np.where(y == 255, 0, y).astype(np.int32)
        assert value(term, y0, x2, w0, mode=mode) == pytest.approx(a, rel=1e-6)


@pytest.mark.parametrize("term,mode", CASES)
def test_extreme_logits_and_empty_masks_are_finite(term, mode):
    ch = 1 if mode == "binary" else 3
    shape = (2, 4, 4, ch)
    for sign in (100.0, -100.0):
        x = tf.Variable(np.full(shape, sign, np.float32) * np.where(RNG.random(shape) > 0.5, 1, -1))
        for y in (
            np.zeros(shape[:3] + (1 if mode != "multilabel" else ch,), np.int32),
            np.full(shape[:3] + (1 if mode != "multilabel" else ch,), 255, np.int32),  # all ignored
            make_batch(mode, 2, 4, 4)[0],
        ):
            with tf.GradientTape() as tape:
                loss = getattr(F, term)(y, x, None, mode=mode, ignore_index=255)
            grad = tape.gradient(loss, x)
            assert np.isfinite(float(loss))
            assert np.all(np.isfinite(grad.numpy()))


def test_focal_gamma_below_one_has_finite_gradient_at_perfect_prediction():
    x = tf.Variable(np.full((1, 2, 2, 1), 100.0, np.float32))
    y = np.ones((1, 2, 2, 1), np.int32)
    with tf.GradientTape() as tape:
        loss = F.focal(y, x, gamma=0.5)
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_mixed_precision_inputs_are_computed_in_float32():
    y, x, w = make_batch("binary")
    got = F.wbce(y, x.astype(np.float16), w.astype(np.float16))
    assert got.dtype == "float32"
    layer = losses.Dice()
    assert layer.compute_dtype == "float32"


# --------------------------------------------------------------------------- registry, config


def test_registry_lists_and_errors():
    assert losses.list_losses() == sorted(TERMS)
    assert losses.list_losses("w*ce") == ["wbce", "wce"]
    with pytest.raises(ValueError, match="Unknown loss 'dise'.*Did you mean 'dice'"):
        losses.get("dise")


@pytest.mark.parametrize(
    "term,kwargs,match",
    [
        ("wbce", {"pos_weight": -1.0}, "pos_weight"),
        ("wbce", {"normalization": "sum"}, "normalization"),
        ("wbce", {"mode": "multiclass"}, "mode"),
        ("dice", {"reduction": "pixel"}, "reduction"),
        ("dice", {"classes": [-1]}, "classes"),
        ("focal", {"alpha": 1.5}, "alpha"),
        ("tversky", {"gamma": 0.0}, "gamma"),
        ("wce", {"class_weights": [1.0, float("nan")]}, "class_weights"),
        ("dice", {"class_weights": [1.0, -0.5]}, "class_weights"),
        ("mcc", {"class_weights": "12"}, "class_weights"),
        ("dice", {"log_loss": "false"}, "log_loss"),
        ("jaccard", {"log_loss": 1}, "log_loss"),
        ("dice", {"smoth": 1.0}, "Unknown option"),
        ("dice", {"ignore_index": 2.5}, "ignore_index"),
        ("dice", {"loss_weight": 0.0}, "loss_weight"),
        ("wce", {"class_weights": "12"}, "class_weights"),  # a string is not a list
        ("jaccard", {"classes": [1, True]}, "classes"),
        ("tversky", {"alpha": -0.1}, "alpha"),
        ("focal", {"gamma": float("inf")}, "gamma"),
        ("wbce", {"label_smoothing": 1.5}, "label_smoothing"),
    ],
)
def test_bad_options_raise(term, kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.get(term, **kwargs)


def test_options_are_declared_per_term():
    # gamma: focal allows 0 (plain CE), Tversky does not; alpha: a [0, 1] balance (or None) in
    # focal, an unbounded false-positive weight in Tversky.
    assert losses.get("focal", gamma=0).options["gamma"] == 0.0
    assert losses.get("tversky", alpha=1.5).options["alpha"] == 1.5
    assert losses.get("focal", alpha=None).options["alpha"] is None
    with pytest.raises(ValueError) as info:
        losses.get("focal", alpha=1.5)
    assert str(info.value) == (
        "Invalid value for argument `alpha` of loss 'focal': expected None or a finite number "
        ">= 0.0 and <= 1.0. Received: alpha=1.5"
    )
    with pytest.raises(
        ValueError, match=r"`gamma` of loss 'tversky': expected a finite number > 0"
    ):
        losses.get("tversky", gamma=0)
    # Stored as the pure functions take them: floats, and lists for sequences.
    layer = losses.get("wce", class_weights=(1, 2, 3), label_smoothing=0)
    assert layer.options == {
        "class_weights": [1.0, 2.0, 3.0],
        "label_smoothing": 0.0,
        "normalization": "weighted",
    }
    assert isinstance(layer.options["label_smoothing"], float)
    assert losses.get_loss("dice", classes=(2, 0)).options["classes"] == [2, 0]


EXPECTED_CLASSES = {  # the serialization names .keras files already hold
    "wbce": ("WeightedBCE", "WeightedBCELoss"),
    "wce": ("WeightedCE", "WeightedCELoss"),
    "focal": ("Focal", "FocalLoss"),
    "dice": ("Dice", "DiceLoss"),
    "jaccard": ("Jaccard", "JaccardLoss"),
    "tversky": ("Tversky", "TverskyLoss"),
    "lovasz": ("Lovasz", "LovaszLoss"),
    "mcc": ("MCC", "MCCLoss"),
}


@pytest.mark.parametrize("term", TERMS)
def test_each_term_is_one_file_with_a_derived_loss_twin(term):
    layer_name, loss_name = EXPECTED_CLASSES[term]
    entry = losses.LOSSES.get(term)
    layer_cls, loss_cls = entry.obj, entry.loss_class
    module = importlib.import_module(f"losses.{term}")
    assert layer_cls is getattr(losses, layer_name) is getattr(module, layer_name)
    assert loss_cls is getattr(losses, loss_name) is getattr(module, loss_name)
    assert layer_cls.fn is getattr(module, term) is getattr(F, term)
    # The twin is derived from the layer, not written by hand.
    assert issubclass(loss_cls, losses.TermLoss) and loss_cls.layer_class is layer_cls
    assert (loss_cls.term, loss_cls.fn, loss_cls.modes) == (term, layer_cls.fn, layer_cls.modes)
    assert loss_cls.__module__ == module.__name__ and loss_cls.__qualname__ == loss_name
    assert keras.saving.get_registered_name(layer_cls) == f"segzoo_losses>{layer_name}"
    assert keras.saving.get_registered_name(loss_cls) == f"segzoo_losses>{loss_name}"
    assert set(entry.modes) == set(MODES_OF[term])
    # One check per keyword option of the function, whose signature gives the defaults.
    defaults = {
        p.name: p.default
        for p in inspect.signature(layer_cls.fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("mode", "ignore_index")
    }
    assert set(layer_cls.option_checks) == set(defaults)
    assert losses.get(term).options == defaults == losses.get_loss(term).options
    assert losses.get(term).mode == losses.get_loss(term).mode == MODES_OF[term][0]


LOSSES_DIR = Path(losses.__file__).parent


def _imported_modules(path):
    tree = ast.parse(path.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_adding_a_term_is_its_file_and_its_imports():
    decorated = set()
    for path in LOSSES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "register_term" for d in node.decorator_list
            ):
                decorated.add(path.stem)
    assert decorated == set(TERMS)
    for name in ("__init__.py", "functional.py"):
        assert {f"losses.{t}" for t in TERMS} <= _imported_modules(LOSSES_DIR / name), name


def test_no_private_names_are_imported_across_loss_modules():
    private = []
    for path in LOSSES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("losses"):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def test_register_term_refuses_an_option_table_that_does_not_fit_its_function():
    from losses.base import register_term
    from losses.options import positive

    def toy(y_true, y_pred, weight=None, *, mode="binary", ignore_index=None, scale=0.0, p=2.0):
        return y_pred

    class Toy(losses.LossLayer):
        term, fn, option_checks = "toy", staticmethod(toy), {"scale": positive}

    with pytest.raises(TypeError, match=r"option table of loss 'toy' must list .*\['p', 'scale'\]"):
        register_term(Toy)
    Toy.option_checks = {"scale": positive, "p": positive}  # the default scale=0.0 fails
    with pytest.raises(ValueError, match=r"`scale` of loss 'toy': expected a finite number > 0"):
        register_term(Toy)
    assert "toy" not in losses.LOSSES


@pytest.mark.parametrize("term", TERMS)
def test_configs_saved_before_the_one_file_per_term_layout_still_load(term):
    # The classes lived in losses.terms; the registered names resolve them, not the module.
    mode = "multiclass" if term == "wce" else "multilabel"
    loss = losses.get_loss(term, mode=mode, ignore_index=7)
    config = keras.losses.serialize(loss)
    assert config["registered_name"] == f"segzoo_losses>{EXPECTED_CLASSES[term][1]}"
    restored = keras.losses.deserialize({**config, "module": "losses.terms"})
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    layer = losses.get(term, mode=mode, loss_weight=2.0)
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object({**config, "module": "losses.terms"})
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()


def test_a_loss_config_written_by_the_old_layout_loads():
    # As `keras.losses.serialize` wrote it before the split (losses/terms.py).
    config = {
        "module": "losses.terms",
        "class_name": "WeightedBCELoss",
        "config": {
            "name": "wbce_loss",
            "mode": "multilabel",
            "ignore_index": 7,
            "pos_weight": 2.0,
            "label_smoothing": 0.0,
            "normalization": "weighted",
        },
        "registered_name": "segzoo_losses>WeightedBCELoss",
    }
    loss = keras.losses.deserialize(config)
    assert isinstance(loss, losses.WeightedBCELoss) and loss.options["pos_weight"] == 2.0
    y, x, w = make_batch("multilabel")
    want = np_loss("wbce", y, x, w, mode="multilabel", pos_weight=2.0)
    assert float(loss(y, x, sample_weight=w)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("term", TERMS)
def test_get_config_round_trip(term):
    mode = "multiclass" if term == "wce" else "multilabel"
    layer = losses.get(term, mode=mode, ignore_index=255, loss_weight=2.0)
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    loss = losses.get_loss(term, mode=mode, ignore_index=7)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()


# --------------------------------------------------------------------------- mask value checks


@pytest.mark.parametrize("term,mode", CASES)
def test_out_of_range_mask_values_are_refused(term, mode):
    y, x, w = make_batch(mode)
    bad = (y * 255).astype(np.int32) if mode != "multiclass" else np.where(y == 2, 3, y)
    value_seen, valid = (255, r"values in \[0, 1\]") if mode != "multiclass" else (3, "0..2")
    message = (
        rf"Invalid mask value {value_seen} for loss '{term}' \({mode} mode\): expected .*{valid}"
    )
    with pytest.raises(ValueError, match=message):  # the pure function, eagerly
        value(term, bad, x, w, mode=mode)
    with pytest.raises(ValueError, match=rf"ignore_index={value_seen}"):
        losses.get_loss(term, mode=mode)(bad, x, sample_weight=w)
    negative = np.where(y == 0, -1, y).astype(np.int32)
    with pytest.raises(
        ValueError, match=r"Invalid mask value -1 .*Received: mask values in \[-1, "
    ):
        value(term, negative, x, mode=mode)
    # The same values are fine once they are the ignore_index: ignored, not refused.
    assert np.isfinite(value(term, bad, x, w, mode=mode, ignore_index=value_seen))


def test_binary_0_255_mask_error_names_the_fixes():
    y, x, _ = make_batch("binary")
    with pytest.raises(ValueError) as info:
        F.wbce(y * 255, x)
    text = str(info.value)
    assert "\n" not in text
    assert "mask values in [0, 255]" in text
    assert "pass ignore_index=255" in text and "divide a 0/255 mask by 255" in text


def test_soft_binary_targets_in_0_1_are_valid():
    # Soft targets stay allowed: BCE at logit 0 is ln 2 for any target t in [0, 1].
    y = np.full((1, 2, 2, 1), 0.3, np.float32)
    assert value("wbce", y, np.zeros((1, 2, 2, 1), np.float32)) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="Invalid mask value 1.5"):
        value("wbce", y * 5, np.zeros((1, 2, 2, 1), np.float32))


def test_standalone_forms_refuse_bad_masks_in_graphs_and_poison_them_under_xla():
    y, x, w = make_batch("binary")
    bad = tf.constant(y * 255)
    layer = losses.Dice()
    graph = tf.function(lambda a, b, c: layer([a, c, b]))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"Invalid mask value for loss dice \(binary mode\)"
    ):
        graph(bad, x, w)
    assert np.isfinite(float(graph(tf.constant(y), x, w)))
    # XLA drops Assert ops: the loss is NaN instead of a plausible wrong number (issue: -23.8).
    xla = tf.function(lambda a, b: F.wbce(a, b), jit_compile=True)
    assert math.isnan(float(xla(bad, x)))
    assert float(xla(tf.constant(y), x)) == pytest.approx(np_loss("wbce", y, x), rel=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_keras_loss_form_in_compile_refuses_bad_masks(jit_compile):
    image = keras.Input((8, 8, 2))
    model = keras.Model(image, keras.layers.Conv2D(3, 1)(image))
    model.compile(optimizer="sgd", loss=losses.WeightedCELoss(), jit_compile=jit_compile)
    x = RNG.random((4, 8, 8, 2)).astype(np.float32)
    y = RNG.integers(0, 4, (4, 8, 8, 1)).astype(np.int32)  # class 3 of 3 channels
    y[0, 0, 0] = 3
    if jit_compile:
        assert math.isnan(model.evaluate(x, y, batch_size=4, verbose=0))
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"class ids 0\.\.2"):
            model.evaluate(x, y, batch_size=4, verbose=0)


# --------------------------------------------------------------------------- empty sets (issue 6)

REGION = ["dice", "jaccard", "tversky"]


@pytest.mark.parametrize("term", REGION)
@pytest.mark.parametrize("smooth", [1.0, 0.0])
@pytest.mark.parametrize("how", ["ignored", "weight 0"])
def test_image_reduction_leaves_out_images_with_no_pixel_that_counts(term, smooth, how):
    y, x, w = make_batch("binary", b=3, seed=7)
    if how == "ignored":
        y[1] = 255
    else:
        w[1] = 0.0
    opts = {"reduction": "image", "smooth": smooth}
    got = value(term, y, x, w, ignore_index=255, **opts)
    # Independent: the mean over images 0 and 2 alone, each scored on its own.
    keep = [0, 2]
    per_image = [np_loss(term, y[i : i + 1], x[i : i + 1], w[i : i + 1], **opts) for i in keep]
    assert got == pytest.approx(np.mean(per_image), rel=1e-5)
    assert got == pytest.approx(np_loss(term, y[keep], x[keep], w[keep], **opts), rel=1e-5)
    # The left-out image's logits change nothing.
    x2 = x.copy()
    x2[1] = RNG.normal(0, 10, x2[1].shape)
    assert value(term, y, x2, w, ignore_index=255, **opts) == pytest.approx(got, rel=1e-6)


@pytest.mark.parametrize("term", REGION)
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_nothing_left_is_zero_loss_with_zero_gradient_whatever_smooth(term, mode, reduction):
    y, x, _ = make_batch(mode, seed=8)
    x = tf.Variable(x)
    for smooth, eps in ((1.0, 1e-7), (0.0, 1e-7), (0.0, 0.0)):
        for y_all, w in ((np.full_like(y, 255), None), (y, np.zeros((2, 6, 5, 1), np.float32))):
            with tf.GradientTape() as tape:
                loss = getattr(F, term)(
                    y_all,
                    x,
                    w,
                    mode=mode,
                    ignore_index=255,
                    smooth=smooth,
                    eps=eps,
                    reduction=reduction,
                )
            assert float(loss) == 0.0, (smooth, eps, w is None)
            np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), 0.0)


@pytest.mark.parametrize("term", REGION)
def test_multilabel_class_with_no_pixel_that_counts_leaves_the_class_mean(term):
    y, x, _ = make_batch("multilabel", seed=9)
    y[..., 1] = 255  # label 1 is not annotated in this batch
    got = value(term, y, x, mode="multilabel", ignore_index=255, smooth=0.0)
    want = value(term, y, x, mode="multilabel", ignore_index=255, smooth=0.0, classes=[0, 2])
    assert got == pytest.approx(want, rel=1e-6)
    assert got == pytest.approx(
        np_loss(term, y, x, mode="multilabel", ignore=255, smooth=0.0), rel=1e-5
    )


# --------------------------------------------------------------------------- reduction, classes


@pytest.mark.parametrize("term", ["wbce", "wce", "focal"])
@pytest.mark.parametrize("reduction", ["sum", "none", None, "sum_over_batch_size"])
def test_keras_reduction_argument_is_refused_not_ignored(term, reduction):
    # It used to be accepted and ignored: reduction="sum" returned the mean.
    with pytest.raises(ValueError, match=r"argument `reduction` of loss .*normalization="):
        losses.get_loss(term, reduction=reduction)
    with pytest.raises(ValueError, match=r"argument `reduction` of loss 'dice': expected one of"):
        losses.get_loss("dice", reduction="sum")


def test_class_options_that_do_not_fit_the_channels_fail_in_one_line_before_training():
    image = keras.Input((8, 8, 3), name="image")
    model = keras.Model(image, keras.layers.Conv2D(3, 1)(image))
    cw = r"`class_weights` of loss 'wce': expected one weight per class, 3 for logits with 3 "
    with pytest.raises(ValueError, match=cw + r"channels\. Received: class_weights=\[1\.0, 2\.0\]"):
        losses.attach(model, "wce+dice", wce={"class_weights": [1.0, 2.0]})
    with pytest.raises(
        ValueError, match=r"`classes` of loss 'dice': expected channel indices 0\.\.2"
    ):
        losses.attach(model, "wce+dice", dice={"classes": [1, 3]})
    with pytest.raises(ValueError, match=cw):  # the seed pattern: when the model is built
        losses.WeightedCE(class_weights=[1.0, 2.0])([keras.Input((8, 8, 1)), model.output])
    y, x, _ = make_batch("multiclass", c=3)
    with pytest.raises(ValueError, match=cw):
        losses.get_loss("wce", class_weights=[1.0, 2.0, 3.0, 4.0][:2])(y, x)
    with pytest.raises(ValueError, match=r"`classes` of loss 'jaccard'"):
        F.jaccard(y, x, mode="multiclass", classes=[5])
