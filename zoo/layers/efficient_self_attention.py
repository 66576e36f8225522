"""`EfficientSelfAttention`: multi-head self-attention with spatially reduced keys/values."""

from __future__ import annotations

import keras
from keras import ops

from zoo.build_context import is_exporting

# The reference initialization (timm-style): dense kernels N(0, 0.02), convolution kernels
# N(0, 2 / fan_out) (He, fan-out mode), biases zero. Keras' Glorot default trains these deep
# pre-norm stacks visibly worse from scratch.
DENSE_INIT = keras.initializers.RandomNormal(stddev=0.02)
CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="zoo")
class EfficientSelfAttention(keras.layers.Layer):
    """Self-attention over the pixels of a ``(B, H, W, C)`` map whose keys and values come
    from a copy shrunk by `sr_ratio` (a ``sr_ratio x sr_ratio`` stride-`sr_ratio` convolution
    and a layer norm): every one of the ``H * W`` queries attends to ``H * W / sr_ratio**2``
    keys, which makes attention affordable at stride 4.

    ``q = x Wq``, ``[k, v] = LN(SR(x)) Wkv``, per head ``softmax(q k^T / sqrt(d)) v``, heads
    concatenated and projected by ``Wo``. The softmax runs in float32 under mixed precision
    (the scores of a long sequence overflow or flatten in half precision); the projections and
    products run in the compute dtype. Sublayers are named ``{name}_q``, ``_k``, ``_v``,
    ``_sr``, ``_norm`` and ``_proj`` (the original checkpoints' fused ``kv`` projection is
    split into ``_k`` and ``_v`` when ported). Height and width must be multiples of
    `sr_ratio`.

    Args:
        num_heads: attention heads; must divide the channels.
        sr_ratio: spatial reduction of keys/values (1 = none).
        qkv_bias: biases in the query and key/value projections.
        epsilon: epsilon of the reduction's layer norm.

    Example:

    ```python
    y = EfficientSelfAttention(num_heads=1, sr_ratio=8)(keras.ops.ones((1, 16, 16, 32)))
    ```

    Reference:
        Wang et al., "Pyramid Vision Transformer", ICCV 2021 (spatial-reduction attention);
        Xie et al., "SegFormer", NeurIPS 2021.
    """

    def __init__(
        self,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.sr_ratio = _positive_int("sr_ratio", sr_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.epsilon = float(epsilon)
        self.export_mode = is_exporting()  # not in the config

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(
                f"Invalid value for argument `num_heads`: {self.num_heads} heads do not divide "
                f"the {channels} input channels. Received: num_heads={self.num_heads}"
            )
        # Sublayers named after this layer: their names identify them in a whole model
        # (weight porting maps layer names).
        dense = {"kernel_initializer": DENSE_INIT, "dtype": self.dtype_policy}
        name = self.name
        self.q = keras.layers.Dense(channels, use_bias=self.qkv_bias, name=f"{name}_q", **dense)
        self.k = keras.layers.Dense(channels, use_bias=self.qkv_bias, name=f"{name}_k", **dense)
        self.v = keras.layers.Dense(channels, use_bias=self.qkv_bias, name=f"{name}_v", **dense)
        self.proj = keras.layers.Dense(channels, name=f"{name}_proj", **dense)
        self.q.build(input_shape)
        kv_shape = input_shape
        if self.sr_ratio > 1:
            self.sr = keras.layers.Conv2D(
                channels,
                self.sr_ratio,
                strides=self.sr_ratio,
                kernel_initializer=CONV_INIT,
                name=f"{name}_sr",
                dtype=self.dtype_policy,
            )
            self.norm = keras.layers.LayerNormalization(
                epsilon=self.epsilon, name=f"{name}_norm", dtype=self.dtype_policy
            )
            self.sr.build(input_shape)
            kv_shape = self.sr.compute_output_shape(input_shape)
            self.norm.build(kv_shape)
        self.k.build(kv_shape)
        self.v.build(kv_shape)
        self.proj.build(input_shape)
        self.built = True

    @staticmethod
    def _probabilities(scores, head_dim: int, dtype):
        # Softmax in float32: half-precision scores over thousands of keys lose the small
        # probabilities (and float16 overflows); the matmuls stay in the compute dtype.
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        scores = ops.cast(scores, "float32") * (head_dim**-0.5)
        return ops.cast(tf.nn.softmax(scores, axis=-1), dtype)  # no size-1 axis warning

    def call(self, inputs):
        if self.export_mode:
            return self._export_call(inputs)
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = inputs.shape[-1]
        heads = self.num_heads
        head_dim = channels // heads
        q = ops.reshape(self.q(inputs), (batch, height * width, heads, head_dim))
        reduced = inputs
        if self.sr_ratio > 1:
            reduced = self.norm(self.sr(inputs))
        k = ops.reshape(self.k(reduced), (batch, -1, heads, head_dim))
        v = ops.reshape(self.v(reduced), (batch, -1, heads, head_dim))
        probs = self._probabilities(ops.einsum("bqhd,bkhd->bhqk", q, k), head_dim, q.dtype)
        out = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        out = ops.reshape(out, (batch, height, width, channels))
        return self.proj(out)

    def _export_call(self, inputs):
        """The same function without 4-D head reshapes or einsums: heads are slices of the
        channels and every product is a 3-D matmul. tf2onnx merged the head reshapes of the
        training path with the dense layers' own into one wrong reshape (keys with the batch
        and pixel axes fused; ONNX Runtime then refused the product), depending on which
        biases were zero."""

        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = inputs.shape[-1]
        head_dim = channels // self.num_heads
        q = self.q(ops.reshape(inputs, (batch, height * width, channels)))
        reduced = self.norm(self.sr(inputs)) if self.sr_ratio > 1 else inputs
        reduced = ops.reshape(reduced, (batch, -1, channels))
        k, v = self.k(reduced), self.v(reduced)
        heads = []
        for i in range(self.num_heads):
            part = slice(i * head_dim, (i + 1) * head_dim)
            qi, ki, vi = (q, k, v) if self.num_heads == 1 else (t[..., part] for t in (q, k, v))
            scores = ops.matmul(qi, ops.transpose(ki, (0, 2, 1)))
            heads.append(ops.matmul(self._probabilities(scores, head_dim, q.dtype), vi))
        out = heads[0] if self.num_heads == 1 else ops.concatenate(heads, axis=-1)
        return ops.reshape(self.proj(out), (batch, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "sr_ratio": self.sr_ratio,
            "qkv_bias": self.qkv_bias,
            "epsilon": self.epsilon,
        }
