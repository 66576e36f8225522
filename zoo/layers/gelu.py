"""`GELU`: the exact Gaussian error linear unit, exportable to ONNX."""

from __future__ import annotations

import keras
from keras import ops

from zoo.build_context import is_exporting


@keras.saving.register_keras_serializable(package="zoo")
class GELU(keras.layers.Layer):
    """``x * Phi(x)``, the exact (erf) GELU, as PyTorch's ``nn.GELU()`` and timm's ViTs use.

    Training uses `keras.ops.gelu` (TensorFlow writes it with `erfc`); created inside
    `zoo.build_context.exporting()` the layer computes the same function as ``x (1 + erf(x /
    sqrt 2)) / 2``, since ONNX has no `erfc` op.

    Args:
        **kwargs: base layer arguments.

    Example:

    ```python
    y = keras.layers.Dense(3072, name="mlp_fc1")(tokens)
    y = GELU(name="mlp_act")(y)
    ```

    Reference:
        Hendrycks and Gimpel, "Gaussian Error Linear Units (GELUs)", 2016.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.export_mode = is_exporting()

    def call(self, inputs):
        if self.export_mode:
            return 0.5 * inputs * (1.0 + ops.erf(inputs * (2.0**-0.5)))
        return ops.gelu(inputs, approximate=False)

    def compute_output_shape(self, input_shape):
        return input_shape
