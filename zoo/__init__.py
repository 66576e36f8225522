"""segzoo: semantic segmentation models for TensorFlow 2 / Keras 3.

Importing `zoo` registers every encoder and model (and their Keras serialization names),
so `keras.saving.load_model("model.keras")` works after `import zoo` with no custom_objects.

Imported before TensorFlow, on an x86 CPU, it also turns TensorFlow's oneDNN kernels on
(`TF_ENABLE_ONEDNN_OPTS=1`) unless that variable is set: TensorFlow enables them by itself only
on CPUs with AVX-512 VNNI / BF16 or AMX, and elsewhere (AVX2 CPUs) runs its Eigen kernels, which
train 1.1-1.5x slower (docs/benchmarks.md, "oneDNN on AVX2 CPUs").
"""

import os as _os
import platform as _platform
import sys as _sys

# Read once, when TensorFlow starts: after that import the setting can no longer change.
if "tensorflow" not in _sys.modules and _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from zoo.registry import (  # noqa: E402
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
