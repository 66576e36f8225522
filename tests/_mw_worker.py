"""One worker of a two-process MultiWorkerMirroredStrategy run (tests/test_multiworker.py).

Not a test module (the leading underscore keeps pytest from collecting it). Usage:

    python tests/_mw_worker.py --ports 20001,20002 --index 0 --out result.json --run-dir DIR
        [--timeout 30] [--check-upstream]

Without --ports it trains in a single process (the reference run). With --check-upstream it
first runs `fit` on unpatched Keras, then with only the first half of the fix, and records the
errors, so tests notice when upstream changes. It then trains a tiny model through
`zoo.distribute` and writes losses, final weights, chief status and output dir to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 8
STEPS = 3


def make_data():
    """Deterministic regression data: (32, 8, 8, 3) images -> per-pixel targets."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3), dtype=np.float32)
    y = (x.mean(axis=-1, keepdims=True) > 0.5).astype("float32")
    return x, y


def make_model():
    """A tiny conv net with fixed initial weights (independent of strategy and RNG)."""
    import keras
    import numpy as np

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(1, 1),
        ]
    )
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0.0, 0.3, w.shape).astype("float32") for w in model.weights])
    return model


def fit(strategy, dataset):
    import keras

    with strategy.scope():
        model = make_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(dataset, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
    return model, history.history["loss"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", default="")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--check-upstream", action="store_true")
    args = parser.parse_args()

    if args.ports:
        workers = [f"localhost:{p}" for p in args.ports.split(",")]
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": args.index}}
        )
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    from zoo import distribute, multiworker

    name = "multi_worker" if args.ports else "default"
    strategy = distribute.build_strategy({"name": name, "timeout_s": args.timeout})
    x, y = make_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()
    dataset = distribute.shard(dataset, strategy)
    result: dict = {"applied": multiworker.is_applied(), "upstream": {}}

    if args.check_upstream:
        saved = dict(multiworker._ORIGINALS)
        multiworker.remove()
        stages = {"unpatched": {}, "only_symbolic_build_fixed": {"_maybe_symbolic_build"}}
        for stage, keep in stages.items():
            # Install only the parts of the fix named in `keep`.
            from keras.src.backend.tensorflow import trainer

            if keep:
                multiworker.apply()
                trainer.reduce_per_replica = saved["reduce_per_replica"]
            try:
                fit(strategy, dataset)
                result["upstream"][stage] = "ok"
            except Exception as err:  # recorded; the test decides what is expected
                result["upstream"][stage] = f"{type(err).__name__}: {err}"[:400]
            multiworker._ORIGINALS.clear()
            trainer.TensorFlowTrainer._maybe_symbolic_build = saved["_maybe_symbolic_build"]
            trainer.reduce_per_replica = saved["reduce_per_replica"]
        multiworker.apply()

    model, losses = fit(strategy, dataset)
    with distribute.worker_output_dir(strategy, args.run_dir) as out_dir:
        with open(os.path.join(out_dir, "log.txt"), "w") as f:
            f.write(f"losses {losses}\n")
        result["out_dir"] = out_dir
    result.update(
        chief=distribute.is_chief(strategy),
        replicas=distribute.num_replicas(strategy),
        losses=[float(v) for v in losses],
        weights=[w.tolist() for w in model.get_weights()],
        out_dir_exists_after=os.path.isdir(result["out_dir"]),
    )
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TF's multi-worker shutdown can wait on peers that already left.
    os._exit(code)
