"""Test-session setup: quiet TensorFlow, the TF backend, and two logical CPU devices.

Two logical CPUs let MirroredStrategy tests run on a machine without GPUs; they must be
configured before TensorFlow initializes its devices, hence here, at import time.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
if _cpus:
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # devices already initialized by an earlier import
        pass
