"""The ONNX converter's memory fix (`zoo.export.formats._lean_tf2onnx`).

tf2onnx rewrites every node's attributes after each optimizer pass into the same NodeProto,
whose upb arena keeps the deleted ones; the fix gives each pass fresh protos and collects the
replaced graph copies. These tests show the growth it removes on a graph with one large
constant, that the converted model is the same as tf2onnx's own, and that tf2onnx and the
garbage collector are left as they were.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.export import formats
from zoo.export.graph import export_model, serving_function, signature_for

pytestmark = pytest.mark.skipif(
    bool(formats.missing_modules("onnx")),
    reason=f"ONNX export needs {formats.missing_modules('onnx')}: pip install -e '.[export]'",
)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_MB = 40  # one float32 constant of this size
PASSES = 10


STATM = Path("/proc/self/statm")


def resident_mb() -> float:
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def growth_over_passes(context) -> float:
    """Resident MB added by PASSES rewrites of a graph holding one WEIGHTS_MB constant."""
    from tf2onnx.graph import Graph

    graph = Graph([], opset=formats.ONNX_OPSET)
    graph.make_const("weights", np.ones(WEIGHTS_MB * 250_000, np.float32))
    graph.update_proto()  # the first copy into the node's proto is needed either way
    before = resident_mb()
    with context:
        for _ in range(PASSES):
            graph.update_proto()
    return resident_mb() - before


@pytest.mark.skipif(not STATM.exists(), reason="reads resident memory from /proc (Linux)")
def test_rewrites_do_not_keep_a_copy_of_the_weights_per_pass():
    plain = growth_over_passes(contextlib.nullcontext())
    lean = growth_over_passes(formats._lean_tf2onnx())
    # Each plain pass keeps one more copy (upb); the lean passes at most one or two in all.
    assert lean < 2.5 * WEIGHTS_MB, (plain, lean)
    if plain > 0.8 * PASSES * WEIGHTS_MB:  # the protobuf runtime that needs the fix
        assert lean < plain / 3


def test_replaced_graphs_are_collected_before_each_pass():
    from tf2onnx.graph import Graph

    class Cycle:
        pass

    graph = Graph([], opset=formats.ONNX_OPSET)
    graph.make_const("weights", np.ones(4, np.float32))
    gc.disable()  # only the pass may collect the cycle
    try:
        with formats._lean_tf2onnx():
            garbage = Cycle()
            garbage.self = garbage
            ref = weakref.ref(garbage)
            del garbage
            assert ref() is not None
            graph.update_proto()
            assert ref() is None
    finally:
        gc.enable()


def test_tf2onnx_and_the_collector_are_restored_even_after_an_error():
    from tf2onnx.graph import Graph, Node

    originals = (Node.update_proto, Graph.update_proto)
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError, match="inside"):
        with formats._lean_tf2onnx():
            with formats._lean_tf2onnx():  # nested (or another thread): one patch
                assert Node.update_proto is not originals[0]
                assert gc.get_freeze_count() > frozen
            assert Node.update_proto is not originals[0]
            raise RuntimeError("inside")
    assert (Node.update_proto, Graph.update_proto) == originals
    assert gc.get_freeze_count() == frozen


def _convert(serve, lean: bool):
    import tf2onnx

    with formats._lean_tf2onnx() if lean else contextlib.nullcontext():
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=serve.input_signature, opset=formats.ONNX_OPSET
        )
    return proto


def _constants(proto) -> list[tuple[tuple[int, ...], bytes]]:
    from onnx import numpy_helper

    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    arrays = [numpy_helper.to_array(t) for t in tensors]
    return sorted((a.shape, a.tobytes()) for a in arrays)


def test_lean_conversion_is_tf2onnx_own_conversion():
    import onnxruntime as ort

    model = zoo.create_model(
        "unet", num_classes=1, input_shape=(None, None, 3), **zoo.model_info("unet").tiny_config
    )
    sig = signature_for(model, "uint8", None, batch_size=None, threshold=None)
    serve = serving_function(export_model(model, None, "float32", export_paths=True), sig)
    plain, lean = _convert(serve, lean=False), _convert(serve, lean=True)

    # Node names come from tf2onnx's running counter; the graphs are compared without them.
    ops = [collections.Counter(n.op_type for n in p.graph.node) for p in (plain, lean)]
    assert ops[0] == ops[1]
    assert _constants(plain) == _constants(lean)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    outputs = []
    for proto in (plain, lean):
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(None, {session.get_inputs()[0].name: images}))
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # five exports of a tiny U-Net, each in its own interpreter: half a minute
def test_bench_export_memory_smoke_writes_json_and_table(tmp_path):
    out = tmp_path / "export_memory.json"
    cmd = [sys.executable, "-m", "bench.export_memory", "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["export"]: r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 5 and not [r["error"] for r in rows.values() if "error" in r]
    for r in rows.values():
        # The export's peak lies above the model's memory; the weights are the tiny U-Net's.
        assert r["peak_mib"] > r["model_rss_mib"] > 100 * r["weights_mib"] > 0
        assert r["export_s"] > 0
    doc = tmp_path / "benchmarks.md"
    markers = "<!-- bench:export-memory:start -->\nold\n<!-- bench:export-memory:end -->"
    doc.write_text(f"# B\n{markers}\n")
    report = [sys.executable, "-m", "bench.export_memory", "report", str(out), "--doc", str(doc)]
    proc = subprocess.run(report, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = doc.read_text()
    assert "old" not in text and "| ONNX (tf2onnx as released) | 1 |" in text
