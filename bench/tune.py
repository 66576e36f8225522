"""Interleaved A/B of process-level speed settings for zoo models (ResNet-34) on CPU, and the
head-to-head against segmentation_models_pytorch.

Thread pools and oneDNN options are fixed when TensorFlow starts, so each variant runs in its
own child process. The children build and warm up their model, then wait; the parent tells
them to take one step in turn (A B B A ...), so only one computes at a time and a change of
load on the machine hits every variant alike. Reported: median step time and the paired ratio
to the first variant.

    python -m bench.tune --variants default inter1 keras_bn --rounds 6
    python -m bench.tune --variants default onednn_off --precision mixed_bfloat16
    python -m bench.tune --variants default smp --smp-python /tmp/smp/bin/python
    python -m bench.tune --variants default smp --smp-python /tmp/smp/bin/python \
        --model all-smp --precision mixed_bfloat16 --out bench/results/vs_smp_all.json

`--model` takes registered names (default `unet`) or `all-smp`, every architecture that smp
has too (`SMP_ARCH`); each model is its own interleaved comparison (one JSON entry each).

Variants (`--list` prints them): thread settings, allocator and oneDNN switches, XLA,
steps_per_execution; `keras_bn` (the zoo's BatchNormalization forced onto Keras' element-wise
path) and `unfused_up` (decoders' UpsampleConcatConv2D as UpSampling2D -> Concatenate ->
Conv2D), what the zoo ran before its fast paths, swapped in here (a cloned model) only
to measure the difference; and `smp`, segmentation_models_pytorch's counterpart of the
model (`SMP_ARCH`,
ResNet-34, default arguments, one class) in a PyTorch environment (`bench/smp_reference.py`
speaks the same protocol), float32 in channels-last memory format or bfloat16 autocast for
mixed_bfloat16: the head-to-head comparison, step by step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, module_command

# zoo model -> the segmentation_models_pytorch architecture it reproduces (default arguments).
SMP_ARCH = {
    "unet": "Unet",
    "fpn": "FPN",
    "unetplusplus": "UnetPlusPlus",
    "linknet": "Linknet",
    "pspnet": "PSPNet",
    "pan": "PAN",
    "manet": "MAnet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "upernet": "UPerNet",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"doc": "what train.py runs (TensorFlow as `import zoo` starts it)"},
    "inter1": {"inter": 1, "intra": 0, "doc": "inter_op_parallelism_threads=1"},
    "intra1": {"intra": 1, "inter": 2, "doc": "one thread per op, two ops at once"},
    "onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "doc": "Eigen kernels, no oneDNN"},
    "onednn_avx2": {
        "env": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        "doc": "oneDNN held to its AVX2 kernels: an AVX2 CPU's oneDNN, on an AVX-512 one",
    },
    "fpmath_bf16": {
        "env": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
        "doc": "oneDNN may compute float32 convs/matmuls in bfloat16 (lower precision)",
    },
    "xla": {"xla": True, "doc": "compile(jit_compile=True)"},
    "spe4": {"spe": 4, "doc": "steps_per_execution=4"},
    "keras_bn": {"keras_bn": True, "doc": "BatchNormalization on Keras' ops, not FusedBatchNormV3"},
    "unfused_up": {
        "unfused_up": True,
        "doc": "U-Net decoder as UpSampling2D -> Concatenate -> Conv2D (before the fold)",
    },
    "conv_grad": {
        "conv_grad": True,
        "doc": "oneDNN's backward-weights kernel for every dilated conv (no matmul gradient)",
    },
    "smp": {
        "doc": "segmentation_models_pytorch's model of the same architecture (--smp-python)",
    },
    "bfc": {
        "env": {"TF_CPU_ALLOCATOR_USE_BFC": "true"},
        "doc": "TF's BFC allocator for CPU memory",
    },
    "spin": {
        "env": {"TF_THREAD_PINNING_MODE": "none,1,400"},
        "doc": "TF_THREAD_PINNING_MODE=none,1,400 (thread-pool spinning, Intel's setting)",
    },
    "advanced": {"env": {"TF_USE_ADVANCED_CPU_OPS": "1"}, "doc": "TF_USE_ADVANCED_CPU_OPS=1"},
    "mallopt": {"mallopt": True, "doc": "glibc malloc keeps freed large blocks (no mmap/munmap)"},
}


def _baseline_layers(model: Any, keras_bn: bool, unfused_up: bool) -> Any:
    """A copy of `model` (keras.models.clone_model) with the zoo's fast layers swapped for what
    they replace; the library's classes stay as they are.

    `keras_bn`: every zoo BatchNormalization becomes Keras' own (element-wise ops, no
    FusedBatchNormV3). `unfused_up`: every `UpsampleConcatConv2D` runs as UpSampling2D ->
    Concatenate -> 3x3 Conv2D (the same kernel and function, what the U-Net decoder ran
    before). Weights are fresh: only speed is measured.
    """
    import keras
    import tensorflow as tf
    from keras import ops

    from zoo.layers import UpsampleConcatConv2D
    from zoo.layers.blocks import SyncBatchNormalization

    class UnfusedUpsampleConcatConv2D(UpsampleConcatConv2D):
        def call(self, inputs):
            xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            up = ops.repeat(ops.repeat(xs[0], 2, axis=1), 2, axis=2)  # as UpSampling2D does
            x = tf.concat([up, *xs[1:]], axis=-1) if len(xs) > 1 else up
            return tf.nn.conv2d(x, tf.cast(self.kernel.value, x.dtype), 1, "SAME")

    keras_keys = set(keras.layers.BatchNormalization().get_config())

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if keras_bn and isinstance(layer, SyncBatchNormalization):
            return keras.layers.BatchNormalization(
                **{k: v for k, v in config.items() if k in keras_keys}
            )
        if unfused_up and isinstance(layer, UpsampleConcatConv2D):
            return UnfusedUpsampleConcatConv2D.from_config(config)
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def child(variant: str, precision: str, size: int, batch: int, model_name: str) -> None:
    """Build, warm up, then run one step per stdin line ("train" / "infer"); print seconds."""
    v = VARIANTS[variant]
    if v.get("mallopt"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    import numpy as np

    import zoo  # first, as in train.py: TensorFlow starts with the zoo's choices (oneDNN)

    # isort: split
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if v.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(v["intra"])
    if v.get("inter"):
        tf.config.threading.set_inter_op_parallelism_threads(v["inter"])
    import keras

    import losses
    from zoo.optimizers import AdamW

    if v.get("conv_grad"):
        from zoo.layers import dilated_conv2d

        dilated_conv2d.MATMUL_GRAD_MIN_ENTRIES = float("inf")
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    model = zoo.create_model(model_name, num_classes=1, input_shape=(size, size, 3))
    if v.get("keras_bn") or v.get("unfused_up"):
        model = _baseline_layers(model, bool(v.get("keras_bn")), bool(v.get("unfused_up")))
    train_model = losses.attach(model, "wbce+dice")
    keras.mixed_precision.set_dtype_policy("float32")
    spe = int(v.get("spe", 1))
    train_model.compile(
        optimizer=AdamW(1e-4),
        jit_compile=bool(v.get("xla")),
        steps_per_execution=spe,
    )
    rng = np.random.default_rng(0)
    data = {
        "image": rng.random((batch, size, size, 3), dtype=np.float32),
        "mask": (rng.random((batch, size, size, 1)) > 0.5).astype(np.int32),
        "weight": np.ones((batch, size, size, 1), np.float32),
    }
    ds = tf.data.Dataset.from_tensors(data).repeat()
    train_model.fit(ds, steps_per_epoch=2 * spe, epochs=1, verbose=0)
    fn, it = train_model.train_function, iter(ds)
    infer = tf.function(lambda x: model(x, training=False), jit_compile=bool(v.get("xla")))
    x = tf.constant(data["image"])
    infer(x).numpy()
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    print("READY " + json.dumps(versions), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        if line.strip() == "train":
            float(fn(it)["loss"])
            dt = (time.perf_counter() - t0) / spe
        else:
            infer(x).numpy()
            dt = time.perf_counter() - t0
        print(f"{dt:.6f}", flush=True)


def _spawn(variant: str, args: argparse.Namespace, model: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **VARIANTS[variant].get("env", {})}
    if variant == "smp":  # the PyTorch reference, same protocol (bench/smp_reference.py)
        script = Path(__file__).with_name("smp_reference.py")
        cmd = [args.smp_python, str(script), "--child", args.precision, "--arch", SMP_ARCH[model]]
    else:
        cmd = [*module_command("tune"), "--child", variant, "--precision", args.precision]
        cmd += ["--model", model]
    cmd += ["--size", str(args.size), "--batch", str(args.batch)]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1, cwd=ROOT
    )


def _wait_ready(proc: subprocess.Popen, variant: str) -> dict[str, Any]:
    """Wait for the child's READY line; return the versions it reports after the word."""
    for line in proc.stdout:
        if line.startswith("READY"):
            rest = line[len("READY") :].strip()
            return json.loads(rest) if rest else {}
    raise RuntimeError(f"variant {variant} exited before it was ready (rc {proc.wait()})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["default", "inter1"])
    p.add_argument(
        "--model",
        nargs="+",
        default=["unet"],
        help="registered zoo models, or all-smp (every architecture smp has; see SMP_ARCH)",
    )
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.5, help="seconds of quiet before each step")
    p.add_argument("--out", help="JSON file to append this comparison to")
    p.add_argument(
        "--smp-python",
        help="a Python with torch and segmentation_models_pytorch, for the `smp` variant",
    )
    p.add_argument("--list", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:<12} {v.get('doc', 'TensorFlow defaults')}")
        return 0
    if args.child:
        child(args.child, args.precision, args.size, args.batch, args.model[0])
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choices: {list(VARIANTS)}")
    if "smp" in args.variants and not args.smp_python:
        raise SystemExit("variant smp needs --smp-python (a Python with torch and smp)")
    models = list(SMP_ARCH) if args.model == ["all-smp"] else args.model
    if "smp" in args.variants:
        missing = [m for m in models if m not in SMP_ARCH]
        if missing:
            raise SystemExit(f"no smp counterpart for {missing}; models with one: {list(SMP_ARCH)}")
    for model in models:
        compare(model, args)
    return 0


def compare(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """One interleaved comparison of `args.variants` on `model`; printed and appended to
    `args.out`."""
    import numpy as np

    print(f"== {model}" + (f" vs smp {SMP_ARCH[model]}" if "smp" in args.variants else ""))
    load_start = [round(x, 2) for x in os.getloadavg()]
    procs, versions = {}, {}
    for v in args.variants:  # build one at a time: building is not what we time
        procs[v] = _spawn(v, args, model)
        versions[v] = _wait_ready(procs[v], v)
    times: dict[str, dict[str, list[float]]] = {v: {"train": [], "infer": []} for v in procs}
    names = list(procs)
    for kind in ("train", "infer"):
        for r in range(args.warmup + args.rounds):
            for v in names if r % 2 == 0 else names[::-1]:
                time.sleep(args.pause)  # the last child's spinning threads go to sleep
                procs[v].stdin.write(kind + "\n")
                dt = float(procs[v].stdout.readline())
                if r >= args.warmup:
                    times[v][kind].append(dt)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    base = names[0]
    rows = []
    for v in names:
        row = {"variant": v, "doc": VARIANTS[v].get("doc", "TensorFlow defaults")}
        row["versions"] = versions[v]
        for kind in ("train", "infer"):
            t = np.asarray(times[v][kind])
            ratio = float(np.median(np.asarray(times[base][kind]) / t))
            row[f"{kind}_img_s"] = float(args.batch / np.median(t))
            row[f"{kind}_speedup_vs_{base}"] = ratio
            row[f"{kind}_times_s"] = [round(float(x), 4) for x in t]
        rows.append(row)
        tx, ix = row[f"train_speedup_vs_{base}"], row[f"infer_speedup_vs_{base}"]
        print(
            f"{v:<12} train {row['train_img_s']:6.2f} img/s (x{tx:.3f})   "
            f"infer {row['infer_img_s']:6.2f} img/s (x{ix:.3f})   {row['doc']}"
        )
    result = {
        "model": model,
        "smp_arch": SMP_ARCH.get(model),
        "precision": args.precision,
        "size": args.size,
        "batch": args.batch,
        "rounds": args.rounds,
        "pause_s": args.pause,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }
    print(f"load start {result['load_start']} end {result['load_end']}")
    if args.out:
        out = Path(args.out)
        previous = json.loads(out.read_text()) if out.exists() else []
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([*previous, result], indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(main())
