"""Scoring (zoo.evaluation): nothing to score is an error, and a model must fit the data."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import build_tiny

from zoo.errors import EvaluationError, ModelFileError
from zoo.evaluation import check_model_fits_data, evaluate_model, summary


def dataset(masks, images):
    return tf.data.Dataset.from_tensor_slices({"image": images, "mask": masks}).batch(2)


def test_an_empty_evaluation_is_an_error_not_a_perfect_score():
    model = build_tiny("unet", num_classes=1)
    empty = dataset(np.zeros((0, 64, 64, 1), np.int32), np.zeros((0, 64, 64, 3), np.float32))
    with pytest.raises(EvaluationError, match="no pixels"):
        evaluate_model(model, empty, num_classes=1, ignore_index=None)
    # Every pixel ignored counts nothing either.
    ignored = dataset(np.full((2, 64, 64, 1), 255, np.int32), np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(EvaluationError, match="no pixels"):
        evaluate_model(model, ignored, num_classes=1, ignore_index=255)


def test_no_foreground_anywhere_reports_no_score():
    model = build_tiny("unet", num_classes=1, activation=None)
    for w in model.trainable_variables:  # logits of -1 everywhere: nothing predicted
        w.assign(tf.zeros_like(w))
    bias = model.get_layer("head_conv").bias
    bias.assign(-tf.ones_like(bias))
    data = dataset(np.zeros((2, 64, 64, 1), np.int32), np.zeros((2, 64, 64, 3), np.float32))
    results = evaluate_model(model, data, num_classes=1, ignore_index=None)
    assert np.isnan(results["dice"])
    assert summary({f"val_{k}": v for k, v in results.items()}).endswith(
        "n/a (no foreground in the validation masks or predictions)"
    )


def test_model_must_fit_the_data():
    model = build_tiny("unet", num_classes=1)
    check_model_fits_data(model, 1, 3, "m.keras")
    with pytest.raises(ModelFileError, match=r"m.keras predicts 1 channel\(s\) .*num_classes=3"):
        check_model_fits_data(model, 3, 3, "m.keras")
    gray = build_tiny("unet", num_classes=1, input_shape=(None, None, 1))
    with pytest.raises(ModelFileError, match=r"takes images with 1 channel\(s\) but the data"):
        check_model_fits_data(gray, 1, 3, "m.keras")
