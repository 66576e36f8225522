"""`PrefixTokenReadout`: DPT's use of the class token in a reassembled feature map."""

from __future__ import annotations

import keras
from keras import ops

MODES = ("cat", "add")


@keras.saving.register_keras_serializable(package="zoo")
class PrefixTokenReadout(keras.layers.Layer):
    """Brings a vision transformer's prefix (class) tokens into its patch grid.

    ``"cat"``: the first prefix token is appended to every position's channels (``2 x
    channels`` out; DPT follows it with a linear projection back and a GELU). ``"add"``: the
    mean of the prefix tokens is added to every position. No weights.

    Args:
        mode: "cat" or "add".
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[grid, prefix]``: ``(batch, h, w, channels)`` and ``(batch, prefix,
            channels)`` with at least one prefix token.

    Example:

    ```python
    y = PrefixTokenReadout("cat")([fmap, cls])
    y = GELU()(keras.layers.Dense(768)(y))
    ```

    Reference:
        Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021 (section 3,
        "Read").
    """

    def __init__(self, mode: str = "cat", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                f"Invalid value for argument `mode`: expected one of {MODES}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        grid, prefix = inputs
        shape = ops.shape(grid)
        if self.mode == "add":
            return grid + ops.mean(prefix, axis=1)[:, None, None, :]
        token = ops.broadcast_to(prefix[:, None, None, 0], shape)
        return ops.concatenate([grid, token], axis=-1)

    def compute_output_shape(self, input_shape):
        grid = tuple(input_shape[0])
        if self.mode == "add":
            return grid
        return (*grid[:-1], None if grid[-1] is None else 2 * grid[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
