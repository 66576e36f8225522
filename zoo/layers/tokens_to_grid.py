"""`TokensToGrid`: a vision transformer's tokens back to a patch grid and its prefix."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class TokensToGrid(keras.layers.Layer):
    """Splits ``(batch, prefix + h * w, channels)`` tokens into the ``(batch, h, w,
    channels)`` patch grid and the ``(batch, prefix, channels)`` prefix tokens (the class
    token): the inverse of `ClassToken`'s flattening.

    Args:
        num_prefix_tokens: tokens in front of the patches (0 or more).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[tokens, grid]``; `grid` is any ``(batch, h, w, ...)`` tensor of the patch
            grid's size (the patch embedding), which gives h and w.

    Returns:
        ``[grid, prefix]``.

    Example:

    ```python
    fmap, cls = TokensToGrid(1)([tokens, patch_grid])
    ```
    """

    def __init__(self, num_prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                "Invalid value for argument `num_prefix_tokens`: expected an integer >= 0. "
                f"Received: num_prefix_tokens={num_prefix_tokens!r}"
            )
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, inputs):
        tokens, grid = inputs
        shape, size = ops.shape(tokens), ops.shape(grid)
        # Slices (ONNX takes them at a run-time token count, where a split with a computed
        # size fails); only the read blocks pass here, so their gradients cost little.
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        fmap = ops.reshape(patches, (shape[0], size[1], size[2], tokens.shape[-1]))
        return [fmap, prefix]

    def compute_output_shape(self, input_shape):
        (batch, _, channels), grid = input_shape
        return [(batch, grid[1], grid[2], channels), (batch, self.num_prefix_tokens, channels)]

    def get_config(self):
        return {**super().get_config(), "num_prefix_tokens": self.num_prefix_tokens}
