"""`QKVAttention`: multi-head self-attention on a fused query-key-value projection."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class QKVAttention(keras.layers.Layer):
    """Scaled dot-product self-attention of `num_heads` heads, given the tokens' fused
    ``[queries | keys | values]`` projection (a ``Dense(3 * channels)``, timm's ``qkv``).

    Each third of the last axis is split into `num_heads` heads of ``channels / num_heads``
    features; every head attends with ``softmax(q k^T / sqrt(head_dim)) v`` and the heads are
    concatenated back to ``channels``. No weights: the projections around it are ordinary
    `Dense` layers, so ported checkpoints map one module to one layer.

    Args:
        num_heads: attention heads; must divide the channels.
        **kwargs: base layer arguments.

    Example:

    ```python
    qkv = keras.layers.Dense(3 * 192, name="attn_qkv")(tokens)
    y = QKVAttention(3, name="attn")(qkv)
    y = keras.layers.Dense(192, name="attn_proj")(y)
    ```

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(
                "Invalid value for argument `num_heads`: expected a positive integer. "
                f"Received: num_heads={num_heads!r}"
            )
        self.num_heads = num_heads

    def build(self, input_shape):
        fused = input_shape[-1]
        if fused is None or fused % (3 * self.num_heads):
            raise ValueError(
                f"QKVAttention with num_heads={self.num_heads} needs a last axis of 3 x "
                f"channels with the heads dividing the channels. Received: input_shape="
                f"{input_shape}"
            )

    def call(self, inputs):
        channels = inputs.shape[-1] // 3
        head_dim = channels // self.num_heads
        shape = ops.shape(inputs)
        # A split, not three slices: its gradient is one concatenation, where each slice's is
        # a zero-filled full-size tensor (StridedSliceGrad, 4% of a ViT-B DPT training step).
        q, k, v = (
            ops.reshape(t, (shape[0], shape[1], self.num_heads, head_dim))
            for t in ops.split(inputs, 3, axis=-1)
        )  # (batch, tokens, heads, head_dim)
        y = ops.dot_product_attention(q, k, v, scale=head_dim**-0.5)
        return ops.reshape(y, (shape[0], shape[1], channels))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 3)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}
