"""The layers behind the smp-parity models, checked against closed forms and, where the
reference interpreter is installed, against PyTorch / segmentation_models_pytorch itself."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from torch_ref import requires_reference, run_reference

from zoo.layers import (
    AdaptiveAveragePooling2D,
    BilinearUpsampling,
    HalvingMaxPooling2D,
    PositionAttention,
)
from zoo.layers.dilated_conv2d import direct_dilation

RNG = np.random.default_rng(0)


def _x(*shape) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# --- closed forms (no torch) ----------------------------------------------------------


def _bins(n: int, out: int) -> list[tuple[int, int]]:
    # PyTorch's adaptive pooling windows, written out: [floor(i n / out), ceil((i+1) n / out))
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


@pytest.mark.parametrize("shape, size", [((2, 13, 9, 3), (6, 6)), ((1, 2, 3, 2), (3, 2))])
def test_adaptive_average_pooling_bins(shape, size):
    x = _x(*shape)
    expected = np.array(
        [
            [
                [x[b, r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in _bins(shape[2], size[1])]
                for r0, r1 in _bins(shape[1], size[0])
            ]
            for b in range(shape[0])
        ]
    )
    got = np.asarray(AdaptiveAveragePooling2D(size)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_adaptive_average_pooling_unknown_size_and_config():
    inputs = keras.Input((None, None, 4))
    layer = AdaptiveAveragePooling2D(3)
    assert tuple(layer(inputs).shape) == (None, 3, 3, 4)
    model = keras.Model(inputs, layer(inputs))
    assert model(_x(1, 7, 5, 4)).shape == (1, 3, 3, 4)
    assert AdaptiveAveragePooling2D.from_config(layer.get_config()).output_size == (3, 3)
    with pytest.raises(ValueError, match=r"output_size=0"):
        AdaptiveAveragePooling2D(0)


@pytest.mark.parametrize("shape", [(2, 5, 8, 3), (1, 1, 3, 2), (1, 1, 1, 1)])
def test_halving_max_pooling_floor_mode_never_empty(shape):
    x = _x(*shape)
    b, h, w, c = shape
    oh, ow = max(1, h // 2), max(1, w // 2)
    expected = np.empty((b, oh, ow, c), np.float32)
    for i in range(oh):
        for j in range(ow):
            expected[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
    got = HalvingMaxPooling2D()(x)
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert HalvingMaxPooling2D().compute_output_shape((None, h, w, c)) == (None, oh, ow, c)


def _bilinear_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize whose corner pixels coincide (source = dst * (n - 1) / (out - 1))."""

    def weights(n, out):
        src = np.arange(out) * ((n - 1) / (out - 1) if out > 1 else 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        m = np.zeros((out, n))
        m[np.arange(out), lo] += 1 - (src - lo)
        m[np.arange(out), hi] += src - lo
        return m

    rows, cols = weights(x.shape[1], out_h), weights(x.shape[2], out_w)
    return np.einsum("ih,jw,bhwc->bijc", rows, cols, x.astype(np.float64))


@pytest.mark.parametrize("size, out", [((3, 5), (12, 20)), ((4, 4), (7, 9)), ((1, 2), (5, 3))])
def test_resize_to_reference_align_corners_closed_form(size, out):
    x = _x(2, *size, 3)
    ref = _x(1, *out, 1)
    got = np.asarray(BilinearUpsampling(None, align_corners=True)([x, ref]))
    np.testing.assert_allclose(got, _bilinear_align_corners(x, *out), rtol=1e-5, atol=1e-5)


def test_resize_to_reference_equals_the_factor_resize():
    x = _x(2, 3, 5, 4)
    for align_corners in (False, True):
        by_factor = BilinearUpsampling(4, align_corners=align_corners)(x)
        to_reference = BilinearUpsampling(None, align_corners=align_corners)([x, _x(1, 12, 20, 1)])
        np.testing.assert_array_equal(np.asarray(to_reference), np.asarray(by_factor))


def test_resize_to_reference_arguments_shapes_and_config():
    with pytest.raises(ValueError, match=r"a list \[x, reference\]"):
        BilinearUpsampling(None)(_x(1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"one tensor when `size` is set"):
        BilinearUpsampling(2)([_x(1, 2, 2, 1), _x(1, 4, 4, 1)])
    x, ref = keras.Input((None, 7, 4)), keras.Input((10, None, 1))
    assert tuple(BilinearUpsampling(None)([x, ref]).shape) == (None, 10, None, 4)
    model = keras.Model([x, ref], BilinearUpsampling(None)([x, ref]))
    assert model([_x(1, 3, 7, 4), _x(1, 10, 9, 1)]).shape == (1, 10, 9, 4)
    layer = BilinearUpsampling(None, align_corners=True)
    clone = BilinearUpsampling.from_config(layer.get_config())
    assert (clone.size, clone.align_corners, clone.dtype) == (None, True, "float32")


def test_position_attention_standard_is_row_softmax_attention():
    q, k, v = _x(2, 3, 4, 5), _x(2, 3, 4, 5), _x(2, 3, 4, 6)
    qf, kf, vf = (t.reshape(2, 12, -1).astype(np.float64) for t in (q, k, v))
    logits = qf @ kf.transpose(0, 2, 1)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    expected = (a @ vf).reshape(2, 3, 4, 6)
    got = PositionAttention("standard")([q, k, v])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"variant='row'"):
        PositionAttention("row")


def test_position_attention_smp_variant_closed_form():
    # One softmax over all pairs, then the (N, C) result read as a (C, N) buffer.
    q, k, v = _x(1, 2, 3, 4), _x(1, 2, 3, 4), _x(1, 2, 3, 5)
    qf, kf, vf = (t.reshape(6, -1).astype(np.float64) for t in (q, k, v))
    logits = qf @ kf.T
    a = np.exp(logits - logits.max())
    a /= a.sum()
    flat = (a @ vf).reshape(-1)  # row-major (N, C) buffer
    expected = flat.reshape(5, 6).T.reshape(1, 2, 3, 5)
    got = PositionAttention("smp")([q, k, v])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6)


# --- against PyTorch / smp -------------------------------------------------------------

RESIZE_CASES = [
    # (input (h, w), output (h, w), mode, align_corners)
    ((3, 5), (24, 40), "bilinear", True),
    ((4, 4), (7, 9), "bilinear", True),
    ((1, 1), (5, 3), "bilinear", True),
    ((6, 7), (3, 4), "bilinear", True),
    ((3, 5), (12, 20), "bilinear", False),
    ((4, 6), (7, 9), "bilinear", False),
    ((6, 7), (3, 4), "bilinear", False),
    ((3, 5), (6, 10), "nearest", None),  # PAN's GAU with decoder_interpolation="nearest"
]
POOL_CASES = [((2, 13, 9, 3), (6, 6)), ((2, 2, 3, 3), (3, 6)), ((1, 8, 8, 2), (3, 2))]
MAXPOOL_SHAPES = [(2, 5, 8, 3), (1, 9, 2, 2)]


@requires_reference("torch", "segmentation_models_pytorch")
def test_layers_match_pytorch():
    cases, arrays, checks = [], {}, []

    def add(case, x, **extra):
        i = len(cases)
        cases.append(case)
        arrays[f"x{i}"] = x
        arrays.update({f"{k}{i}": v for k, v in extra.items()})
        return i

    for size, out, mode, align in RESIZE_CASES:
        x = _x(2, *size, 3)
        case = {"op": "interpolate", "size": list(out), "mode": mode}
        if align is not None:
            case["align_corners"] = align
        i = add(case, x)
        if mode == "nearest":  # by an integer factor: Keras' UpSampling2D
            y = keras.layers.UpSampling2D(out[0] // size[0])(x)
        else:
            y = BilinearUpsampling(None, align_corners=align)([x, np.zeros((1, *out, 1))])
        checks.append((i, y, f"resize {case}"))
    for shape, size in POOL_CASES:
        x = _x(*shape)
        i = add({"op": "adaptive_avg_pool", "output_size": list(size)}, x)
        checks.append((i, AdaptiveAveragePooling2D(size)(x), f"pool {shape} -> {size}"))
    for shape in MAXPOOL_SHAPES:
        x = _x(*shape)
        checks.append((add({"op": "max_pool2"}, x), HalvingMaxPooling2D()(x), f"max {shape}"))
    # LinkNet's ConvTranspose2d(k=4, s=2, p=1) is Keras' Conv2DTranspose(4, 2, "same") with
    # the kernel (in, out, kh, kw) -> (kh, kw, out, in).
    x, w, b = _x(2, 3, 5, 4), _x(4, 6, 4, 4), _x(6)
    i = add({"op": "conv_transpose", "stride": 2, "padding": 1}, x, w=w, b=b)
    deconv = keras.layers.Conv2DTranspose(6, 4, strides=2, padding="same")
    deconv.build(x.shape)
    deconv.set_weights([w.transpose(2, 3, 1, 0), b])
    checks.append((i, deconv(x), "conv_transpose"))
    pab = add({"op": "pab", "seed": 0, "pab_channels": 4}, _x(2, 3, 5, 8))

    got = run_reference("torch_ops", arrays, cases=cases)
    for i, ours, what in checks:
        np.testing.assert_allclose(
            np.asarray(ours), got[f"y{i}"], rtol=1e-5, atol=1e-5, err_msg=what
        )
    # smp's position-wise attention block: its own conv outputs in, its residual out.
    x = arrays[f"x{pab}"]
    q, k, v = (got[f"y{pab}_{n}"] for n in ("center_conv", "top_conv", "bottom_conv"))
    ours = x + np.asarray(PositionAttention("smp")([q, k, v]))
    np.testing.assert_allclose(ours, got[f"y{pab}_residual"], rtol=1e-5, atol=1e-5)


# --- dilated convolutions: Keras' own layers are the reference ----------------------------


def _grads(layer, x):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.cast(y, tf.float32)))
    return [y, *tape.gradient(loss, [x, *layer.trainable_variables])]


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize(
    # (height, width, rate): nothing, rows, columns, rows and columns pruned
    "h, w, rate",
    [(9, 7, 2), (5, 16, 6), (16, 5, 6), (6, 6, 36)],
)
def test_dilated_convs_equal_keras_layers(separable, h, w, rate):
    from zoo.layers import DilatedConv2D, DilatedSeparableConv2D

    ours_cls, keras_cls = (
        (DilatedSeparableConv2D, keras.layers.SeparableConv2D)
        if separable
        else (DilatedConv2D, keras.layers.Conv2D)
    )
    kwargs = {"padding": "same", "dilation_rate": rate, "use_bias": True}
    ours, ref = ours_cls(4, 3, **kwargs), keras_cls(4, 3, **kwargs)
    x = _x(2, h, w, 5)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights([RNG.normal(size=v.shape).astype("float32") for v in ref.weights])
    ours.set_weights(ref.get_weights())
    for a, b in zip(_grads(ours, x), _grads(ref, x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    # Unknown size: the pruning is chosen at run time.
    inputs = keras.Input((None, None, 5))
    model = keras.Model(inputs, ours(inputs))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    assert type(ours).from_config(ours.get_config()).dilation_rate == (rate, rate)


def test_dilated_conv_without_onednn_takes_keras_route(monkeypatch):
    # TensorFlow's CPU kernels take dilation rates only with oneDNN: otherwise the layer must
    # compute through tf.nn.convolution (space-to-batch), with the same result.
    import tensorflow as tf

    from zoo.layers import DilatedConv2D, dilated_conv2d

    monkeypatch.setattr(dilated_conv2d, "direct_dilation", lambda: False)
    layer = DilatedConv2D(3, 3, padding="same", dilation_rate=2, use_bias=False)
    x = _x(1, 8, 8, 2)
    y = layer(x)
    graph = tf.function(layer).get_concrete_function(tf.constant(x)).graph.as_graph_def()
    assert any(n.op == "SpaceToBatchND" for n in graph.node)
    ref = tf.nn.convolution(x, layer.kernel, padding="SAME", dilations=2)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    # (height, width, kernel (kh, kw), rates): odd sizes, unequal rates, a 1-row kernel
    "h, w, ksize, rates",
    [(9, 7, (3, 3), (2, 2)), (6, 11, (3, 5), (3, 1)), (5, 5, (1, 3), (1, 2))],
)
@pytest.mark.skipif(
    not direct_dilation(),
    reason="TensorFlow runs without oneDNN here (no AVX-512): its CPU kernels take no dilation "
    "rates, so DilatedConv2D keeps Keras' SpaceToBatchND route and never takes this path",
)
@pytest.mark.parametrize("traced", [False, True])
def test_matmul_kernel_gradient_equals_convolution_gradient(h, w, ksize, rates, traced):
    # The bfloat16 fast path computes the kernel gradient as one matmul per tap; in float32
    # it must give TensorFlow's own convolution gradients (input and kernel) to rounding,
    # eagerly and traced (where the gradient holds its inputs by weak reference).
    import tensorflow as tf

    from zoo.layers.dilated_conv2d import dilated_conv_matmul_grad

    x = tf.constant(_x(2, h, w, 5))
    k = tf.constant(RNG.normal(size=(*ksize, 5, 4)).astype("float32"))
    dy = tf.constant(RNG.normal(size=(2, h, w, 4)).astype("float32"))

    def grads(fn):
        def run(x, k):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                y = fn(x, k)
                loss = tf.reduce_sum(y * dy)
            return [y, *tape.gradient(loss, [x, k])]

        return tf.function(run)(x, k) if traced else run(x, k)

    ours = grads(lambda a, b: dilated_conv_matmul_grad(a, b, rates))
    ref = grads(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME", dilations=list(rates)))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(
    not direct_dilation(), reason="without oneDNN the CPU's kernels take no dilation rates"
)
def test_a_traced_matmul_kernel_gradient_keeps_no_graph_alive():
    # TensorFlow registers a traced custom gradient for good; its closure must not hold the
    # graph (and the weights it captured) once nothing else does.
    import gc
    import weakref

    import tensorflow as tf

    from losses.graph_memory import release_custom_gradient_graphs
    from zoo.layers.dilated_conv2d import dilated_conv_matmul_grad

    x = tf.constant(_x(1, 6, 6, 4))
    k = tf.Variable(RNG.normal(size=(3, 3, 4, 4)).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = dilated_conv_matmul_grad(x, k, (2, 2))
        return tape.gradient(tf.reduce_sum(y), [x, k])

    graph = weakref.ref(step.get_concrete_function(x).graph)
    step(x)
    del step
    release_custom_gradient_graphs()
    gc.collect()
    assert graph() is None


def test_wide_bfloat16_dilated_conv_takes_matmul_kernel_gradient():
    # Under mixed_bfloat16 a 512 -> 512 dilated conv (a dilated ResNet's last stage) gets
    # its kernel gradient from matmuls; the gradient matches float32 to bfloat16 precision.
    import tensorflow as tf

    from zoo.layers import DilatedConv2D

    x = tf.constant(_x(2, 4, 4, 512))
    grads = {}
    for policy in ("mixed_bfloat16", "float32"):
        layer = DilatedConv2D(512, 3, padding="same", dilation_rate=2, use_bias=False, dtype=policy)
        layer.build(x.shape)
        layer.kernel.assign(RNG_KERNEL_512)

        @tf.function
        def step(layer=layer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(layer(x), tf.float32) ** 2)
            return tape.gradient(loss, layer.kernel)

        grads[policy] = step().numpy()
        graph = step.get_concrete_function().graph.as_graph_def()
        ops = {n.op for n in graph.node} | {
            n.op for f in graph.library.function for n in f.node_def
        }
        # Without oneDNN the layer keeps Keras' route, whose gradient is the convolution's.
        fast = policy == "mixed_bfloat16" and direct_dilation()
        assert ("Conv2DBackpropFilter" not in ops) == fast, ops
    scale = np.abs(grads["float32"]).max()
    np.testing.assert_allclose(grads["mixed_bfloat16"], grads["float32"], atol=0.03 * scale)


RNG_KERNEL_512 = np.random.default_rng(5).normal(0, 0.02, size=(3, 3, 512, 512)).astype("float32")
