"""`ChannelSplit`: a tensor's channels cut into equal consecutive groups, one output each."""

from __future__ import annotations

import keras

from zoo.checks import check_positive_int


@keras.saving.register_keras_serializable(package="zoo")
class ChannelSplit(keras.layers.Layer):
    """Splits the last axis into `num_splits` equal consecutive parts (a list of tensors).

    What ``torch.split(x, width, dim=1)`` does inside a block (Res2Net's scales, ResNeSt's
    radix splits), as a layer, so the functional graph keeps one conv and one batch norm
    before the split (the checkpoints' layout) and saves without a Lambda.

    Args:
        num_splits: how many parts (at least 2); it must divide the channels.
        **kwargs: base layer arguments.

    Example:

    ```python
    x = conv_bn_act(x, 4 * 26, 1, "block_conv1")
    a, b, c, d = ChannelSplit(4, name="block_split")(x)  # 26 channels each
    ```

    Reference:
        Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021.
    """

    def __init__(self, num_splits: int, **kwargs):
        super().__init__(**kwargs)
        num_splits = check_positive_int("num_splits", num_splits)
        if num_splits < 2:
            raise ValueError(
                "Invalid value for argument `num_splits`: expected an integer of at least 2. "
                f"Received: num_splits={num_splits!r}"
            )
        self.num_splits = num_splits

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.num_splits:
            raise ValueError(
                f"ChannelSplit {self.name!r} needs a last axis divisible by num_splits="
                f"{self.num_splits}. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        return keras.ops.split(inputs, self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        part = (*input_shape[:-1], input_shape[-1] // self.num_splits)
        return [part] * self.num_splits

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}
