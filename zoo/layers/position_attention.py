"""`PositionAttention`: the pairwise spatial attention of MA-Net's position-wise attention
block (and DANet's position attention module)."""

from __future__ import annotations

import keras

VARIANTS = ("smp", "standard")


@keras.saving.register_keras_serializable(package="zoo")
class PositionAttention(keras.layers.Layer):
    """Every position attends to every other: ``out_i = sum_j A_ij v_j`` with attention
    logits ``q_i . k_j`` over all pairs of the ``H*W`` positions.

    Two variants with the same inputs (and, in a model, the same weights):

    * ``"smp"``: what segmentation_models_pytorch 0.6's ``PABBlock`` computes, to reproduce
      its outputs: the softmax runs over all ``(H*W)**2`` logits of an image at once (not per
      query), and the ``(H*W, C)`` result is reshaped to ``(C, H, W)`` without a transpose,
      which mixes positions and channels (PyTorch's row-major memory, reproduced here for
      channels-last tensors).
    * ``"standard"``: the published formulation (MA-Net, DANet): a softmax per query
      position over the keys and the result kept as ``(H, W, C)``.

    The logits and the softmax are computed in float32 whatever the policy: a softmax over
    ``(H*W)**2`` entries has too few digits in bfloat16.

    Args:
        variant: "smp" (default, the reference's numbers) or "standard".

    Call arguments:
        inputs: ``[query, key, value]`` of shapes ``(B, H, W, P)``, ``(B, H, W, P)`` and
            ``(B, H, W, C)``.

    Returns:
        ``(B, H, W, C)``.

    Example:

    ```python
    q = k = keras.Input((None, None, 16))
    v = keras.Input((None, None, 64))
    y = PositionAttention("standard")([q, k, v])  # (None, None, None, 64)
    ```

    Reference:
        Fan et al., "MA-Net: A Multi-Scale Attention Network for Liver and Tumor
        Segmentation", IEEE Access 2020; Fu et al., "Dual Attention Network for Scene
        Segmentation", CVPR 2019.
    """

    def __init__(self, variant: str = "smp", **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(
                f"Invalid value for argument `variant`: expected one of {VARIANTS}. "
                f"Received: variant={variant!r}"
            )
        self.variant = variant

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        query, key, value = inputs
        shape = tf.shape(value)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        n = h * w
        q = tf.cast(tf.reshape(query, [b, n, -1]), tf.float32)
        k = tf.cast(tf.reshape(key, [b, n, -1]), tf.float32)
        logits = tf.matmul(q, k, transpose_b=True)  # (B, N, N): logits[i, j] = q_i . k_j
        if self.variant == "smp":
            attention = tf.reshape(tf.nn.softmax(tf.reshape(logits, [b, n * n])), [b, n, n])
        else:
            attention = tf.nn.softmax(logits, axis=-1)
        v = tf.reshape(value, [b, n, c])
        out = tf.matmul(tf.cast(attention, v.dtype), v)  # (B, N, C)
        if self.variant == "smp":
            # PyTorch reads the (N, C) buffer as (C, N): channel c' of position n' is
            # element c' * N + n' of the flat buffer.
            out = tf.transpose(tf.reshape(out, [b, c, n]), [0, 2, 1])
        return tf.cast(tf.reshape(out, [b, h, w, c]), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[2])

    def get_config(self):
        return {**super().get_config(), "variant": self.variant}
