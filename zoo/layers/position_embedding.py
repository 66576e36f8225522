"""`PositionEmbedding`: a vision transformer's learned absolute positions, any grid size."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


def _keys_cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (PIL's, TensorFlow's and PyTorch's
    antialiased bicubic), zero beyond |x| = 2."""
    x = ops.abs(x)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return ops.where(x <= 1.0, near, ops.where(x < 2.0, far, ops.zeros_like(x)))


def resize_weights(n_out, n_in: int):
    """The ``(n_out, n_in)`` matrix of an antialiased bicubic resize along one axis
    (half-pixel centres; the kernel widened by the scale when shrinking; each row's weights
    normalized over the taps inside the axis, as ``tf.image.resize(..., "bicubic",
    antialias=True)`` and ``F.interpolate(..., "bicubic", antialias=True)`` compute them).

    Built from elementary ops, so that a run-time `n_out` needs no resize kernel (exports to
    ONNX and LiteRT keep to their builtin ops).
    """
    n_out_f = ops.cast(n_out, "float32")
    scale = n_in / n_out_f  # source pixels per output pixel
    support = ops.maximum(scale, 1.0)
    centers = (ops.cast(ops.arange(n_out), "float32") + 0.5) * scale
    taps = ops.cast(ops.arange(n_in), "float32") + 0.5
    w = _keys_cubic((taps[None, :] - centers[:, None]) / support)
    return w / ops.sum(w, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(keras.layers.Layer):
    """Adds learned absolute position embeddings to ``prefix + h * w`` tokens.

    The embedding (variable ``pos_embed``, shape ``(1, num_prefix_tokens + gh * gw,
    channels)``) is learned for a `grid_size` of ``(gh, gw)`` patches (14 x 14 for a 224-pixel
    ViT with 16-pixel patches). For another grid its patch part is resized to ``(h, w)``
    bicubically with antialiasing (Keys' cubic, a = -0.5, widened when shrinking), the prefix
    part kept: timm's ``dynamic_img_size=True``, which segmentation_models_pytorch's DPT
    uses for other input sizes (computed as two weight matrices, `resize_weights`, which agree
    with TensorFlow's and PyTorch's antialiased bicubic resizing to float rounding). On the
    learned grid it is added unchanged.

    Args:
        grid_size: ``(gh, gw)``, the patch grid the embedding is learned for.
        num_prefix_tokens: tokens in front of the patches (1: the class token).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[tokens, grid]``: the tokens ``(batch, prefix + h * w, channels)`` and the
            patch grid ``(batch, h, w, channels)`` they were flattened from (for h and w).

    Example:

    ```python
    grid = keras.layers.Conv2D(192, 16, strides=16)(image)
    tokens = ClassToken()(grid)
    tokens = PositionEmbedding((14, 14), 1)([tokens, grid])
    ```

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (resizing the
        embedding for other resolutions: section 3.2).
    """

    def __init__(self, grid_size: Sequence[int], num_prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        ok = isinstance(grid_size, (list, tuple)) and len(grid_size) == 2
        if not ok or not all(isinstance(g, int) and g > 0 for g in grid_size):
            raise ValueError(
                "Invalid value for argument `grid_size`: expected two positive integers "
                f"(gh, gw). Received: grid_size={grid_size!r}"
            )
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                "Invalid value for argument `num_prefix_tokens`: expected an integer >= 0. "
                f"Received: num_prefix_tokens={num_prefix_tokens!r}"
            )
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens

    def build(self, input_shape):
        channels = int(input_shape[0][-1])
        gh, gw = self.grid_size
        self.pos_embed = self.add_weight(
            shape=(1, self.num_prefix_tokens + gh * gw, channels),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="pos_embed",
        )

    def _resized(self, h, w):
        gh, gw = self.grid_size
        prefix = self.pos_embed[:, : self.num_prefix_tokens]
        grid = ops.reshape(self.pos_embed[:, self.num_prefix_tokens :], (gh, gw, -1))
        # Separable: rows, then columns, each a (new, old) weight matrix.
        grid = ops.einsum("hi,ijc,wj->hwc", resize_weights(h, gh), grid, resize_weights(w, gw))
        return ops.concatenate([prefix, ops.reshape(grid, (1, -1, grid.shape[-1]))], axis=1)

    def call(self, inputs):
        tokens, grid = inputs
        h, w = grid.shape[1], grid.shape[2]
        if (h, w) == self.grid_size:
            embed = self.pos_embed
        else:  # resizing to the learned grid itself is exact, so unknown sizes need no branch
            size = ops.shape(grid)
            embed = self._resized(size[1] if h is None else h, size[2] if w is None else w)
        return tokens + ops.cast(embed, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": list(self.grid_size),
            "num_prefix_tokens": self.num_prefix_tokens,
        }
