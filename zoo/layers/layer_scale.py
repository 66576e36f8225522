"""`LayerScale`: a learned per-channel scale of a residual branch."""

from __future__ import annotations

import keras

from zoo.checks import check_positive


@keras.saving.register_keras_serializable(package="zoo")
class LayerScale(keras.layers.Layer):
    """Multiplies the last axis by a learned vector ``gamma``, initialized to `init_value`.

    Put on a residual branch before the addition: with a small `init_value` every block
    starts close to the identity, which lets deep ConvNeXts and ViTs train (timm's ``gamma``
    / ``ls.gamma``, keras-hub's ``LayerScale``).

    Args:
        init_value: the initial value of every entry of ``gamma`` (a positive number).
        **kwargs: base layer arguments.

    Example:

    ```python
    y = keras.layers.Dense(96, name="block1_mlp_fc2")(y)
    y = LayerScale(1e-6, name="block1_gamma")(y)
    x = keras.layers.Add(name="block1_add")([x, y])
    ```

    Reference:
        Touvron et al., "Going deeper with Image Transformers", ICCV 2021.
    """

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(check_positive("init_value", init_value))

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"LayerScale {self.name!r} needs a known last axis. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        self.gamma = self.add_weight(
            name="gamma",
            shape=(int(channels),),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, inputs):
        return inputs * keras.ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}
