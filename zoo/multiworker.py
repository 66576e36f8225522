"""Make Keras 3 `model.fit` work under `tf.distribute.MultiWorkerMirroredStrategy`.

What it fixes (keras-team/keras#20585, reproduced on TensorFlow 2.21 / Keras 3.15.1):

1. `TensorFlowTrainer._maybe_symbolic_build` takes the first distributed batch and merges it
   with ``strategy.reduce("MEAN", batch, axis=None)`` only to learn input shapes and dtypes.
   `Strategy.reduce` does not accept a nest (our batches are dicts) and, under
   MultiWorkerMirroredStrategy, hands the `PerReplica` straight to the collective ops, which
   fail with ``ValueError: Attempt to convert a value (PerReplica:...)``. Every multi-worker
   `fit`/`evaluate` dies before the first step. The shapes of one local replica's batch are all
   the build needs, so we pass that instead (no cross-worker communication either).
2. `reduce_per_replica` (module-level in ``keras/src/backend/tensorflow/trainer.py``) reduces
   the step outputs of `fit`/`evaluate` (scalar metric results) in multi-worker mode with
   ``strategy.reduce("MEAN", v, axis=0)``; ``axis=0`` does not exist on a scalar, so the traced
   train step fails. We reduce with ``axis=None``, i.e. an element-wise mean across replicas:
   exactly what the single-worker branch of the same function does
   (``tf.reduce_mean(local_results, axis=0)`` over the replica axis).

Only these two functions are replaced and only when a multi-worker strategy is built
(`zoo.distribute.build_strategy` calls `apply()`); single-host runs use Keras untouched.
`apply()` is idempotent and `remove()` restores the originals (tests).

When to delete: when `tests/test_multiworker.py::test_upstream_*` fail because the unpatched
Keras trains under MultiWorkerMirroredStrategy (upstream fixed), or because the patched
functions changed shape (then re-check this module against the new Keras code first).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as _tf_trainer

_ORIGINALS: dict[str, Any] = {}


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """True when `strategy` is a MultiWorkerMirroredStrategy spanning more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return bool(strategy.extended._in_multi_worker_mode())


def _first_local_replica(value: Any, strategy: tf.distribute.Strategy) -> Any:
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    strategy = self._distribute_strategy
    if iterator is not None and is_multi_worker(strategy):
        # Same iteration as upstream; the batch of replica 0 has the per-replica shapes that
        # upstream's (failing) mean over replicas would have produced.
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(lambda v: _first_local_replica(v, strategy), batch)
            break
        iterator = None
    return _ORIGINALS["_maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)


def _reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
    if reduction in ("auto", "mean") and is_multi_worker(strategy):
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)


def is_applied() -> bool:
    """Whether `apply()` is in effect."""
    return bool(_ORIGINALS)


def apply() -> None:
    """Install the fix (idempotent).

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    zoo.multiworker.apply()  # zoo.distribute.build_strategy does this for you
    ```
    """
    if _ORIGINALS:
        return
    trainer_cls = _tf_trainer.TensorFlowTrainer
    _ORIGINALS["_maybe_symbolic_build"] = trainer_cls._maybe_symbolic_build
    _ORIGINALS["reduce_per_replica"] = _tf_trainer.reduce_per_replica
    trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
    # `make_train_function` looks the name up in the module globals at trace time.
    _tf_trainer.reduce_per_replica = _reduce_per_replica


def remove() -> None:
    """Restore the upstream functions (no-op when the fix is not applied)."""
    if not _ORIGINALS:
        return
    _tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _ORIGINALS.pop("_maybe_symbolic_build")
    _tf_trainer.reduce_per_replica = _ORIGINALS.pop("reduce_per_replica")
