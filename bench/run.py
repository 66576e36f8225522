"""Benchmarks: throughput, FLOPs and efficiency, loss-wrapper overhead, input pipeline, memory.

Every subcommand prints a table and writes one JSON file (merged into `--out` when it exists)
that carries the machine facts (CPU, cores, versions, threads, load average at start and end).
Step times are medians over timed steps after warm-up; variants that are compared run
interleaved (A B B A ...) in one process, so a load change on the machine hits both alike.

    python bench/run.py all --out bench/results/cpu.json          # the full run (~15 min, 2 cores)
    python bench/run.py throughput --models unet --xla off        # one part
    python bench/run.py report bench/results/cpu.json --doc docs/benchmarks.md
    python bench/run.py all --smoke --out /tmp/smoke.json         # tiny models, 1-2 steps (CI)

See docs/benchmarks.md for the method and the numbers of this project's CI machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Quiet TF's C++ start-up banner; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SUBCOMMANDS = ("throughput", "flops", "overhead", "pipeline", "memory")
PRECISIONS = ("float32", "mixed_bfloat16")
LOSS_SPEC = "wbce+dice"
DOC_START = "<!-- bench:tables:start -->"
DOC_END = "<!-- bench:tables:end -->"


# --------------------------------------------------------------------------- settings


class Settings:
    """Sizes and step counts of one run (full or `--smoke`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke = bool(args.smoke)
        self.size = args.size or (64 if self.smoke else 256)
        self.batch = args.batch or (2 if self.smoke else 8)
        self.classes = 1
        self.warmup = args.warmup if args.warmup is not None else (1 if self.smoke else 2)
        self.steps = args.steps or (1 if self.smoke else 6)
        # Smoke mode keeps CI fast: one model, float32, graph mode unless asked otherwise
        # (each extra variant costs a trace, and an XLA compile takes tens of seconds).
        self.precisions = tuple(args.precisions or (("float32",) if self.smoke else PRECISIONS))
        xla = args.xla or ("off" if self.smoke else "both")
        self.xla = {"off": (False,), "on": (True,), "both": (False, True)}[xla]
        self.spe = int(args.steps_per_execution)
        self.models = list(args.models) if args.models else (["unet"] if self.smoke else None)

    def model_kwargs(self, name: str) -> dict[str, Any]:
        import zoo

        return dict(zoo.model_info(name).tiny_config) if self.smoke else {}

    def model_names(self) -> list[str]:
        import zoo

        return self.models or zoo.list_models()

    def as_dict(self) -> dict[str, Any]:
        return {
            "smoke": self.smoke,
            "input_size": [self.size, self.size],
            "batch": self.batch,
            "num_classes": self.classes,
            "warmup_steps": self.warmup,
            "timed_steps": self.steps,
            "steps_per_execution": self.spe,
            "loss": LOSS_SPEC,
            "optimizer": "adamw",
        }


# --------------------------------------------------------------------------- machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def machine_facts() -> dict[str, Any]:
    """CPU, cores, library versions and thread settings of this process."""
    import keras
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "onednn": onednn,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        # 0 = TensorFlow's default (one thread per usable core).
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "git_commit": commit,
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- timing


def interleave(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each fn, calls interleaved A B B A A B ... after `warmup` calls each.

    Reversing the order every round keeps a slow drift of the machine from favouring one.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs, np.float64))) if len(xs) else float("nan")


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i] (interleaved pairs share the machine's state)."""
    return median([x / y for x, y in zip(a, b)])


def _set_policy(precision: str) -> None:
    import keras

    keras.mixed_precision.set_dtype_policy(precision)


# --------------------------------------------------------------------------- models and data


def synthetic_batch(batch: int, size: int, classes: int = 1, seed: int = 0) -> dict[str, Any]:
    """A fixed {"image", "mask", "weight"} batch (the input pipeline is measured separately)."""
    rng = np.random.default_rng(seed)
    image = rng.random((batch, size, size, 3), dtype=np.float32)
    if classes == 1:
        mask = (rng.random((batch, size, size, 1)) > 0.5).astype(np.int32)
    else:
        mask = rng.integers(0, classes, (batch, size, size, 1), dtype=np.int32)
    weight = rng.uniform(0.5, 2.0, (batch, size, size, 1)).astype(np.float32)
    return {"image": image, "mask": mask, "weight": weight}


def build_model(name: str, s: Settings, precision: str, size: int | None = None) -> Any:
    """The inference model `name` built under `precision` (the global policy is restored)."""
    import keras

    import zoo

    size = size or s.size
    _set_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        return zoo.create_model(
            name, num_classes=s.classes, input_shape=(size, size, 3), **s.model_kwargs(name)
        )
    finally:
        _set_policy("float32")


def _optimizer() -> Any:
    from zoo.optimizers import AdamW  # what trainer.optimizer=adamw builds

    return AdamW(learning_rate=1e-4)


def train_step_fn(
    train_model: Any, data: Any, batch: int, spe: int = 1
) -> tuple[Callable[[], Any], int]:
    """Warm the compiled training model up (trace, build the optimizer) and return a function
    running one execution (`spe` steps) and waiting for its loss, with the images it trains on.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensors(data).repeat()
    train_model.fit(ds, steps_per_epoch=spe, epochs=1, verbose=0)
    fn = train_model.make_train_function() or train_model.train_function
    it = iter(ds)

    def step() -> Any:
        logs = fn(it)
        return float(logs["loss"])

    return step, batch * spe


def attached_train_model(
    name: str, s: Settings, precision: str, xla: bool, size: int | None = None
) -> Any:
    """`losses.attach(model, "wbce+dice")` compiled with AdamW (the zoo's training path)."""
    import losses

    model = build_model(name, s, precision, size)
    _set_policy(precision)
    try:
        train_model = losses.attach(model, LOSS_SPEC)
    finally:
        _set_policy("float32")
    train_model.compile(optimizer=_optimizer(), jit_compile=xla, steps_per_execution=s.spe)
    return model, train_model


def infer_fn(model: Any, images: Any, xla: bool) -> Callable[[], Any]:
    import tensorflow as tf

    f = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    x = tf.constant(images)

    def step() -> Any:
        return f(x).numpy()

    return step


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


# --------------------------------------------------------------------------- loss overhead


def plain_loss() -> Any:
    """The plain-Keras equivalent of `attach(..., "wbce+dice")`: one `keras.losses.Loss`
    summing the same terms, each taking the weight map as `sample_weight`."""
    import keras

    import losses

    class SumOfTerms(keras.losses.Loss):
        def __init__(self) -> None:
            super().__init__(name="wbce_plus_dice", dtype="float32")
            self.terms = [losses.get_loss("wbce"), losses.get_loss("dice")]

        def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            return sum(t(y_true, y_pred, sample_weight) for t in self.terms)

        def call(self, y_true: Any, y_pred: Any) -> Any:  # pragma: no cover - __call__ is used
            return sum(t.call(y_true, y_pred) for t in self.terms)

    return SumOfTerms()


def run_overhead(s: Settings) -> dict[str, Any]:
    """`losses.attach` vs plain `compile(loss=...)` + `sample_weight`, interleaved, float32."""
    import keras

    name = "unet"
    rows = []
    # A 2% target needs many pairs: single steps vary by ~3-5% on a quiet 2-core machine.
    rounds = max(s.steps, 2) if s.smoke else max(4 * s.steps, 24)
    for xla in s.xla:
        data = synthetic_batch(s.batch, s.size, s.classes)
        _, attached = attached_train_model(name, s, "float32", xla)
        plain = build_model(name, s, "float32")
        plain.compile(
            optimizer=_optimizer(), loss=plain_loss(), jit_compile=xla, steps_per_execution=s.spe
        )
        tuple_data = (data["image"], data["mask"], data["weight"])
        fns = {
            "attach": train_step_fn(attached, data, s.batch, s.spe)[0],
            "plain": train_step_fn(plain, tuple_data, s.batch, s.spe)[0],
        }
        t = interleave(fns, rounds, s.warmup)
        ratio = paired_ratio(t["attach"], t["plain"])
        row = {
            "model": name,
            "precision": "float32",
            "xla": xla,
            "attach_step_s": median(t["attach"]),
            "plain_step_s": median(t["plain"]),
            "ratio": ratio,
            "overhead_pct": 100 * (ratio - 1),
            "rounds": rounds,
            "attach_times_s": [round(x, 4) for x in t["attach"]],
            "plain_times_s": [round(x, 4) for x in t["plain"]],
        }
        rows.append(row)
        print(
            f"overhead {name} xla={xla}: attach {row['attach_step_s']:.3f} s, plain "
            f"{row['plain_step_s']:.3f} s per step -> {row['overhead_pct']:+.1f}% (target <= 2%)"
        )
        keras.backend.clear_session()
    return {"rows": rows, "target_pct": 2.0}


# --------------------------------------------------------------------------- input pipeline


def write_folder_fixture(root: Path, n: int, size: int, seed: int = 0) -> None:
    """`n` random RGB PNGs with binary (0/255) PNG masks under root/images and root/masks."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 5]
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8) * 255
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")


def _time_batches(iterator: Any, batches: int, batch: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        next(iterator)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(iterator)
    _ = b["image"].numpy() if hasattr(b["image"], "numpy") else b["image"]
    dt = time.perf_counter() - t0
    return {"img_s": batches * batch / dt, "batches": batches}


class _PyDatasetPipeline:
    """The zoo's training pipeline (same load + augment graph per sample) as a PyDataset."""

    @staticmethod
    def build(bundle_store: Any, size: tuple[int, int], aug: Any, batch: int, workers: int):
        import keras
        import tensorflow as tf

        from zoo.data import pipeline

        @tf.function
        def sample(index: Any) -> Any:
            image, mask, weight = bundle_store.load(index)
            key = pipeline.sample_key(0, 0, index)
            return pipeline.augment(image, mask, weight, key, size, aug)

        n = bundle_store.size

        class Batches(keras.utils.PyDataset):
            def __len__(self) -> int:
                return n // batch

            def __getitem__(self, i: int) -> dict[str, np.ndarray]:
                items = [sample(tf.constant(i * batch + j, tf.int64)) for j in range(batch)]
                return {k: np.stack([it[k].numpy() for it in items]) for k in items[0]}

        return Batches(workers=workers, use_multiprocessing=False, max_queue_size=16)


def _pipeline_case(
    label: str, cfg: dict[str, Any], batch: int, s: Settings, pydataset: bool
) -> dict[str, Any]:
    from zoo.data import build_datasets, pipeline
    from zoo.data.config import parse_data_config

    t0 = time.perf_counter()
    bundle = build_datasets(cfg, global_batch_size=batch, seed=0)
    load_s = time.perf_counter() - t0
    batches = 2 if s.smoke else 40
    out = {"case": label, "config": cfg, "batch": batch, "build_s": load_s}
    out["tf_data"] = _time_batches(iter(bundle.train), batches, batch, 1 if s.smoke else 3)
    if pydataset:
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        c = parse_data_config(cfg)
        # The same samples: rebuild the store the way build_datasets does.
        from zoo.data import build as build_mod

        if c.name == "folder":
            from zoo.data import folder

            train = folder.load(c)[0]
        else:
            train = build_mod._shapes(c)[0]
        from zoo.data import weights

        counts = weights.class_counts(train[1], c.num_classes)
        samples = build_mod.make_samples(*train, c, weights.class_balance_weights(counts))
        store = pipeline.SampleStore(samples)
        size = (c.image_size[0], c.image_size[1])
        workers = os.cpu_count() or 1
        pyds = _PyDatasetPipeline.build(store, size, c.augment, batch, workers)
        adapter = PyDatasetAdapter(pyds, shuffle=False)
        ds = adapter.get_tf_dataset().repeat()
        out["pydataset"] = _time_batches(iter(ds), min(batches, len(pyds) - 1), batch, 1)
        out["pydataset"]["workers"] = workers
    return out


def _train_img_s(name: str, s: Settings, size: int, batch: int) -> float:
    """Float32 training images/s of `name` at size x size (the pipeline's consumer)."""
    import keras

    _, train_model = attached_train_model(name, s, "float32", False, size=size)
    data = synthetic_batch(batch, size, s.classes)
    step, per_call = train_step_fn(train_model, data, batch, s.spe)
    t = interleave({"t": step}, s.steps, s.warmup)["t"]
    keras.backend.clear_session()
    return per_call / median(t)


def run_pipeline(s: Settings, throughput: dict[str, Any] | None) -> dict[str, Any]:
    """tf.data images/s of the default (shapes) and folder pipelines vs training images/s."""
    cases = []
    with tempfile.TemporaryDirectory(prefix="segzoo_bench_") as tmp:
        root = Path(tmp) / "folder"
        folder_n = 16 if s.smoke else 96
        write_folder_fixture(root, folder_n, int(s.size * 1.25))
        # The default training config (conf/data/shapes.yaml) and its model's throughput.
        shapes_size = 32 if s.smoke else 96
        shapes_batch = 4 if s.smoke else 16
        shapes_cfg = {
            "name": "shapes",
            "image_size": [shapes_size, shapes_size],
            "train_size": 32 if s.smoke else 512,
            "val_size": 0 if s.smoke else 64,
            "weight_map": "unet_border",
            "cache": False,
        }
        folder_cfg = {
            "name": "folder",
            "root": str(root),
            "image_size": [s.size, s.size],
            "weight_map": "unet_border",
            "val_ratio": 0.1,
            "augment": {"vflip": True, "rot90": True},
            "cache": False,
        }
        cases.append(_pipeline_case("shapes (default config)", shapes_cfg, shapes_batch, s, True))
        cases.append(_pipeline_case("folder", folder_cfg, s.batch, s, True))
    consumer = "unet"
    train_default = _train_img_s(consumer, s, shapes_size, shapes_batch)
    train_bench = None
    for row in (throughput or {}).get("rows", []):
        if (row["model"], row["precision"], row["xla"]) == (consumer, "float32", False):
            train_bench = row.get("train_img_s")
    if train_bench is None:
        train_bench = _train_img_s(consumer, s, s.size, s.batch)
    for case, train in zip(cases, (train_default, train_bench)):
        case["train_img_s"] = train
        case["train_model"] = f"{consumer} float32"
        case["tf_data_x_train"] = case["tf_data"]["img_s"] / train
        if "pydataset" in case:
            case["pydataset_x_train"] = case["pydataset"]["img_s"] / train
        print(
            f"pipeline {case['case']:<24} tf.data {case['tf_data']['img_s']:8.1f} img/s "
            f"({case['tf_data_x_train']:.1f}x training {train:.2f} img/s)"
            + (
                f"   PyDataset {case['pydataset']['img_s']:8.1f} img/s"
                if "pydataset" in case
                else ""
            )
        )
    return {"cases": cases, "target_x": 10.0}


# --------------------------------------------------------------------------- memory


def _rss_high_water_mib() -> float:
    """This process's peak resident memory (MiB).

    `VmHWM` rather than `ru_maxrss`: on Linux `ru_maxrss` survives `exec`, so a child would
    report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(name: str, s: Settings, precision: str) -> dict[str, Any]:
    """Runs in a fresh process: peak RSS of building + training `name` for a few steps."""
    import tensorflow as tf  # noqa: F401 - imported first so its RSS is in the baseline

    import zoo  # noqa: F401

    base = _rss_high_water_mib()
    _, train_model = attached_train_model(name, s, precision, False)
    step, _ = train_step_fn(train_model, synthetic_batch(s.batch, s.size, s.classes), s.batch)
    for _ in range(max(s.steps // 2, 1)):
        step()
    return {
        "model": name,
        "precision": precision,
        "import_rss_mib": base,
        "peak_rss_mib": _rss_high_water_mib(),
    }


def run_memory(s: Settings, argv_common: list[str]) -> dict[str, Any]:
    """Peak RSS of a training run per model, each in its own subprocess."""
    rows = []
    for name in s.model_names():
        cmd = [sys.executable, str(Path(__file__).resolve()), "_memory_child", "--models", name]
        cmd += argv_common
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            row = {"model": name, "error": (proc.stderr or proc.stdout)[-500:]}
        else:
            row = json.loads(lines[-1])
        rows.append(row)
        if "error" in row:
            print(f"memory {name:<14} ERROR {row['error']}")
        else:
            print(
                f"memory {name:<14} peak RSS {row['peak_rss_mib']:8.0f} MiB "
                f"(after import {row['import_rss_mib']:.0f} MiB)"
            )
    return {"rows": rows}


# --------------------------------------------------------------------------- report


def _fmt(x: Any, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    """The markdown tables of a result file (what docs/benchmarks.md shows)."""
    out = []
    m = result.get("machine", {})
    st = result.get("settings", {})
    out.append(
        f"Machine: {m.get('cpu')} ({m.get('usable_cores')} cores, "
        f"{', '.join(m.get('cpu_flags', []))}), TensorFlow {m.get('tensorflow')}, "
        f"Keras {m.get('keras')}, oneDNN {m.get('onednn')}, threads intra/inter "
        f"{m.get('intra_op_threads')}/{m.get('inter_op_threads')} (0 = default). "
        f"Input {st.get('input_size')}, batch {st.get('batch')}, {st.get('num_classes')} class, "
        f"loss `{st.get('loss')}`, {st.get('optimizer')}; medians of {st.get('timed_steps')} "
        f"timed training steps (inference: x{INFER_STEPS_FACTOR}) "
        f"after {st.get('warmup_steps')} warm-up. Load average (1/5/15 min) at "
        f"start {result.get('load_start')}, at end {result.get('load_end')}; "
        f"git {m.get('git_commit')}, {result.get('date')}.\n"
    )
    thr = result.get("throughput")
    flops = result.get("flops") or {}
    eff = {(e["model"], e["precision"], e["xla"]): e for e in flops.get("efficiency", [])}
    if thr:
        out.append(
            "| model | precision | XLA | train img/s | infer img/s | train GFLOP/s | "
            "% of matmul peak |\n|---|---|---|---:|---:|---:|---:|"
        )
        for r in thr["rows"]:
            xla = "on" if r["xla"] else "off"
            if "error" in r:
                out.append(f"| {r['model']} | {r['precision']} | {xla} | error | | | |")
                continue
            e = eff.get((r["model"], r["precision"], r["xla"]), {})
            out.append(
                f"| {r['model']} | {r['precision']} | {xla} | {r['train_img_s']:.2f} | "
                f"{r['infer_img_s']:.2f} | {_fmt(e.get('train_gflop_s'), 0)} | "
                f"{_fmt(e.get('train_pct_of_peak'), 0)} |"
            )
        out.append("")
    if flops:
        peaks = ", ".join(
            f"{p}: {v['flops_per_s'] / 1e9:.0f} GFLOP/s" for p, v in flops["peak"].items()
        )
        out.append(
            f"Measured matmul peak ({flops['peak'][next(iter(flops['peak']))]['n']}² "
            f"`tf.matmul`): {peaks}.\n"
        )
        out.append(
            "| model | params (M) | forward GFLOP/img (conv+matmul) | all ops | "
            "train GFLOP/img (3x) |\n|---|---:|---:|---:|---:|"
        )
        for e in flops["models"]:
            out.append(
                f"| {e['model']} | {e['params'] / 1e6:.2f} | {e['forward_gflop_per_img']:.2f} | "
                f"{e['forward_gflop_per_img_all_ops']:.2f} | {e['train_gflop_per_img']:.2f} |"
            )
        out.append("")
    ov = result.get("overhead")
    if ov:
        out.append(
            "| loss wrapper (unet, float32) | XLA | attach s/step | plain s/step | overhead "
            "| rounds |\n|---|---|---:|---:|---:|---:|"
        )
        for r in ov["rows"]:
            out.append(
                f'| `attach(model, "wbce+dice")` vs `compile(loss=...)` + sample_weight | '
                f"{'on' if r['xla'] else 'off'} | {r['attach_step_s']:.3f} | "
                f"{r['plain_step_s']:.3f} | {r['overhead_pct']:+.1f}% | {r['rounds']} |"
            )
        out.append("")
    pl = result.get("pipeline")
    if pl:
        out.append(
            "| pipeline | image size, batch | tf.data img/s | PyDataset img/s | "
            "training img/s (unet f32) | tf.data / training |\n|---|---|---:|---:|---:|---:|"
        )
        for c in pl["cases"]:
            size = c["config"]["image_size"]
            py = c.get("pydataset", {}).get("img_s")
            out.append(
                f"| {c['case']} | {size[0]}x{size[1]}, {c['batch']} | "
                f"{c['tf_data']['img_s']:.0f} | {_fmt(py, 0)} | {c['train_img_s']:.2f} | "
                f"{c['tf_data_x_train']:.0f}x |"
            )
        out.append("")
    mem = result.get("memory")
    if mem:
        out.append("| model | peak RSS training (MiB) | after import (MiB) |\n|---|---:|---:|")
        for r in mem["rows"]:
            if "error" in r:
                out.append(f"| {r['model']} | error | |")
            else:
                out.append(
                    f"| {r['model']} | {r['peak_rss_mib']:.0f} | {r['import_rss_mib']:.0f} |"
                )
        out.append("")
    return "\n".join(out)


# our precision -> (smp_reference.py's row, how the smp side ran)
REFERENCE_PRECISION = {
    "float32": ("float32", "float32, channels-last"),
    "mixed_bfloat16": ("bfloat16_autocast", "bfloat16 autocast"),
}


def reference_markdown(result: dict[str, Any], ref: dict[str, Any]) -> str:
    """Our U-Net rows next to `bench/smp_reference.py`'s, as ratios (ours / smp)."""
    ours = {
        r["precision"]: r
        for r in result.get("throughput", {}).get("rows", [])
        if r["model"] == "unet" and not r["xla"] and "error" not in r
    }
    theirs = {r["precision"]: r for r in ref.get("rows", [])}
    out = [
        f"Against segmentation_models_pytorch {ref.get('segmentation_models_pytorch')} "
        f"(torch {ref.get('torch')}, {ref.get('threads')} threads) on this machine, "
        f"`bench/smp_reference.py`, {ref.get('date')}, load {ref.get('load_start')} -> "
        f"{ref.get('load_end')}; U-Net ResNet-34, {ref.get('size')}x{ref.get('size')}, "
        f"batch {ref.get('batch')}:\n",
        "| ours vs smp | train img/s | smp train | ratio | infer img/s | smp infer | "
        "ratio |\n|---|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, (theirs_name, how) in REFERENCE_PRECISION.items():
        a, b = ours.get(precision), theirs.get(theirs_name)
        if a is None or b is None:
            continue
        out.append(
            f"| {precision} vs {how} | {a['train_img_s']:.2f} | {b['train_img_s']:.2f} | "
            f"{a['train_img_s'] / b['train_img_s']:.2f}x | {a['infer_img_s']:.2f} | "
            f"{b['infer_img_s']:.2f} | {a['infer_img_s'] / b['infer_img_s']:.2f}x |"
        )
    out.append("")
    return "\n".join(out)


def head_to_head_markdown(entries: list[dict[str, Any]]) -> str:
    """`bench/tune.py --variants default smp` runs (a list of them, one per model and
    precision): the zoo and smp stepped in turn, ratio = median over rounds of smp's time /
    ours. One table per model (entries without a `model` are U-Net runs)."""
    groups: dict[tuple[str, str], list[str]] = {}
    versions: dict[str, Any] = {}
    for e in entries:
        by = {r["variant"]: r for r in e.get("rows", [])}
        if "default" not in by or "smp" not in by:
            continue
        ours, smp = by["default"], by["smp"]
        cells = [f"{e['precision']}", f"{e['rounds']}"]
        for kind in ("train", "infer"):
            pairs = zip(smp[f"{kind}_times_s"], ours[f"{kind}_times_s"])
            ratio = median([a / b for a, b in pairs])
            cells += [
                f"{ours[f'{kind}_img_s']:.2f}",
                f"{smp[f'{kind}_img_s']:.2f}",
                f"{ratio:.2f}x",
            ]
        cells.append(f"{e.get('date', '')}, load {e.get('load_start')} -> {e.get('load_end')}")
        key = (e.get("model", "unet"), e.get("smp_arch") or "Unet")
        groups.setdefault(key, []).append("| " + " | ".join(cells) + " |")
        versions = smp.get("versions", {})
    if not groups:
        return ""
    out = [
        "Head to head, `bench/tune.py --variants default smp` (each zoo model and its "
        f"counterpart in smp {versions.get('segmentation_models_pytorch', '?')} on torch "
        f"{versions.get('torch', '?')}, ResNet-34, in separate processes, stepped in turn "
        "A B B A; smp float32 in channels-last memory format, bfloat16 under autocast for "
        "mixed_bfloat16; ratio = median over rounds of smp's step time / ours):\n"
    ]
    for (model, arch), rows in groups.items():
        out += [
            f"`{model}` vs smp `{arch}`:\n",
            "| precision | rounds | ours train img/s | smp train | ratio | ours infer img/s | "
            "smp infer | ratio | when |\n|---|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
        ]
    return "\n".join(out)


def update_doc(doc: Path, tables: str) -> None:
    """Replace the text between the bench markers of `doc` with `tables`."""
    text = doc.read_text()
    if DOC_START not in text or DOC_END not in text:
        raise SystemExit(f"{doc} has no '{DOC_START}' / '{DOC_END}' markers")
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(f"{head}{DOC_START}\n{tables}\n{DOC_END}{tail}")


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=(*SUBCOMMANDS, "all", "report", "_memory_child"))
    p.add_argument("result", nargs="?", help="report: the result JSON to turn into tables")
    p.add_argument("--smoke", action="store_true", help="tiny models, 1-2 steps (CI)")
    p.add_argument("--models", nargs="+", help="registered names (default: all; smoke: unet)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS)
    p.add_argument("--xla", choices=("off", "on", "both"), help="default both (smoke: off)")
    p.add_argument("--size", type=int, help="input height = width (default 256; smoke 64)")
    p.add_argument("--batch", type=int, help="batch size (default 8; smoke 2)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default 6; smoke 1)")
    p.add_argument("--warmup", type=int, help="untimed steps per variant (default 2; smoke 1)")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--intra-op-threads", type=int, default=0, help="0 = TF default")
    p.add_argument("--inter-op-threads", type=int, default=0, help="0 = TF default")
    p.add_argument("--out", help="result JSON (merged into when it exists)")
    p.add_argument("--doc", help="report: markdown file whose bench markers get the tables")
    p.add_argument("--reference", help="report: bench/smp_reference.py's JSON to compare with")
    p.add_argument(
        "--head-to-head", help="report: JSON of `bench/tune.py --variants default smp` runs"
    )
    return p


def _common_argv(args: argparse.Namespace) -> list[str]:
    """Options a memory child process inherits."""
    out = []
    if args.smoke:
        out.append("--smoke")
    for flag, value in (
        ("--size", args.size),
        ("--batch", args.batch),
        ("--steps", args.steps),
        ("--warmup", args.warmup),
        ("--intra-op-threads", args.intra_op_threads or None),
        ("--inter-op-threads", args.inter_op_threads or None),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs the result JSON path")
        result = json.loads(Path(args.result).read_text())
        tables = markdown(result)
        if args.reference:
            tables += "\n" + reference_markdown(
                result, json.loads(Path(args.reference).read_text())
            )
        if args.head_to_head:
            tables += "\n" + head_to_head_markdown(json.loads(Path(args.head_to_head).read_text()))
        print(tables)
        if args.doc:
            update_doc(Path(args.doc), tables)
        return 0

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: each variant traces on purpose
    # Thread pools can only be sized before TensorFlow runs its first op.
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    s = Settings(args)

    if args.command == "_memory_child":
        precision = (args.precisions or ["float32"])[0]
        print(json.dumps(_memory_child(s.model_names()[0], s, precision)))
        return 0

    out = Path(args.out) if args.out else None
    result: dict[str, Any] = {}
    if out is not None and out.exists():
        result = json.loads(out.read_text())
    result.update(
        machine=machine_facts(),
        settings=s.as_dict(),
        load_start=load_average(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    commands = SUBCOMMANDS if args.command == "all" else (args.command,)
    t0 = time.perf_counter()
    for cmd in commands:
        print(f"== {cmd} (load {load_average()})", flush=True)
        t_part = time.perf_counter()
        if cmd == "throughput":
            # Rows of other models/variants from an earlier run of the same file are kept.
            new = run_throughput(s)
            keys = {(r["model"], r["precision"], r["xla"]) for r in new["rows"]}
            kept = [
                r
                for r in result.get("throughput", {}).get("rows", [])
                if (r["model"], r["precision"], r["xla"]) not in keys
            ]
            rows = sorted(kept + new["rows"], key=lambda r: (r["model"], r["precision"], r["xla"]))
            result["throughput"] = {"rows": rows}
        elif cmd == "flops":
            result["flops"] = run_flops(s, result.get("throughput"))
        elif cmd == "overhead":
            result["overhead"] = run_overhead(s)
        elif cmd == "pipeline":
            result["pipeline"] = run_pipeline(s, result.get("throughput"))
        elif cmd == "memory":
            result["memory"] = run_memory(s, _common_argv(args))
        result.setdefault("load_by_part", {})[cmd] = load_average()
        result.setdefault("wall_s_by_part", {})[cmd] = round(time.perf_counter() - t_part, 1)
    result["load_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t0
    print(f"== done in {result['wall_s']:.0f} s, load {result['load_end']}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
