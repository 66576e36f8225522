"""Free the graphs of finished trainings: a workaround for a TensorFlow leak.

In a traced function (every Keras `fit` step), `tf.custom_gradient` registers the gradient
closure in TensorFlow's global gradient registry, where it stays for the life of the process,
and that closure keeps the forward results: symbolic tensors of the traced graph, and so the
whole graph with every tensor it captured, the model's variables among them
(tensorflow/tensorflow#97697, open in TF 2.21; keras-team/keras#20245). Keras' optimizers
all-reduce the gradients through such a custom gradient in every traced train step, even with
one device, so each `fit` of a model kept its graph, weights and optimizer slots: a U-Net /
ResNet-34 at 128x128 with Adam 420 MB per `fit`, for as long as the process lived, whatever
`keras.backend.clear_session()` and `gc.collect()` did.

The closure reads the forward results for one thing: where a result is a composite tensor
(ragged, sparse), it unpacks the incoming gradients to that structure. For plain tensors their
flattened count is all it needs, so `release_custom_gradient_graphs()` replaces plain results
with placeholders (None) of the same count: every gradient comes out as before (tested), and a
graph nothing else uses can be collected. `LossModel.fit` calls it when it returns, so a
process that trains one model after another keeps only the live ones. Where a TensorFlow
version no longer keeps the results (the upstream fix), nothing matches and it does nothing.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()


def _cells(fn: object) -> dict[str, object]:
    code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not closure:
        return {}
    return dict(zip(code.co_freevars, closure))


def release_custom_gradient_graphs() -> int:
    """Let traced graphs that only `tf.custom_gradient` registrations still hold be collected.

    Returns the number of registrations released (already released ones are not counted).
    Safe at any time: a registration keeps computing the same gradients, for graphs still in
    use too; it only stops keeping their tensors alive.

    Example:

    ```python
    for fold in folds:
        model = build(); model.fit(...)
    # LossModel.fit does this itself; other training code can call it after its fit:
    losses.graph_memory.release_custom_gradient_graphs()
    ```
    """
    try:  # private TensorFlow modules: without them there is nothing to release
        from tensorflow.python.framework import composite_tensor, ops
        from tensorflow.python.util import nest

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # pragma: no cover - layout changed upstream
        return 0
    released = 0
    with _LOCK:
        for name, entry in list(registry.items()):
            if not name.startswith("CustomGradient-"):
                continue
            tape_fn = _cells(entry.get("type")).get("tape_grad_fn")
            if tape_fn is None:
                continue
            result = _cells(tape_fn.cell_contents).get("result")
            if result is None:
                continue
            flat = nest.flatten(result.cell_contents)
            if all(x is None for x in flat) or any(
                isinstance(x, composite_tensor.CompositeTensor) for x in flat
            ):
                continue  # released before, or a structure the gradients are unpacked to
            result.cell_contents = [None] * len(flat)
            released += 1
    return released
