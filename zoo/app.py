"""The training application behind `train.py`: one function per step of a run.

`train.py` composes the Hydra config and calls `run(cfg)`; each step below is small enough to
read on its own and to call from tests or notebooks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

import losses
import zoo
from zoo import config as zconfig
from zoo import optimizers, outputs, reliability
from zoo.metrics import ConfusionMatrix, MetricsLayer

log = logging.getLogger("zoo")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TF; optionally make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def build_model(cfg: DictConfig) -> keras.Model:
    """The inference model named by `cfg.model` (build it inside the strategy scope)."""
    name, kwargs = zconfig.model_kwargs(cfg)
    return zoo.create_model(name, **kwargs)


def build_training_model(model: keras.Model, cfg: DictConfig, info: Any) -> keras.Model:
    """`losses.attach` plus in-graph Dice/IoU, so `fit` shows every loss term and the metrics."""
    spec, options = zconfig.loss_spec(cfg)
    # Metrics see the mask through the graph, like the loss terms; under a distribution
    # strategy their confusion counts are summed over replicas, so val_dice is exact.
    metrics = MetricsLayer(info.num_classes, info.ignore_index, name="seg_metrics")
    return losses.attach(
        model, spec, mode=info.mode, ignore_index=info.ignore_index, metrics=[metrics], **options
    )


def build_optimizer(cfg: DictConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Optimizer and learning-rate schedule from `cfg.trainer`."""
    t = cfg.trainer
    lr: Any = t.learning_rate
    if t.schedule == "cosine":
        warmup = min(t.warmup_steps, max(total_steps - 1, 0))
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else t.learning_rate,
            decay_steps=max(total_steps - warmup, 1),
            alpha=t.min_lr_ratio,
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    common = {"learning_rate": lr, "clipnorm": t.clipnorm}
    if t.optimizer == "adamw":
        opt = optimizers.AdamW(weight_decay=t.weight_decay, **common)
        # Decay conv/dense kernels only: decaying BN scales and biases hurts and is unusual.
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    elif t.optimizer == "adam":
        opt = optimizers.Adam(**common)
    else:
        opt = keras.optimizers.SGD(momentum=t.momentum, nesterov=True, **common)
    return opt


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the bare inference model whenever the monitored value improves (atomically).

    Keras' ModelCheckpoint would save the training model with its loss inputs; users want the
    model that takes images. Non-finite weights are never saved.
    """

    def __init__(self, model: keras.Model, path: Path, monitor: str, mode: str) -> None:
        super().__init__()
        self.inference_model = model
        self.path = Path(path)
        self.monitor = monitor
        self.better = np.greater if mode == "max" else np.less
        self.best = -np.inf if mode == "max" else np.inf
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or not self.better(value, self.best):
            return
        if not outputs.weights_finite(self.inference_model):
            return
        self.best, self.best_epoch = float(value), epoch
        outputs.save_model(self.inference_model, self.path)


def build_callbacks(
    cfg: DictConfig, model: keras.Model, out_dir: Path, has_val: bool
) -> tuple[list[keras.callbacks.Callback], BestModelCheckpoint | None]:
    """NaN guard (first, see zoo.reliability), best checkpoint, early stopping, logs, TensorBoard.

    `train` appends the backup callback last, so backups record what these callbacks did.
    """
    t = cfg.trainer
    cbs: list[keras.callbacks.Callback] = []
    if t.nan_guard:
        cbs.append(reliability.NonFiniteGuard())
    best = None
    if has_val:
        best = BestModelCheckpoint(
            model, out_dir / "checkpoints" / "best.keras", t.monitor, t.monitor_mode
        )
        cbs.append(best)
        if t.early_stopping_patience:
            cbs.append(
                keras.callbacks.EarlyStopping(
                    monitor=t.monitor, mode=t.monitor_mode, patience=t.early_stopping_patience
                )
            )
    cbs.append(keras.callbacks.CSVLogger(str(out_dir / "train_log.csv"), append=True))
    if t.tensorboard:
        cbs.append(
            keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), write_graph=False)
        )
    return cbs, best


def evaluate_model(
    model: keras.Model,
    dataset: Any,
    num_classes: int,
    ignore_index: int | None,
    steps: int | None = None,
) -> dict[str, float]:
    """Exact Dice/IoU (mean and per class) of an inference model over a dataset of dicts."""
    cm = ConfusionMatrix(num_classes, ignore_index, per_class=True)
    for i, batch in enumerate(dataset):
        if steps is not None and i >= steps:
            break
        cm.update_state(batch["mask"], model(batch["image"], training=False))
    return {k: float(v) for k, v in cm.result().items()}


def set_precision(precision: str) -> None:
    keras.mixed_precision.set_dtype_policy(precision)


def float32_copy(model: keras.Model) -> keras.Model:
    """Rebuild `model` under the float32 policy with the same weights (for export)."""
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        clone = model.__class__.from_config(model.get_config())
        clone.set_weights(model.get_weights())
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    return clone


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Compose -> strategy -> data -> model -> losses -> fit -> evaluate -> save.

    Continues from the last backup in `run_dir` (or `trainer.resume`) and exits with code 130
    after Ctrl-C, leaving a backup (docs/reliability.md).
    """
    from zoo import distribute
    from zoo.data import build_datasets

    t = cfg.trainer
    seed_everything(cfg.seed, cfg.deterministic)
    set_precision(t.precision)
    strategy = distribute.build_strategy(cfg.strategy)
    replicas = distribute.num_replicas(strategy)
    resumed = reliability.find_resume(t.resume, run_dir)
    start_step = resumed.step if resumed else 0
    bundle = build_datasets(
        cfg.data,
        global_batch_size=cfg.data.batch_size * replicas,
        seed=cfg.seed,
        start_step=start_step,
    )
    info = bundle.info
    steps_per_epoch = t.steps_per_epoch or info.steps_per_epoch
    config = OmegaConf.to_container(cfg, resolve=True)
    with distribute.worker_output_dir(strategy, run_dir) as out_dir:
        out_dir = Path(out_dir)
        with strategy.scope():
            model = build_model(cfg)
            train_model = build_training_model(model, cfg, info)
            train_model.compile(
                optimizer=build_optimizer(cfg, steps_per_epoch * t.epochs),
                jit_compile=t.jit_compile,
                steps_per_execution=t.steps_per_execution,
            )
            reliability.build_optimizer_state(train_model)
        has_val = info.val_size > 0
        callbacks, best = build_callbacks(cfg, model, out_dir, has_val)
        backup = reliability.BackupCallback(
            run_dir / reliability.BACKUP_DIR,
            train_model,
            steps_per_epoch,
            t.backup_every_steps,
            stateful=callbacks,
            config=config,
            resumed=resumed,
            write=distribute.is_chief(strategy),
        )
        callbacks.append(backup)
        if (fault := reliability.fault_injector_from_env()) is not None:
            callbacks.append(fault)
        if resumed is not None:
            reliability.warn_config_changes(resumed, config)
            reliability.restore_variables(backup.variables, resumed)
            if distribute.is_chief(strategy):
                reliability.prepare_resume_dir(
                    resumed, run_dir, best.path if best else None, out_dir / "train_log.csv"
                )
            log.info(
                "Resuming from %s (step %d, %d epoch(s) done)",
                resumed.path,
                resumed.step,
                resumed.epochs_done,
            )
        log.info(
            "Training %s (%s params) with loss %s on %s: %d epochs x %d steps, "
            "global batch %d, %d replica(s)",
            cfg.model.name,
            f"{model.count_params():,}",
            cfg.loss,
            cfg.data.name,
            t.epochs,
            steps_per_epoch,
            cfg.data.batch_size * replicas,
            replicas,
        )
        start = time.perf_counter()
        try:
            reliability.resumable_fit(
                train_model,
                bundle.train,
                start_step=start_step,
                epochs=t.epochs,
                steps_per_epoch=steps_per_epoch,
                stopped=backup.stopped,
                shard=lambda ds: distribute.shard(ds, strategy),
                validation_data=distribute.shard(bundle.val, strategy) if has_val else None,
                validation_steps=t.validation_steps,
                callbacks=callbacks,
                verbose=t.verbose if distribute.is_chief(strategy) else 0,
                shuffle=False,  # the pipeline shuffles by (seed, epoch)
            )
        except KeyboardInterrupt:
            path = backup.save_on_interrupt()
            print(
                reliability.interrupted_message(path, backup.backup_dir, backup.step),
                file=sys.stderr,
            )
            raise SystemExit(130) from None
        train_time = time.perf_counter() - start
        history = backup.history  # all epochs, across resumes
        if best is not None and best.best_epoch is not None:
            model.load_weights(best.path)  # evaluate and export the best epoch, not the last
        export = model if t.precision == "float32" else float32_copy(model)
        results: dict[str, Any] = {}
        if has_val:
            results = evaluate_model(
                export, bundle.val, info.num_classes, info.ignore_index, t.validation_steps
            )
            results = {f"val_{k}": v for k, v in results.items()}
        results.update(
            {
                "model": cfg.model.name,
                "loss": OmegaConf.to_container(cfg.loss)
                if not isinstance(cfg.loss, str)
                else cfg.loss,
                "data": cfg.data.name,
                "epochs": len(history.get("loss", [])),
                "best_epoch": (best.best_epoch + 1)
                if best and best.best_epoch is not None
                else None,
                "train_time_s": round(train_time, 2),
                "params": int(model.count_params()),
                "history": history,
            }
        )
        outputs.save_model(export, out_dir / "model.keras")
        outputs.write_json(out_dir / "metrics.json", results)
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
        if distribute.is_chief(strategy):
            # Training is over: one backup (a rerun re-exports from it) is enough on disk.
            reliability.prune_backups(run_dir / reliability.BACKUP_DIR, keep=1)
        if has_val and t.num_overlays > 0 and distribute.is_chief(strategy):
            images, masks = bundle.val_images(t.num_overlays)
            logits = export.predict(images, verbose=0)
            outputs.write_overlays(
                out_dir / "overlays", images, masks, logits, info.num_classes, info.ignore_index
            )
    if "val_dice" in results:
        print(
            f"Validation Dice: {results['val_dice']:.4f}  IoU: {results['val_iou']:.4f}  "
            f"({train_time:.0f} s training)"
        )
    return results


def run(cfg: DictConfig, run_dir: str | os.PathLike) -> Any:
    """Entry point used by train.py: validate, then train / evaluate / predict."""
    zconfig.validate(cfg)
    run_dir = Path(run_dir)
    if cfg.mode == "train":
        results = train(cfg, run_dir)
        return results.get(cfg.trainer.monitor, results.get("val_dice"))
    from zoo import predict

    if cfg.mode == "evaluate":
        return predict.evaluate_checkpoint(cfg, run_dir)
    return predict.predict_folder(
        cfg.checkpoint, cfg.predict.input, cfg.predict.output, cfg.predict.threshold
    )
