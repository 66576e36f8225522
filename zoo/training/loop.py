"""The training run behind `train.py`: set up -> build -> fit -> finalize.

Each step is one short function; `train` composes them. What must survive a kill lives in the
backup (zoo.training.backup); what a run leaves behind is written by `finalize`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from zoo import distribute, outputs
from zoo.config.exports import export_requests
from zoo.evaluation import final_scores, summary
from zoo.metrics import MetricsLayer
from zoo.saving import clone
from zoo.training import artifacts, resume
from zoo.training import backup as backups
from zoo.training import budget as budgets
from zoo.training import length as lengths
from zoo.training.averaging import averaging_optimizer, swap_averaged_weights
from zoo.training.callbacks import RunCallbacks, build_callbacks
from zoo.training.fit import fit_length
from zoo.training.optim import build_optimizer
from zoo.training.signals import Interrupted, StopRequests

log = logging.getLogger("zoo")


@dataclass
class Session:
    """Everything `fit` and `finalize` need, built by `build`."""

    run_dir: Path
    out_dir: Path
    strategy: Any
    chief: bool
    model: keras.Model
    train_model: keras.Model
    bundle: Any
    callbacks: RunCallbacks
    requests: StopRequests
    start_step: int
    length: lengths.TrainingLength
    pacer: budgets.BudgetCallback | None = None  # time budget runs


def setup(run: Any) -> Any:
    """Seeds, dtype policy and the distribution strategy."""
    keras.utils.set_random_seed(run.seed)
    if run.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_dtype_policy(run.trainer.precision)
    return distribute.build_strategy(run.strategy)


def training_metadata(info: Any, tta: str | None = None) -> dict[str, Any]:
    """What every consumer of the saved model needs to know (`SegmentationModel.metadata`).

    `tta`: the run's `predict.tta`, recorded as the model's own test-time augmentation (the
    default of its predictions, `zoo.inference.tta.model_tta`).
    """
    return {
        "mode": info.mode,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "ignore_index": info.ignore_index,
        "image_size": list(info.image_size),
        "input_scale": list(info.input_scale),  # training pixels per native pixel
        "channels": info.channels,
        "class_colors": [list(v) for v in info.class_colors] or None,  # RGB masks' colors
        "background_class": info.background_class,  # left out of the mean Dice/IoU
        "threshold": 0.5,
        "tta": tta or "none",
    }


def attach_losses(model: keras.Model, loss: Any, info: Any) -> keras.Model:
    """`losses.attach` plus in-graph Dice/IoU, so `fit` shows every loss term and the metrics."""
    import losses

    # Metrics see the mask through the graph like the loss terms; under a distribution strategy
    # their confusion counts are summed over replicas, so val_dice is exact.
    # Multilabel: Dice/IoU of each label (`dice_<label>`) besides their mean. Multiclass with
    # a background class: the mean leaves it out (data.background_class).
    multilabel = info.mode == "multilabel"
    metrics = MetricsLayer(
        info.num_classes, info.ignore_index, per_class=multilabel, multilabel=multilabel,
        class_names=list(info.class_names) if multilabel else None,
        background_class=info.background_class, name="seg_metrics",
    )  # fmt: skip
    return losses.attach(
        model, loss.spec, mode=loss.mode, ignore_index=info.ignore_index, metrics=[metrics],
        level_weights=loss.level_weights, **loss.options,
    )  # fmt: skip


def build(
    run: Any, strategy: Any, model: keras.Model, bundle: Any, resumed: Any, run_dir: Path,
    out_dir: Path,
) -> Session:  # fmt: skip
    """Training model, optimizer and callbacks; the backup's state restored when resuming."""
    t, info = run.trainer, bundle.info
    length = lengths.plan_length(t, info.steps_per_epoch, info.global_batch_size)
    chief = distribute.is_chief(strategy)
    model.metadata = training_metadata(info, run.predict.tta)
    with strategy.scope():
        train_model = attach_losses(model, run.loss, info)
        train_model.compile(
            optimizer=build_optimizer(t, length.schedule_steps(), settable=length.kind == "budget"),
            jit_compile=t.jit_compile,
            steps_per_execution=t.steps_per_execution,
        )
        backups.build_optimizer_state(train_model)
    requests = StopRequests()
    agree = distribute.max_over_workers(strategy)
    callbacks = build_callbacks(
        t, model, train_model, out_dir=out_dir, backup_dir=run_dir / backups.BACKUP_DIR,
        has_val=info.val_size > 0, length=length, config=run.resolved,
        resumed=resumed, chief=chief, requests=requests, agree=agree,
        train_batches=lambda: bundle.train_at(0),
    )  # fmt: skip
    val_batches = t.validation_steps or -(-info.val_size // info.global_batch_size)
    pacer = budgets.attach_budget(run, length, callbacks, resumed, agree, val_batches)
    if resumed is not None:
        backups.restore_variables(callbacks.backup.variables, resumed)
        if chief:
            best = callbacks.best.path if callbacks.best else None
            resume.prepare_resume_dir(resumed, run_dir, best, out_dir / "train_log.csv")
        log.info(
            "Resuming from %s (step %d, %d epoch(s) done)",
            resumed.path, resumed.step, resumed.epochs_done,
        )  # fmt: skip
    return Session(
        run_dir, out_dir, strategy, chief, model, train_model, bundle, callbacks, requests,
        resumed.step if resumed else 0, length, pacer,
    )  # fmt: skip


def fit(run: Any, s: Session) -> float:
    """Train for the run's length (from the resumed step); returns the training seconds.

    Raises:
        Interrupted: SIGINT/SIGTERM arrived; a backup was written first.
    """
    t, info = run.trainer, s.bundle.info
    log.info(
        "Training %s (%s params) with loss %s on %s: %s, global batch %d, %d replica(s)",
        run.model.name, f"{s.model.count_params():,}", run.loss.spec, info.name, s.length.why,
        info.global_batch_size, distribute.num_replicas(s.strategy),
    )  # fmt: skip
    has_val = info.val_size > 0
    budgets.mark_startup(run.timer, run.process_start, s.pacer)
    start = time.perf_counter()
    with s.requests, run.timer.phase("train"):
        fit_length(
            s.train_model,
            s.bundle.train_at,
            first_stream=s.bundle.train,
            start_step=s.start_step,
            length=s.length,
            stopped=s.callbacks.backup.stopped or budgets.used_up(s.pacer, s.start_step > 0),
            shard=lambda ds: distribute.shard(ds, s.strategy),
            validation_data=distribute.shard(s.bundle.val, s.strategy) if has_val else None,
            validation_steps=t.validation_steps,
            callbacks=s.callbacks.ordered(),
            verbose=t.verbose if s.chief else 0,
            shuffle=False,  # the pipeline shuffles by (seed, epoch)
        )
    if s.requests.signum:  # arrived after the last step boundary: the run is backed up
        raise Interrupted(s.requests.signum, s.callbacks.backup.step, s.callbacks.backup.latest())
    return time.perf_counter() - start


def finalize(run: Any, s: Session, train_time: float) -> dict[str, Any]:
    """Evaluate and save the best epoch's model and its `trainer.export` artifacts; write
    metrics, config and overlays (chief). A failed export is raised after everything else is
    written (metrics.json records it)."""
    info, t = s.bundle.info, run.trainer
    started = run.timer.clock()
    best = s.callbacks.best
    kept_best = best is not None and best.best_epoch is not None
    averaged = averaging_optimizer(s.train_model.optimizer) is not None
    if averaged and not kept_best:  # no checkpoint: the last averaged weights are the result
        swap_averaged_weights(s.train_model.optimizer)
    # A local float32 copy: needs no collective of a multi-worker strategy (the other workers
    # may have exited) and exports float32 after mixed-precision training.
    export = clone(s.model, "float32")
    if kept_best:
        export.load_weights(best.path)  # evaluate and export the best epoch, not the last
    results: dict[str, Any] = {}
    if info.val_size > 0:  # trainer.final_eval: at image_size or at full resolution
        results = final_scores(export, run, s.bundle)
    run.timer.add("evaluate", run.timer.clock() - started)
    history = s.callbacks.backup.history  # all epochs, across resumes
    results.update(
        model=run.model.name,
        loss=run.loss.spec,
        data=info.name,
        epochs=len(history.get("loss", [])),
        best_epoch=best.best_epoch + 1 if best and best.best_epoch is not None else None,
        train_time_s=round(train_time, 2),
        steps=int(backups.read_value(s.train_model.optimizer.iterations)),
        image_size=list(info.image_size),
        params=int(export.count_params()),  # the saved model's (no auxiliary heads)
        history=history,
    )
    started = run.timer.clock()
    outputs.save_model(export, s.out_dir / "model.keras")
    failed = None
    if requests := export_requests(t.export):  # trainer.export: verified against model.keras
        results["exports"], failed = artifacts.write_artifacts(
            export, s.out_dir / "model.keras", requests, info.image_size,
            lambda n: artifacts.training_images(s.bundle.train, n),
        )  # fmt: skip
    run.timer.add("export", run.timer.clock() - started)
    results.update(budgets.outcome(s.length, s.pacer, run.timer, run.process_start))
    outputs.write_json(s.out_dir / "metrics.json", results)
    from omegaconf import OmegaConf

    outputs.write_text(s.out_dir / "config.yaml", OmegaConf.to_yaml(run.resolved))
    # Training is over: one backup (a rerun re-exports from it) is enough on disk.
    backups.prune_backups(s.run_dir / backups.BACKUP_DIR, keep=1)
    if info.val_size > 0 and t.num_overlays > 0:
        images, masks = s.bundle.val_images(t.num_overlays)
        logits = keras.ops.convert_to_numpy(export(images, training=False))
        outputs.write_overlays(
            s.out_dir / "overlays",
            images,
            masks,
            logits,
            info.num_classes,
            info.ignore_index,
            mode=info.mode,
            class_colors=info.class_colors,
        )
    if info.val_size > 0:
        print(f"{summary(results)}  ({train_time:.0f} s training)")
    if failed is not None:  # every other output is written; a rerun exports again
        raise failed
    return results


def train(run: Any, run_dir: Path) -> dict[str, Any]:
    """Train `run` (a `zoo.config.RunConfig`) into `run_dir`; returns the final metrics.

    Continues from the last backup in `run_dir` (or `trainer.resume`). After SIGINT/SIGTERM it
    exits with code 130/143, leaving a backup (docs/reliability.md).
    """
    from zoo.data import build_datasets

    run_dir = Path(run_dir)
    if run.timer is None:
        from zoo.recipe import PhaseTimer

        run.timer = PhaseTimer()
    strategy = setup(run)
    resumed = resume.find_resume(run.trainer.resume, run_dir)
    if resumed is not None:
        epochs, max_steps = lengths.finish_rule(run.trainer)
        resume.check_continuation(resumed, run.resolved, epochs, run_dir, max_steps)
    # model.init_from, read outside the strategy's scope (a resumed run has its backup instead).
    initial = run.model.initial_weights() if resumed is None else None
    with strategy.scope():
        # Constructor checks run before any data is read; model.freeze_encoder is applied
        # here, before compile, and again on resume (the same config builds the same model).
        model = run.model.build(initial)
    bundle = build_datasets(
        run.data,
        global_batch_size=run.data.batch_size * distribute.num_replicas(strategy),
        seed=run.seed,
        start_step=resumed.step if resumed else 0,
        size_divisor=1 if run.model.kwargs.get("pad_to_divisor") else run.model.divisor,
    )
    with distribute.worker_output_dir(strategy, run_dir) as out_dir:
        session = build(run, strategy, model, bundle, resumed, run_dir, Path(out_dir))
        try:
            train_time = fit(run, session)
        except Interrupted as stop:
            print(stop, file=sys.stderr)
            raise SystemExit(stop.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            latest = session.callbacks.backup.latest()
            print(f"Interrupted; last backup: {latest or 'none'}", file=sys.stderr)
            raise SystemExit(130) from None
        if not session.chief:
            return {}  # the chief evaluates and writes the outputs alone
        return finalize(run, session, train_time)
