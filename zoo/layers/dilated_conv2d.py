"""`DilatedConv2D`: a 'same'-padded dilated `Conv2D` computed as one oneDNN convolution, with the
taps that can only read padding left out."""

from __future__ import annotations

import functools
import weakref

import keras

from zoo.build_context import is_exporting


@functools.cache
def direct_dilation() -> bool:
    """Whether TensorFlow's own Conv2D kernels take dilation rates (oneDNN on, the x86
    default; cuDNN too). Without oneDNN the CPU backward kernels reject them, and Keras' route
    through SpaceToBatchND -> Conv2D -> BatchToSpaceND is the one that works."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - private module moved
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def pruned_taps(x, kernel, rates, conv):
    """``conv(x, kernel, rates)`` ('same' padding, stride 1) without the kernel rows / columns
    that only ever read padding.

    A tap ``d`` rows from the kernel's centre reads input row ``i + d * rate``: when the rate is
    at least the height, every off-centre row falls outside the image for every output row,
    so only the centre row contributes (likewise for columns). DeepLab's rates 24 and 36 on a
    16x16 stride-16 map are such cases: the 3x3 atrous conv is exactly a 1x1 conv with the
    centre weights. Same outputs and gradients (the dropped taps' are zero), fewer FLOPs.
    With an unknown size the choice is made at run time (`tf.switch_case`).
    """
    import tensorflow as tf  # the zoo runs on the TensorFlow backend

    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    rh, rw = rates

    def run(rows_pruned: bool, cols_pruned: bool):
        k, rate = kernel, [rh, rw]
        if rows_pruned:
            k, rate[0] = k[kh // 2 : kh // 2 + 1], 1
        if cols_pruned:
            k, rate[1] = k[:, kw // 2 : kw // 2 + 1], 1
        return conv(x, k, rate)

    h, w = x.shape[1], x.shape[2]
    if h is not None and w is not None:
        return run(kh > 1 and rh >= h, kw > 1 and rw >= w)
    shape = tf.shape(x)
    index = 2 * tf.cast(kh > 1 and rh >= shape[1], tf.int32)
    index += tf.cast(kw > 1 and rw >= shape[2], tf.int32)
    branches = [lambda r=r, c=c: run(r, c) for r in (False, True) for c in (False, True)]
    return tf.switch_case(index, branches)


# Below this many kernel entries (cin * cout) oneDNN's own bfloat16 backward-weights kernel
# is as fast as the matmuls (measured on 2 AVX-512-BF16 cores: 256x256 channels on a 32x32
# map break even, 512x512 on 16x16 take 25-27 ms against 34-41).
MATMUL_GRAD_MIN_ENTRIES = 512 * 512


@functools.cache
def _cpu_only() -> bool:
    """No GPU visible: training runs on oneDNN (a GPU keeps cuDNN's own kernels)."""
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def matmul_kernel_gradient(kernel) -> bool:
    """Whether `dilated_conv_matmul_grad` computes this kernel's gradient: bfloat16 kernels
    of at least `MATMUL_GRAD_MIN_ENTRIES` input x output channels, on a machine without a
    GPU (the measurement is oneDNN's)."""
    shape = kernel.shape
    return (
        keras.backend.standardize_dtype(kernel.dtype) == "bfloat16"
        and shape[2] is not None
        and shape[3] is not None
        and int(shape[2]) * int(shape[3]) >= MATMUL_GRAD_MIN_ENTRIES
        and _cpu_only()
    )


def dilated_conv_matmul_grad(x, kernel, rates):
    """A 'same'-padded, stride-1 dilated conv whose kernel gradient is one matmul per tap.

    The forward pass and the input gradient are TensorFlow's (oneDNN's) own. The kernel
    gradient ``dK[i, j] = X_ij^T dY`` (``X_ij``: the padded input shifted by the tap's offset,
    flattened to pixels x channels) runs as ``kh * kw`` matmuls: for wide bfloat16 layers on
    small maps (a dilated ResNet's last stage) oneDNN's bfloat16 backward-weights
    convolution kernel (``jit_bf16``) reaches ~300 GFLOP/s where its bfloat16 matmul reaches
    ~380 (docs/benchmarks.md). The same sums in another order: equal to the convolution's
    gradient up to rounding (tested).

    Traced (every `fit` step), the gradient closure holds the op's inputs by weak reference:
    TensorFlow registers a traced custom gradient for the life of the process, and strong
    references there would keep the traced graph, weights included, alive after the model is
    gone (losses/graph_memory.py releases the rest of what it holds). The graph, which owns
    the inputs, is alive whenever its gradient is computed.
    """
    import tensorflow as tf

    rates = [int(r) for r in rates]

    @tf.custom_gradient
    def conv(x, k):
        y = tf.nn.conv2d(x, k, 1, "SAME", dilations=rates)
        if tf.executing_eagerly():  # recorded on the tape only: nothing outlives it
            return y, lambda dy: _matmul_gradients(x, k, dy, rates)
        x_ref, k_ref = weakref.ref(x), weakref.ref(k)
        return y, lambda dy: _matmul_gradients(x_ref(), k_ref(), dy, rates)

    return conv(x, kernel)


def _matmul_gradients(x, k, dy, rates):
    """Input and kernel gradients of ``conv2d(x, k, 'SAME', dilations=rates)`` given ``dy``."""
    import tensorflow as tf

    kh, kw, cin, cout = (int(d) for d in k.shape)
    rh, rw = rates
    th, tw = (kh - 1) * rh, (kw - 1) * rw  # TF's 'same' at stride 1: total // 2 before
    dx = tf.raw_ops.Conv2DBackpropInput(  # what TF's own Conv2D gradient runs
        input_sizes=tf.shape(x),
        filter=k,
        out_backprop=dy,
        strides=[1, 1, 1, 1],
        padding="SAME",
        dilations=[1, rh, rw, 1],
    )
    xp = tf.pad(x, [[0, 0], [th // 2, th - th // 2], [tw // 2, tw - tw // 2], [0, 0]])
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    d = tf.reshape(dy, [-1, cout])
    taps = [
        tf.matmul(
            tf.reshape(xp[:, i * rh : i * rh + h, j * rw : j * rw + w, :], [-1, cin]),
            d,
            transpose_a=True,
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return dx, tf.reshape(tf.stack(taps), [kh, kw, cin, cout])


@keras.saving.register_keras_serializable(package="zoo")
class DilatedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` for dilated ('atrous') convolutions, faster on CPU.

    Keras (TensorFlow's ``tf.nn.convolution``) computes a dilated conv as SpaceToBatchND ->
    Conv2D -> BatchToSpaceND, which pads the map to a multiple of the rate on each side: a
    rate-36 3x3 conv on a 16x16 map then costs 35x a direct one (rate 12: 5x; measured on 2
    CPU cores, forward + backward, batch 8, 512 -> 256 channels). This layer gives TensorFlow's
    Conv2D the dilation itself, which oneDNN (and cuDNN) compute directly, and drops kernel
    rows / columns that can only read padding (`pruned_taps`). Same weights, outputs and
    gradients as `Conv2D`; anything but stride 1, 'same' padding and channels-last (and, for
    the direct op, a TensorFlow without oneDNN) takes `Conv2D`'s path. The export copy
    (`export_mode`, set when the layer is created inside `zoo.build_context.exporting()`) is
    the direct dilated conv (forward only: every TensorFlow CPU build runs it, and converters
    map it to a dilated conv), pruned only when the input size is static: with an unknown size
    the pruning would be a run-time `tf.switch_case`, which converters do not take.

    Args:
        As `keras.layers.Conv2D`.

    Example:

    ```python
    conv = DilatedConv2D(256, 3, padding="same", dilation_rate=12, use_bias=False)
    y = conv(keras.ops.ones((2, 16, 16, 512)))  # (2, 16, 16, 256)
    ```

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
        arXiv:1706.05587, 2017.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.export_mode = is_exporting()  # not in the config

    def convolution_op(self, inputs, kernel):
        eligible = (
            keras.backend.backend() == "tensorflow"
            and self.rank == 2
            and self.padding == "same"
            and tuple(self.strides) == (1, 1)
            and self.data_format == "channels_last"
            and tuple(self.dilation_rate) != (1, 1)
            and self.groups == 1  # the kernel-gradient matmuls assume one group
        )
        if not eligible:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        kernel = tf.convert_to_tensor(kernel)
        if self.export_mode:
            # Converters take a Conv2D with dilations (ONNX Conv `dilations`, LiteRT CONV_2D
            # dilation factors) and every TF CPU build runs it forward; they do not take a
            # run-time branch, so the taps are pruned only where the size is static. The
            # 'same' padding is explicit (it does not depend on the size at stride 1): ONNX
            # Runtime rejects dilation with auto_pad SAME.
            def direct(x, k, rate):
                pads = [[0, 0]]
                for size, r in zip(k.shape[:2], rate):
                    total = (int(size) - 1) * r
                    pads.append([total // 2, total - total // 2])
                x = tf.pad(x, [*pads, [0, 0]])
                return tf.nn.conv2d(x, k, 1, "VALID", dilations=rate)

            if inputs.shape[1] is None or inputs.shape[2] is None:
                return direct(inputs, kernel, list(self.dilation_rate))
            return pruned_taps(inputs, kernel, self.dilation_rate, direct)

        def conv(x, k, rate):
            if rate == [1, 1]:
                return tf.nn.conv2d(x, k, 1, "SAME")
            if direct_dilation():
                if matmul_kernel_gradient(k):
                    return dilated_conv_matmul_grad(x, k, rate)
                return tf.nn.conv2d(x, k, 1, "SAME", dilations=rate)
            return tf.nn.convolution(x, k, padding="SAME", dilations=rate)

        return pruned_taps(inputs, kernel, self.dilation_rate, conv)
