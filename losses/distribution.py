"""Loss values under `tf.distribute`: global-batch sums and Keras' per-replica loss scaling.

Every sum behind a term (`sum(w l)`, `sum(w)`, tp / fp / fn, image counts) goes through
`global_sum`, so a replica's loss equals the single-device loss of the global batch. The only
state is a thread-local flag (`replica_local`) that keeps the sums on the local replica where a
cross-replica sync would break Keras' bookkeeping.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import keras

_STATE = threading.local()


@contextlib.contextmanager
def replica_local() -> Iterator[None]:
    """Within this block `global_sum` is the identity: sums stay on the local replica.

    Needed where a cross-replica sync inside the forward pass would break Keras'
    bookkeeping: `Layer.add_loss` keeps one list per layer that MirroredStrategy's replica
    threads share, and a sync point lets them interleave their entries.
    """
    previous = getattr(_STATE, "local", False)
    _STATE.local = True
    try:
        yield
    finally:
        _STATE.local = previous


def global_sum(x: Any) -> Any:
    """`x` summed over the replicas of a `tf.distribute` strategy (identity elsewhere).

    The value is the all-reduced sum; the gradient flows only through this replica's `x`,
    multiplied by the number of replicas. Keras scales each replica's loss by 1/replicas and
    sums the replicas' gradients, so the update equals the single-device gradient of the
    global-batch loss.
    """
    if keras.backend.backend() != "tensorflow" or getattr(_STATE, "local", False):
        return x
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    const = tf.stop_gradient(x)
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, const)
    return total + float(ctx.num_replicas_in_sync) * (x - const)


def scale_loss_for_distribution(value: Any) -> Any:
    """Divide by the replicas in sync, as Keras' own losses do under `tf.distribute`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value * (1.0 / replicas)
    return value
