"""Throughput (train and inference images/s per model, precision and XLA) and FLOPs against
the machine's matmul peak."""

from __future__ import annotations

from typing import Any

from bench.common import (
    Settings,
    attached_train_model,
    build_model,
    infer_fn,
    interleave,
    median,
    synthetic_batch,
    train_step_fn,
)

# --------------------------------------------------------------------------- throughput


INFER_STEPS_FACTOR = 3


def run_throughput(s: Settings) -> dict[str, Any]:
    """Train and inference images/s of every model in each precision, XLA off and on."""
    import keras

    rows = []
    for name in s.model_names():
        data = synthetic_batch(s.batch, s.size, s.classes)
        train_fns, infer_fns, per_call = {}, {}, {}
        errors = {}
        for precision in s.precisions:
            for xla in s.xla:
                key = f"{precision}|{'xla' if xla else 'graph'}"
                try:
                    model, train_model = attached_train_model(name, s, precision, xla)
                    train_fns[key], per_call[key] = train_step_fn(train_model, data, s.batch, s.spe)
                    infer_fns[key] = infer_fn(model, data["image"], xla)
                except Exception as e:  # noqa: BLE001 - one failing variant must not stop the run
                    errors[key] = _error_text(e)
        train_t = interleave(train_fns, s.steps, s.warmup)
        # An inference call is ~3x cheaper than a training step and noisier: 3x the samples.
        infer_t = interleave(infer_fns, INFER_STEPS_FACTOR * s.steps, s.warmup)
        for precision in s.precisions:
            for xla in s.xla:
                key = f"{precision}|{'xla' if xla else 'graph'}"
                row: dict[str, Any] = {"model": name, "precision": precision, "xla": xla}
                if key in errors:
                    row["error"] = errors[key]
                else:
                    tt, ti = median(train_t[key]), median(infer_t[key])
                    row.update(
                        train_step_s=tt / (per_call[key] / s.batch),
                        train_img_s=per_call[key] / tt,
                        infer_img_s=s.batch / ti,
                        train_times_s=[round(t, 4) for t in train_t[key]],
                        infer_times_s=[round(t, 4) for t in infer_t[key]],
                    )
                rows.append(row)
                _print_row(row)
        del train_fns, infer_fns
        keras.backend.clear_session()
    return {"rows": rows}


def _error_text(e: BaseException) -> str:
    # TF errors start with a long Python traceback; the cause is at the end.
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {' '.join(lines[-2:])[-400:]}"


def _print_row(row: dict[str, Any]) -> None:
    mode = "xla" if row["xla"] else "graph"
    if "error" in row:
        print(f"{row['model']:<14} {row['precision']:<15} {mode:<5} ERROR {row['error']}")
        return
    print(
        f"{row['model']:<14} {row['precision']:<15} {mode:<5} "
        f"train {row['train_img_s']:7.2f} img/s   infer {row['infer_img_s']:7.2f} img/s",
        flush=True,
    )


# --------------------------------------------------------------------------- FLOPs and peak

MATMUL_OPS = (
    "Conv2D",
    "Conv2DBackpropInput",
    "DepthwiseConv2dNative",
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Einsum",
)


def forward_flops(model: Any, size: int) -> dict[str, float]:
    """Forward FLOPs per image counted by TF's profiler on the frozen inference graph.

    `conv_matmul` sums convolutions and matrix products (2 FLOPs per multiply-add), the work
    that runs at matmul speed; `total` adds every op the profiler has a FLOP count for.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(
        graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="scope", options=opts
    )
    # Per node, classified by the node's op type (the profiler's "op" view lumps all types
    # together for a graph without run metadata).
    types = {op.name: op.type for op in graph.get_operations()}
    flops, stack = {}, list(prof.children)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.float_ops and types.get(node.name) in MATMUL_OPS:
            flops[node.name] = int(node.float_ops)
    conv = sum(flops.values())
    return {"conv_matmul": float(conv), "total": float(prof.total_float_ops)}


def matmul_peak(precision: str, n: int, reps: int) -> dict[str, float]:
    """Measured FLOP/s of large square `tf.matmul`s in the compute dtype of `precision`."""
    import tensorflow as tf

    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
    a = tf.cast(tf.random.stateless_uniform((n, n), (1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), (3, 4)), dtype)
    inner = 4  # several products per call so the Python dispatch is negligible

    @tf.function
    def mm(a: Any, b: Any) -> Any:
        c = a
        for _ in range(inner):
            c = tf.matmul(c, b)
            c = c * tf.cast(1.0 / n, dtype)  # keep values bounded
        return tf.reduce_sum(tf.cast(c[:1, :1], tf.float32))

    times = interleave({"mm": lambda: mm(a, b).numpy()}, reps, 1)["mm"]
    flops = 2.0 * n**3 * inner
    return {"n": n, "flops_per_s": flops / median(times), "best_flops_per_s": flops / min(times)}


def run_flops(s: Settings, throughput: dict[str, Any] | None) -> dict[str, Any]:
    """FLOPs per image per model, peak matmul FLOP/s, and training efficiency vs the peak."""
    import keras

    n = 512 if s.smoke else 4096
    reps = 2 if s.smoke else 6
    peak = {p: matmul_peak(p, n, reps) for p in s.precisions}
    for p, v in peak.items():
        print(f"peak matmul {p:<15} {v['flops_per_s'] / 1e9:8.1f} GFLOP/s (n={n})")
    models = []
    for name in s.model_names():
        model = build_model(name, s, "float32")
        f = forward_flops(model, s.size)
        entry = {
            "model": name,
            "params": int(model.count_params()),
            "forward_gflop_per_img": f["conv_matmul"] / 1e9,
            "forward_gflop_per_img_all_ops": f["total"] / 1e9,
            "train_gflop_per_img": 3 * f["conv_matmul"] / 1e9,
        }
        models.append(entry)
        print(
            f"{name:<14} params {entry['params'] / 1e6:7.2f} M   forward "
            f"{entry['forward_gflop_per_img']:7.2f} GFLOP/img (all ops "
            f"{entry['forward_gflop_per_img_all_ops']:.2f})"
        )
        keras.backend.clear_session()
    eff = []
    for row in (throughput or {}).get("rows", []):
        m = next((e for e in models if e["model"] == row["model"]), None)
        if m is None or "train_img_s" not in row or row["precision"] not in peak:
            continue
        achieved = row["train_img_s"] * m["train_gflop_per_img"] * 1e9
        infer = row["infer_img_s"] * m["forward_gflop_per_img"] * 1e9
        pk = peak[row["precision"]]["flops_per_s"]
        eff.append(
            {
                "model": row["model"],
                "precision": row["precision"],
                "xla": row["xla"],
                "train_gflop_s": achieved / 1e9,
                "train_pct_of_peak": 100 * achieved / pk,
                "infer_gflop_s": infer / 1e9,
                "infer_pct_of_peak": 100 * infer / pk,
            }
        )
    return {"peak": peak, "models": models, "efficiency": eff}
