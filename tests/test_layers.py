"""Zoo layers checked against the plain Keras layers they stand for."""

from __future__ import annotations

import numpy as np
import pytest


def _layer_and_reference(num_skips: int, size: tuple[int, int], policy: str = "float32"):
    """Our layer and Keras' UpSampling2D -> Concatenate -> Conv2D(3, same, no bias) with the
    same kernel, plus random inputs."""
    import keras
    import tensorflow as tf

    from zoo.layers import UpsampleConcatConv2D

    rng = np.random.default_rng(num_skips)
    h, w = size
    x = tf.constant(rng.normal(size=(2, h, w, 5)), tf.float32)
    skips = [
        tf.constant(rng.normal(size=(2, 2 * h, 2 * w, 3 + i)), tf.float32) for i in range(num_skips)
    ]
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        layer = UpsampleConcatConv2D(4)
        conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
        up, concat = keras.layers.UpSampling2D(2), keras.layers.Concatenate()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    inputs = [x, *skips] if num_skips else x
    layer.build([t.shape for t in inputs] if num_skips else x.shape)
    conv.build((2, 2 * h, 2 * w, 5 + sum(3 + i for i in range(num_skips))))
    conv.kernel.assign(layer.kernel.numpy() * 0 + rng.normal(size=layer.kernel.shape))
    layer.kernel.assign(conv.kernel.numpy())

    def reference(x, *skips):
        u = up(x)
        return conv(concat([u, *skips]) if skips else u)

    return layer, conv, reference, x, skips


def _value_and_grads(fn, args, variable, upstream):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(args)
        y = fn(*args)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    return y, tape.gradient(loss, [*args, variable])


@pytest.mark.parametrize("num_skips", [0, 1, 2])
@pytest.mark.parametrize("size", [(4, 6), (5, 3)])
def test_upsample_concat_conv_equals_upsample_concat_conv2d(num_skips, size):
    # Forward, input gradients and kernel gradient against Keras' three layers.
    import tensorflow as tf

    layer, conv, reference, x, skips = _layer_and_reference(num_skips, size)
    h, w = size
    upstream = tf.constant(np.random.default_rng(9).normal(size=(2, 2 * h, 2 * w, 4)), tf.float32)
    args = [x, *skips]
    y, grads = _value_and_grads(
        lambda *a: layer(list(a) if num_skips else a[0]), args, layer.kernel, upstream
    )
    y_ref, grads_ref = _value_and_grads(reference, args, conv.kernel, upstream)
    assert tuple(y.shape) == (2, 2 * h, 2 * w, 4)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_upsample_concat_conv_mixed_bfloat16_close_to_float32():
    # Computes in bfloat16 (kernel folded in float32, rounded once): bfloat16-level error.
    import tensorflow as tf

    layer, _, reference, x, skips = _layer_and_reference(1, (4, 4), "mixed_bfloat16")
    y = layer([x, *skips])
    assert y.dtype == tf.bfloat16 and layer.kernel.dtype == "float32"
    want = reference(x, *skips).numpy()
    err = np.abs(y.numpy().astype(np.float32) - want).max() / np.abs(want).max()
    assert err < 2e-2, err


def test_upsample_concat_conv_symbolic_shapes_and_config():
    import keras

    from zoo.layers import UpsampleConcatConv2D

    x, skip = keras.Input((None, 7, 6)), keras.Input((None, 14, 2))
    layer = UpsampleConcatConv2D(3, kernel_initializer="he_normal", name="up")
    y = layer([x, skip])
    assert tuple(y.shape) == (None, None, 14, 3)
    assert tuple(layer.kernel.shape) == (3, 3, 8, 3)  # upsampled channels first
    clone = UpsampleConcatConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_upsample_concat_conv_rejects_bad_filters(bad):
    from zoo.layers import UpsampleConcatConv2D

    with pytest.raises(ValueError, match="filters"):
        UpsampleConcatConv2D(bad)


def test_upsample_concat_conv_rejects_mismatched_skip():
    import keras

    from zoo.layers import UpsampleConcatConv2D

    with pytest.raises(ValueError, match=r"skip input of shape \(None, 14, 13, 2\)"):
        UpsampleConcatConv2D(3)([keras.Input((7, 6, 4)), keras.Input((14, 13, 2))])
    # Unknown sizes are checked by the ops at run time, not here.
    UpsampleConcatConv2D(3)([keras.Input((None, 6, 4)), keras.Input((14, None, 2))])


def test_bilinear_upsampling_matches_the_closed_form():
    # One layer for both grids: FPN (smp's) and SegFormer heads align corners.
    import keras

    from zoo.layers import BilinearUpsampling

    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 3, 4, 2)).astype("float32")
    y = np.asarray(BilinearUpsampling(4, align_corners=True)(x))
    assert y.shape == (1, 12, 16, 2)

    def grid(n_in, n_out):  # align_corners=True: output i samples i * (in - 1) / (out - 1)
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
        return lo, pos - lo

    (r0, fr), (c0, fc) = grid(3, 12), grid(4, 16)
    rows = x[0, r0] * (1 - fr)[:, None, None] + x[0, r0 + 1] * fr[:, None, None]
    expected = rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c0 + 1] * fc[None, :, None]
    np.testing.assert_allclose(y[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[0, [0, -1]][:, [0, -1]], x[0, [0, -1]][:, [0, -1]], atol=1e-6)
    same = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
    np.testing.assert_allclose(
        np.asarray(BilinearUpsampling(4)(x)), np.asarray(same), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("channels, size", [(3, 65), (8, 64), (16, 64)])
def test_strided_pointwise_conv_computes_the_strided_one_and_its_gradient(channels, size):
    """`subsample_for_pointwise` + a 1x1 conv at the stride it returns computes what the
    strided 1x1 conv would (odd sizes too), and its kernel gradient is the closed form
    sum over batch and pixels of x[:, ::2, ::2] * g, over several training-sized steps (the
    strided 1x1 weight gradient itself crashes or is wrong below 16 channels in oneDNN)."""
    import keras
    import tensorflow as tf

    from zoo.layers import subsample_for_pointwise

    rng = np.random.default_rng(channels)
    x = tf.constant(rng.random((2, size, size, channels)), tf.float32)
    inputs = keras.Input((None, None, channels))
    y, strides = subsample_for_pointwise(inputs, 2, "shortcut")
    assert strides == (2 if channels >= 16 else 1)
    conv = keras.layers.Conv2D(16, 1, strides=strides, use_bias=False)
    model = keras.Model(inputs, conv(y))
    kernel = np.asarray(conv.kernel)[0, 0]  # (channels, 16)
    sub = np.asarray(x)[:, ::2, ::2]
    np.testing.assert_allclose(model(x), sub @ kernel, atol=1e-5)
    for step in range(10):
        g = rng.normal(size=(2, (size + 1) // 2, (size + 1) // 2, 16)).astype("float32")
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) * g)
        (grad,) = tape.gradient(loss, [conv.kernel])
        want = np.einsum("bhwc,bhwo->co", sub, g)
        np.testing.assert_allclose(np.asarray(grad)[0, 0], want, rtol=1e-4, atol=1e-3, err_msg=step)
