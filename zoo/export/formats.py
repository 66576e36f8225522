"""One converter and one runner per format.

A converter writes the serving function to a path (a SavedModel directory, a `.tflite` or
an `.onnx` file); a runner loads such a file in its own runtime (TensorFlow, the LiteRT
interpreter, ONNX Runtime) and maps a batch of images to ``{logits, probabilities, mask}``.
`zoo.export` verifies every artifact with the runner before it is moved into place, and the
tests and bench/ use the same runners.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zoo.export.graph import INPUT_NAME, OUTPUT_NAMES

FORMATS = ("saved_model", "litert", "onnx")
# None = float32.
QUANTIZATIONS: dict[str, tuple[str | None, ...]] = {
    "saved_model": (None, "float16"),
    "litert": (None, "float16", "int8", "int8-full"),
    "onnx": (None,),
}
SUFFIXES = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx"}
# Python modules each format needs beyond TensorFlow (pip install "segzoo[export]").
REQUIRES = {
    "saved_model": (),
    "litert": ("ai_edge_litert",),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
}
ONNX_OPSET = 17

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def missing_modules(format: str) -> list[str]:
    """The Python modules `format` needs that are not installed."""
    return [m for m in REQUIRES[format] if importlib.util.find_spec(m) is None]


# ----------------------------------------------------------------------------- converters


def write_saved_model(serve: Any, model: Any, path: Path) -> None:
    """A SavedModel directory with the signature ``serving_default`` (also ``.serve``)."""
    import tensorflow as tf

    module = tf.Module()
    # The function reads these variables; tracking them saves them (the Keras objects and
    # their restore functions are not needed to serve, and Keras' ExportArchive, which
    # saves them too, took 1.6x longer).
    module.model_variables = [v.value for v in model.variables]
    module.serve = serve
    signatures = {"serving_default": serve.get_concrete_function()}
    tf.saved_model.save(module, str(path), signatures=signatures)


def write_litert(
    serve: Any,
    model: Any,
    path: Path,
    quantize: str | None,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
) -> None:
    """A `.tflite` flatbuffer with the signature ``serving_default``.

    Converted from a SavedModel: from a concrete function the converter keeps Keras 3's
    variables as READ_VARIABLE ops (unfolded batch norms, transposed kernels at run time,
    and NaN outputs under XNNPack) instead of freezing them into constants.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="segzoo_litert_") as tmp:
        write_saved_model(serve, model, Path(tmp) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(Path(tmp) / "saved_model"), signature_keys=["serving_default"]
        )
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8-full":
            converter.representative_dataset = representative
            # Integer kernels throughout; the uint8 input and the float outputs keep their
            # types (the signature divides by 255 itself, and callers read probabilities).
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()
    if quantize == "int8-full":
        flatbuffer = widen_empty_ranges(flatbuffer)
    path.write_bytes(flatbuffer)


# Below this an int8 activation's scale means an empty calibrated range (see below).
MIN_INT8_SCALE = 1e-7


def widen_empty_ranges(flatbuffer: bytes) -> bytes:
    """Give int8 activations whose calibrated range is empty the scale of the range [-0.5,
    0.5] around the same zero point.

    A tensor that is constant on every calibration image (in a trained network: a unit that
    never fires, e.g. a dead one-channel level of PAN's pyramid after its ReLU) gets a scale
    near 1e-8 from the converter, and XNNPack refuses the ops that read or write it ("failed
    to prepare"). Its range of 255 * scale holds both its value and 0 (the zero point), so
    the value is 0 to within 255 * MIN_INT8_SCALE, and still 0 with the wider scale; every
    such tensor gets the same scale, so ops that need equal input and output scales keep
    them. Weights (tensors with data) are left alone: their scales fix the biases'.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    widened = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            scale = None if q is None else q.scale
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if scale is None or len(scale) != 1 or data is not None and len(data):
                continue
            if 0 < float(scale[0]) < MIN_INT8_SCALE:
                q.scale = [1.0 / 255.0]
                widened += 1
    if not widened:
        return flatbuffer
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_onnx(serve: Any, path: Path) -> None:
    """An `.onnx` file (tf2onnx, opset 17) with inputs/outputs named like the signature."""
    import onnx
    import tf2onnx

    with _lean_tf2onnx(), _without_reshape_merge():
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=serve.input_signature, opset=ONNX_OPSET
        )
    _rename_io(proto)
    # tf2onnx logs an op it cannot convert and keeps it: fail here, naming the node.
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


# tf2onnx's reshape optimizer, in about 1 process of 8 (it depends on the string hash seed,
# e.g. PYTHONHASHSEED=2 or 11), merged a fresh SegFormer's attention reshapes into a wrong one,
# on every attempt of that process; without it every seed tried converts correctly. Left out.
_SKIPPED_OPTIMIZERS = ("reshape_optimizer",)
_skip_lock = threading.Lock()
_skip_users = 0
_skipped: dict[str, Any] = {}


@contextlib.contextmanager
def _without_reshape_merge() -> Iterator[None]:
    """Run tf2onnx without the optimizer passes in `_SKIPPED_OPTIMIZERS` (shared by threads)."""
    global _skip_users
    from tf2onnx import optimizer

    passes = getattr(optimizer, "_optimizers", None)
    if not isinstance(passes, dict):  # another tf2onnx layout: left as it is
        yield
        return
    with _skip_lock:
        if _skip_users == 0:
            _skipped["all"] = list(passes.items())  # restored in this order
            for k in _SKIPPED_OPTIMIZERS:
                passes.pop(k, None)
        _skip_users += 1
    try:
        yield
    finally:
        with _skip_lock:
            _skip_users -= 1
            if _skip_users == 0:
                passes.clear()
                passes.update(_skipped.pop("all"))


# Conversions running at once (threads) share one patch of tf2onnx's classes.
_patch_lock = threading.Lock()
_patch_users = 0
_unpatched: dict[str, Any] = {}


@contextlib.contextmanager
def _lean_tf2onnx() -> Iterator[None]:
    """Let tf2onnx's optimizer passes free what they replace.

    tf2onnx runs its optimizers in rounds (36 passes for a U-Net: 12 optimizers, 3 rounds),
    each on a deep copy of the graph, and after each pass writes every node's attributes
    again into the node's `NodeProto`, after deleting the old ones. Two things kept memory:
    under protobuf's upb runtime a deleted field stays in the message's arena until the
    message itself is freed, so every pass kept one more copy of all the weights; and the
    replaced graph copies are reference cycles, freed only by a full garbage collection,
    which a process holding TensorFlow's many objects runs rarely. Exporting the default U-Net
    (93 MiB of weights) peaked at 6.5 GB resident (bench/export_memory.py). Here each pass
    starts every node from a fresh `NodeProto` (the same fields; the attributes, which
    tf2onnx rewrites next, left out), and the graph is collected before each pass, with the
    objects that existed before the conversion frozen out of the collector's scans
    (`gc.freeze`), which keeps the collections cheap: 2.8 GB, and a little faster. A tf2onnx
    without these methods is left as it is.
    """
    global _patch_users
    from onnx import NodeProto
    from tf2onnx.graph import Graph, Node

    if not all(callable(getattr(c, "update_proto", None)) for c in (Node, Graph)):
        yield
        return

    def node_update_proto(self: Any, *args: Any, **kwargs: Any) -> Any:
        old = getattr(self, "_op", None)
        if isinstance(old, NodeProto):
            del old.attribute[:]
            fresh = NodeProto()
            fresh.CopyFrom(old)
            self._op = fresh
        return _unpatched["node"](self, *args, **kwargs)

    def graph_update_proto(self: Any, *args: Any, **kwargs: Any) -> Any:
        gc.collect()
        return _unpatched["graph"](self, *args, **kwargs)

    with _patch_lock:
        if _patch_users == 0:
            _unpatched.update(node=Node.update_proto, graph=Graph.update_proto)
            Node.update_proto, Graph.update_proto = node_update_proto, graph_update_proto
            # Someone else's frozen objects (a server that froze before forking) stay so.
            _unpatched["froze"] = gc.get_freeze_count() == 0
            if _unpatched["froze"]:
                gc.freeze()
        _patch_users += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                Node.update_proto, Graph.update_proto = _unpatched["node"], _unpatched["graph"]
                if _unpatched["froze"]:
                    gc.unfreeze()


def _rename_io(proto: Any) -> None:
    """tf2onnx names the graph's ends after TF tensors (`image:0`, `Identity_1:0`): give them
    the signature's names (outputs follow the function's sorted keys)."""
    graph = proto.graph
    renames = {graph.input[0].name: INPUT_NAME}
    for out in graph.output:
        base = out.name.split(":")[0]
        for name in OUTPUT_NAMES:
            if base == name or base.endswith(f"/{name}") or base == f"Identity_{name}":
                renames[out.name] = name
    if len(renames) != 1 + len(OUTPUT_NAMES):
        # Dict outputs come back in sorted key order.
        renames.update({o.name: n for o, n in zip(graph.output, sorted(OUTPUT_NAMES))})
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    for value in (*graph.input, *graph.output):
        value.name = renames.get(value.name, value.name)


# ----------------------------------------------------------------------------- runners


def load_runner(path: str | os.PathLike, format: str, num_threads: int | None = None) -> Runner:
    """A callable mapping images (B, H, W, C) to the artifact's outputs as NumPy arrays."""
    path = Path(path)
    if format == "saved_model":
        return _saved_model_runner(path)
    if format == "litert":
        return _litert_runner(path, num_threads)
    if format == "onnx":
        return _onnx_runner(path, num_threads)
    raise ValueError(
        f"Invalid value for argument `format`: expected one of {FORMATS}. "
        f"Received: format={format!r}"
    )


def _saved_model_runner(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        out = fn(**{INPUT_NAME: tf.constant(images)})
        return {k: v.numpy() for k, v in out.items()}

    run.keep_alive = loaded  # the signature needs the loaded object's variables
    return run


def _litert_runner(path: Path, num_threads: int | None) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner("serving_default")

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        out = runner(**{INPUT_NAME: np.ascontiguousarray(images)})
        return {k: np.array(v) for k, v in out.items()}

    run.keep_alive = interpreter
    return run


def _onnx_runner(path: Path, num_threads: int | None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(names, {INPUT_NAME: np.ascontiguousarray(images)})
        return dict(zip(names, values))

    run.keep_alive = session
    return run
