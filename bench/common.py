"""What every benchmark shares: run settings, machine facts, interleaved timing and the
zoo's training step on a fixed batch (`losses.attach(model, "wbce+dice")` with AdamW).

Entry points import from here (`python -m bench.<name>` from the repository root puts the
root on `sys.path`, so `zoo`, `losses` and `bench` import without path edits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Quiet TF's C++ start-up banner; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def module_command(name: str, python: str | None = None) -> list[str]:
    """The command running `bench.<name>` as a module (children run with `cwd=ROOT`)."""
    import sys

    return [python or sys.executable, "-m", f"bench.{name}"]


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
    from zoo.recipe.probe import cpu_model  # zoo first: its TensorFlow start-up settings

    # isort: split
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
        "cpu": cpu_model(),
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
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
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


def set_policy(precision: str) -> None:
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
    set_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        return zoo.create_model(
            name, num_classes=s.classes, input_shape=(size, size, 3), **s.model_kwargs(name)
        )
    finally:
        set_policy("float32")


def optimizer() -> Any:
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
    set_policy(precision)
    try:
        train_model = losses.attach(model, LOSS_SPEC)
    finally:
        set_policy("float32")
    train_model.compile(optimizer=optimizer(), jit_compile=xla, steps_per_execution=s.spe)
    return model, train_model


def infer_fn(model: Any, images: Any, xla: bool) -> Callable[[], Any]:
    import tensorflow as tf

    f = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    x = tf.constant(images)

    def step() -> Any:
        return f(x).numpy()

    return step


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write `result` to `path` atomically (a crash mid-write leaves the old file whole)."""
    from zoo.outputs import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, default=float) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
