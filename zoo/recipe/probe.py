"""This CPU's training speed, measured, for the planner's step estimates (`recipe.cpu_probe`).

The planner sizes the U-Net's width and picks the optimizer from the steps that fit the time
budget, before the model exists (`zoo.recipe.width.cpu_steps`). Its per-pixel step costs were
measured on one machine (2 cores, AVX-512 with native bfloat16). Other CPUs differ by more than
their core count and bfloat16 flag say: oneDNN's AVX2 kernels, fewer or slower cores. So the
plan times a small convolution workload on this CPU (forward and backward passes at three
resolutions and widths of a U-Net, in the run's precision, ~0.7 s) and scales the costs by its
time over `REFERENCE_S`, the same workload's time on the reference machine.

Checked on the reference machine (2026-12-07) against the real training step of the
planned U-Nets (Keras `train_on_batch`, the nuclei's 6 x 128x128 and the MRI's 4 x 233x197 at
width 16), as ratios to the same run's mixed-bfloat16 probe and step on 2 cores: float32 1.63
by the probe against 1.57 / 1.66 for the steps; oneDNN held to its AVX2 kernels
(`ONEDNN_MAX_CPU_ISA=AVX2`, float32) 1.96 against 1.85 / 2.07; one core 1.85 against 1.75 /
1.78. The fixed rule (float32 1.5x, 2 / cores) says 1.5, 1.5 and 2.0.

The result is cached per CPU model, core count, precision and kernel settings
(`$ZOO_CACHE_DIR/cpu_probe.json`, default ~/.cache/segzoo), so repeated runs on one machine
plan alike; delete the file to measure again. The factor a run counted is in its recipe.json,
and a resumed run plans with it (`zoo.recipe.apply`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

# The probe's time on the reference machine, the one `zoo.recipe.width.CPU_STEP_US_PER_PIXEL`
# was measured on (its planned U-Nets' steps run at those costs): AMD EPYC (Zen 4), 2 cores,
# AVX-512 + bfloat16, mixed bfloat16, oneDNN: 0.0309-0.0315 s in five processes (2026-12-07;
# float32 0.0505-0.0523), ~330 GFLOP/s for the probe's 10.2 GFLOP, near the 404 GFLOP/s of a
# 4096^2 bfloat16 matmul there. The value before, 0.0170 s (2026-12-04), was timed on a faster
# machine reporting the same CPU name, whose MRI plan stepped in ~0.11 s (from the ratios it was
# checked with) against the 0.196 s the costs come from: with it every CPU counted ~1.7-1.9x
# slower than it is (the 3-minute nuclei plan got width 16 where ~500 steps of width 32 fit).
REFERENCE_S = 0.0312
# (batch, height, width, channels) of the probe's inputs: a U-Net's full-resolution stage
# (memory bound), a middle one and the bottleneck (compute bound).
PROBE_SHAPES = ((4, 192, 192, 16), (4, 48, 48, 64), (4, 24, 24, 128))
CACHE_NAME = "cpu_probe.json"


def probe_seconds(bf16: bool, repeats: int = 15) -> float:
    """Seconds of one forward + backward pass of the probe's convolutions: the fastest of
    `repeats`, which a moment's load on the machine leaves alone.

    Args:
        bf16: compute in bfloat16 (the plan's mixed_bfloat16), else float32.
        repeats: timed passes after two untimed ones (tracing, kernel selection).
    """
    import tensorflow as tf

    dtype = tf.bfloat16 if bf16 else tf.float32
    gen = tf.random.Generator.from_seed(0)
    inputs = [gen.normal(shape) for shape in PROBE_SHAPES]
    kernels = [tf.Variable(gen.normal((3, 3, s[-1], s[-1])) * 0.1) for s in PROBE_SHAPES]

    @tf.function
    def step() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf.constant(0.0)
            for x, k in zip(inputs, kernels):
                kernel = tf.cast(k, dtype)
                y = tf.nn.relu(tf.nn.conv2d(tf.cast(x, dtype), kernel, 1, "SAME"))
                y = tf.nn.conv2d(y, kernel, 1, "SAME")
                loss += tf.reduce_mean(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, kernels)

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for grad in step():
            grad.numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def probe_key(bf16: bool, cores: int) -> str:
    """What the probe's time depends on: CPU model, cores, precision, TF and oneDNN settings."""
    import tensorflow as tf

    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "-")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "-")
    precision = "bfloat16" if bf16 else "float32"
    return f"{cpu_model()} | {cores} cores | {precision} | tf {tf.__version__} | {onednn} {isa}"


def cpu_slowdown(
    bf16: bool,
    cores: int,
    *,
    cache: bool = True,
    measure: Callable[[bool], float] | None = None,
) -> float:
    """This CPU's step time over the reference machine's, from the probe (cached).

    Args:
        bf16: the run computes in bfloat16.
        cores: CPU cores the process gets (part of the cache key; the probe runs on them).
        cache: read and write `$ZOO_CACHE_DIR/cpu_probe.json`.
        measure: the timing function (None: `probe_seconds`; tests pass a fake one).

    Returns:
        The factor the planner multiplies its reference step costs by (1.0: as fast as the
        reference machine in mixed bfloat16 on 2 cores).
    """
    from zoo.recipe.folder import cache_root

    path = cache_root() / CACHE_NAME
    key = probe_key(bf16, cores)
    known: dict[str, float] = {}
    if cache and path.is_file():
        try:
            known = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            known = {}  # a damaged cache is measured again
    seconds = known.get(key)
    if seconds is None or seconds <= 0:
        seconds = float((measure or probe_seconds)(bf16))
        if cache:
            from zoo.errors import OutputError
            from zoo.outputs import write_json

            known[key] = seconds
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, known)  # atomic: concurrent runs never read half a file
            except (OSError, OutputError):
                pass  # a read-only cache: the plan still has its measurement
    return seconds / REFERENCE_S
