"""segzoo: semantic segmentation models for TensorFlow 2 / Keras 3.

Importing `zoo` registers every encoder and model (and their Keras serialization names),
so `keras.saving.load_model("model.keras")` works after `import zoo` with no custom_objects.
"""

from zoo.registry import (
    create_encoder,
    create_model,
    encoder_info,
    list_encoders,
    list_models,
    model_info,
    register_encoder,
    register_model,
)

__version__ = "0.1.0"

# Auto-discovery, after the registry functions exist: importing zoo.encoders / zoo.models runs
# every module's registration decorator.
from zoo import encoders as encoders  # noqa: E402
from zoo import models as models  # noqa: E402
from zoo import optimizers as optimizers  # noqa: E402  (registers zoo>Adam, zoo>AdamW)

__all__ = [
    "create_encoder",
    "create_model",
    "encoder_info",
    "list_encoders",
    "list_models",
    "model_info",
    "register_encoder",
    "register_model",
]
