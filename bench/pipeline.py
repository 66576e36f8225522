"""The loss wrapper's overhead against plain Keras losses, the input pipeline against the
training step, and peak memory of a training run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    ROOT,
    Settings,
    attached_train_model,
    build_model,
    interleave,
    median,
    module_command,
    optimizer,
    paired_ratio,
    synthetic_batch,
    train_step_fn,
)

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
            optimizer=optimizer(), loss=plain_loss(), jit_compile=xla, steps_per_execution=s.spe
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


def rss_high_water_mib() -> float:
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

    base = rss_high_water_mib()
    _, train_model = attached_train_model(name, s, precision, False)
    step, _ = train_step_fn(train_model, synthetic_batch(s.batch, s.size, s.classes), s.batch)
    for _ in range(max(s.steps // 2, 1)):
        step()
    return {
        "model": name,
        "precision": precision,
        "import_rss_mib": base,
        "peak_rss_mib": rss_high_water_mib(),
    }


def run_memory(s: Settings, argv_common: list[str]) -> dict[str, Any]:
    """Peak RSS of a training run per model, each in its own subprocess."""
    rows = []
    for name in s.model_names():
        cmd = [*module_command("run"), "_memory_child", "--models", name]
        cmd += argv_common
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
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
