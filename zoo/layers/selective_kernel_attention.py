"""`SelectiveKernelAttention`: the selection step of a selective-kernel convolution (SKNet)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class SelectiveKernelAttention(keras.layers.Layer):
    """The paths of a selective-kernel convolution, weighted by a softmax over the paths.

    A selective-kernel convolution runs `num_paths` convolutions (different receptive fields)
    on the same input, sums them, pools the sum globally and maps it through a small
    bottleneck (1x1 conv-BN-ReLU, 1x1 conv) to ``num_paths * channels`` attention logits.
    This layer is the step after: the logits, laid out path-major (channel ``p * channels +
    c`` belongs to path ``p``, as timm's ``view(B, num_paths, C, H, W)`` reads them), get a
    softmax over the paths for each channel, and the output is ``sum_p weight_p * path_p``.
    The softmax is computed in float32 whatever the precision policy (the logits are
    ``(B, 1, 1, num_paths * channels)``: negligible work). No weights.

    Args:
        num_paths: number of paths (at least 2; timm's SKNets have 2: a 3x3 conv and a 3x3
            conv with dilation 2).

    Call arguments:
        inputs: a list, the logits ``(B, 1, 1, num_paths * C)`` first, then the `num_paths`
            paths ``(B, H, W, C)``.

    Example:

    ```python
    paths = [keras.ops.ones((2, 8, 8, 16)), keras.ops.zeros((2, 8, 8, 16))]
    logits = keras.ops.zeros((2, 1, 1, 32))  # equal weights: 0.5 each
    y = SelectiveKernelAttention(2)([logits, *paths])  # (2, 8, 8, 16), all 0.5
    ```

    Reference:
        Li et al., "Selective Kernel Networks", CVPR 2019.
    """

    def __init__(self, num_paths: int = 2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_paths, int) or isinstance(num_paths, bool) or num_paths < 2:
            raise ValueError(
                "Invalid value for argument `num_paths`: expected an integer >= 2. "
                f"Received: num_paths={num_paths!r}"
            )
        self.num_paths = num_paths

    def _check(self, shapes) -> None:
        if len(shapes) != self.num_paths + 1:
            raise ValueError(
                f"SelectiveKernelAttention expects the logits and {self.num_paths} paths "
                f"({self.num_paths + 1} inputs). Received: {len(shapes)} inputs"
            )
        channels = {tuple(s)[-1] for s in shapes[1:]}
        logits = tuple(shapes[0])
        if len(channels) != 1 or logits[-1] != self.num_paths * next(iter(channels)):
            raise ValueError(
                "SelectiveKernelAttention expects paths with equal channels C and logits with "
                f"num_paths * C channels. Received: shapes={[tuple(s) for s in shapes]}"
            )

    def build(self, input_shape):
        self._check(input_shape)
        self.built = True

    def call(self, inputs):
        logits, paths = inputs[0], inputs[1:]
        channels = paths[0].shape[-1]
        weights = keras.ops.reshape(
            keras.ops.cast(logits, "float32"), (-1, 1, 1, self.num_paths, channels)
        )
        weights = keras.ops.cast(keras.ops.softmax(weights, axis=-2), paths[0].dtype)
        out = weights[..., 0, :] * paths[0]
        for p in range(1, self.num_paths):
            out = out + weights[..., p, :] * paths[p]
        return out

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(num_paths=self.num_paths)
        return config
