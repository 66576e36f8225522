"""`DropPath`: stochastic depth for residual branches."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class DropPath(keras.layers.Layer):
    """Drops a whole residual branch per sample during training (stochastic depth).

    In training each sample's branch output is zeroed with probability `rate` and the kept
    ones are scaled by ``1 / (1 - rate)``, so the expectation is unchanged; in inference it is
    the identity. Put it on a residual branch before the addition.

    Args:
        rate: drop probability in [0, 1).
        seed: optional seed of the random masks.

    Example:

    ```python
    y = DropPath(0.1, name="block1_drop_path")(branch)
    x = keras.layers.Add()([x, y])
    ```

    Reference:
        Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(
                "Invalid value for argument `rate`: expected a probability in [0, 1). "
                f"Received: rate={rate!r}"
            )
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        # floor(keep + U[0, 1)) is 1 with probability `keep`, else 0.
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return inputs * ops.cast(mask / keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
