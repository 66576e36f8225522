"""Distribution strategies picked by config: default, one_device, mirrored, multi_worker, tpu.

`build_strategy(cfg)` is the one factory; build the model, optimizer, losses and metrics inside
`strategy.scope()`. The config gives the per-replica batch; the global batch is per-replica x
`num_replicas(strategy)`. In multi-worker runs only the chief writes outputs
(`worker_output_dir`), datasets get an explicit auto-shard policy (`shard`), Keras' `fit` gets
the fix in `zoo.multiworker`, and an unreachable peer ends the process within `timeout_s`.
See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from zoo.config.checks import choice
from zoo.errors import ConfigError
from zoo.watchdog import PeerWatchdog

log = logging.getLogger(__name__)

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
CLUSTER_RESOLVERS = ("auto", "tf_config", "slurm")
COMMUNICATIONS = ("auto", "ring", "nccl")


@dataclass
class StrategyConfig:
    """Schema of the `strategy` config group (conf/strategy/*.yaml).

    Args:
        name: one of `STRATEGIES`.
        devices: device names for `one_device` (first entry) and `mirrored`
            (e.g. ``["/gpu:0", "/gpu:1"]``); null means all local GPUs (or the CPU).
        timeout_s: multi-worker only: seconds a worker waits for its peers to come up (cluster
            initialization and a first collective) before it exits with an error.
        cluster_resolver: multi-worker only: `tf_config` (the `TF_CONFIG` variable), `slurm`
            (SLURM variables via TF's SlurmClusterResolver) or `auto` (TF_CONFIG when set,
            else SLURM when running under `srun`).
        tpu: TPU address for `tpu` (name, `grpc://host:port`, or `local`); null: from the
            environment (`TPU_NAME`) or a local TPU VM.
        communication: collective implementation: `auto`, `ring` or `nccl` (multi-worker);
            for `mirrored`: `nccl` -> NcclAllReduce, `ring` -> HierarchicalCopyAllReduce.
    """

    name: str = "default"
    devices: list[str] | None = None
    timeout_s: float = 120.0
    cluster_resolver: str = "auto"
    tpu: str | None = None
    communication: str = "auto"


def _get(cfg: Any, key: str) -> Any:
    default = getattr(StrategyConfig, key)
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def build_strategy(cfg: StrategyConfig | Mapping[str, Any] | Any) -> tf.distribute.Strategy:
    """Build the `tf.distribute.Strategy` described by `cfg`.

    Args:
        cfg: a `StrategyConfig`, a dict or a DictConfig with its fields (missing ones default).

    Returns:
        The strategy. For `multi_worker` the cluster is up (all peers answered) when this
        returns, and the Keras multi-worker fix (`zoo.multiworker`) is applied.

    Example:

    ```python
    strategy = build_strategy({"name": "mirrored"})
    with strategy.scope():
        model = zoo.create_model("unet", num_classes=1, input_shape=(64, 64, 3))
    ```
    """
    name = _get(cfg, "name")
    choice("strategy.name", name, STRATEGIES)
    communication = _get(cfg, "communication")
    choice("strategy.communication", communication, COMMUNICATIONS)
    devices = _get(cfg, "devices")
    devices = list(devices) if devices else None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = devices[0] if devices else _default_device()
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        ops = {
            "auto": None,
            "nccl": tf.distribute.NcclAllReduce,
            "ring": tf.distribute.HierarchicalCopyAllReduce,
        }[communication]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=ops() if ops else None)
    if name == "multi_worker":
        resolver_name = _get(cfg, "cluster_resolver")
        choice("strategy.cluster_resolver", resolver_name, CLUSTER_RESOLVERS)
        return _build_multi_worker(resolver_name, communication, float(_get(cfg, "timeout_s")))
    return _build_tpu(_get(cfg, "tpu"))


def _default_device() -> str:
    return "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"


def _cluster_resolver(kind: str) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    has_tf_config = bool(os.environ.get("TF_CONFIG"))
    # SLURM_STEP_ID is set inside `srun` steps, where every task is one worker.
    has_slurm = "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ
    if kind == "auto":
        kind = "tf_config" if has_tf_config else "slurm" if has_slurm else "none"
    if kind == "tf_config":
        if not has_tf_config:
            raise ConfigError(
                "strategy.cluster_resolver=tf_config but the TF_CONFIG environment variable is "
                "not set (see docs/distributed.md for its format)"
            )
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if kind == "slurm":
        if not has_slurm:
            raise ConfigError(
                "strategy.cluster_resolver=slurm but no SLURM step variables (SLURM_STEP_ID, "
                "SLURM_PROCID) are set: launch with `srun`"
            )
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    log.warning(
        "strategy=multi_worker without TF_CONFIG or SLURM variables: running as a single worker"
    )
    return None


def _build_multi_worker(
    resolver_name: str, communication: str, timeout_s: float
) -> tf.distribute.Strategy:
    from zoo import multiworker

    resolver = _cluster_resolver(resolver_name)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation={
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[communication]
    )
    peers = _describe_cluster(resolver)
    with PeerWatchdog(timeout_s, peers):
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
        if multiworker.is_multi_worker(strategy):
            # A first collective: returns only once every worker is up and reachable.
            ones = strategy.run(lambda: tf.constant(1.0))
            seen = float(strategy.reduce("SUM", ones, axis=None))
            if int(round(seen)) != strategy.num_replicas_in_sync:
                raise RuntimeError(
                    f"Cluster check failed: {seen} replicas answered, "
                    f"{strategy.num_replicas_in_sync} expected"
                )
    if multiworker.is_multi_worker(strategy):
        multiworker.apply()
    log.info(
        "MultiWorkerMirroredStrategy: %d replicas, chief=%s",
        strategy.num_replicas_in_sync,
        is_chief(strategy),
    )
    return strategy


def _describe_cluster(resolver: Any) -> str:
    if resolver is None:
        return "no cluster"
    try:
        spec = resolver.cluster_spec().as_dict()
    except Exception:  # the resolver itself failed; the strategy will report why
        return "the cluster"
    return f"{resolver.task_type}:{resolver.task_id} in {json.dumps(spec, sort_keys=True)}"


def _build_tpu(address: str | None) -> tf.distribute.Strategy:
    has_local_tpu = bool(tf.config.list_logical_devices("TPU")) or os.path.exists("/dev/accel0")
    if not address and not os.environ.get("TPU_NAME") and not has_local_tpu:
        raise ConfigError(
            "strategy=tpu but no TPU was found on this machine (no TPU devices, no /dev/accel0, "
            "TPU_NAME not set); set strategy.tpu=<name or grpc://host:port> or pick another "
            f"strategy: {', '.join(s for s in STRATEGIES if s != 'tpu')}"
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as err:
        where = address or "(local)"
        raise RuntimeError(f"strategy=tpu: could not reach TPU {where}: {err}") from err
    return tf.distribute.TPUStrategy(resolver)


def num_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas training in sync (global batch = per-replica batch x this)."""
    return int(strategy.num_replicas_in_sync)


def max_over_workers(strategy: tf.distribute.Strategy) -> Callable[[int], int]:
    """A function taking this worker's integer and returning the maximum over all workers.

    The identity without a multi-worker strategy. Used to make every worker take the same
    decision (e.g. stop after a signal that reached one of them); each call is a collective, so
    every worker must call it at the same point.
    """
    from zoo import multiworker

    if not multiworker.is_multi_worker(strategy):
        return lambda value: int(value)

    def agree(value: int) -> int:
        # tf.distribute reduces with SUM or MEAN only: gather every replica's value, then max.
        local = strategy.run(lambda: tf.constant([int(value)], tf.int32))
        return int(tf.reduce_max(strategy.gather(local, axis=0)))

    return agree


def _task(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None, dict[str, Any]]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, None, {}
    try:
        spec = resolver.cluster_spec().as_dict()
    except Exception:
        spec = {}
    return resolver.task_type, resolver.task_id, spec


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that should write checkpoints, logs and outputs.

    The chief is task `chief:0` when the cluster has a `chief` job, else `worker:0`; every
    single-process strategy is its own chief.
    """
    return chief_task(*_task(strategy))


def chief_task(task_type: str | None, task_id: int | None, cluster: Mapping[str, Any]) -> bool:
    """Whether task `task_type:task_id` of `cluster` (a cluster-spec dict) is the chief."""
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


@contextlib.contextmanager
def worker_output_dir(
    strategy: tf.distribute.Strategy, run_dir: str | os.PathLike[str]
) -> Iterator[str]:
    """Directory this process writes its outputs to: `run_dir` on the chief, else a temp dir.

    Non-chief workers must still run the same code (saving can involve collectives), so they
    write into a private temporary directory that is removed at exit; no two processes ever
    write the same file.

    Args:
        strategy: the strategy in use.
        run_dir: the run's output directory (created on the chief).

    Returns:
        A context manager yielding the directory path as a string.

    Example:

    ```python
    with worker_output_dir(strategy, run_dir) as out:
        model.save(os.path.join(out, "model.keras"))
    ```
    """
    if is_chief(strategy):
        os.makedirs(run_dir, exist_ok=True)
        yield os.fspath(run_dir)
        return
    task_type, task_id, _ = _task(strategy)
    tmp = tempfile.mkdtemp(prefix=f"segzoo_{task_type}{task_id}_")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def auto_shard_policy(
    num_workers: int, num_files: int | None = None, min_files_per_worker: int = 2
) -> tf.data.experimental.AutoShardPolicy:
    """The auto-shard policy for a multi-worker input pipeline.

    FILE sharding (each worker reads its own files) is cheapest but needs enough files to give
    every worker a fair share: with fewer than `min_files_per_worker` files per worker, or for
    generated / in-memory sources (`num_files=None`), every worker reads everything and keeps its
    slice of each global batch (DATA), which keeps steps identical to a single-process run.

    Args:
        num_workers: worker processes in the cluster.
        num_files: files the source reads, or None when it is not file based.
        min_files_per_worker: files per worker needed for FILE sharding.

    Returns:
        `AutoShardPolicy.FILE` or `AutoShardPolicy.DATA`.
    """
    if num_files is not None and num_files >= max(1, num_workers) * min_files_per_worker:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def shard(
    dataset: tf.data.Dataset, strategy: tf.distribute.Strategy, num_files: int | None = None
) -> tf.data.Dataset:
    """Set the auto-shard policy on `dataset` for `strategy` (unchanged when single-worker).

    Args:
        dataset: a dataset batched by the global batch size.
        strategy: the strategy `fit` will distribute it with.
        num_files: files the source reads (None: generated or in-memory data).

    Returns:
        The dataset with `experimental_distribute.auto_shard_policy` set.

    Example:

    ```python
    model.fit(shard(bundle.train, strategy), steps_per_epoch=100)
    ```
    """
    from zoo import multiworker

    if not multiworker.is_multi_worker(strategy):
        return dataset
    spec = _task(strategy)[2]
    workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = auto_shard_policy(workers, num_files)
    return dataset.with_options(options)


def hydra_worker_overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """Hydra overrides that keep a non-chief worker out of the shared run directory.

    Hydra writes `.hydra/` and `train.log` into the run directory before our code runs, so
    `train.py` adds these overrides on non-chief workers (known from `TF_CONFIG`, or
    `SLURM_PROCID` > 0 in a multi-task SLURM step): no Hydra files, logs to the console only.
    """
    env = os.environ if environ is None else environ
    overrides = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    if env.get("TF_CONFIG"):
        try:
            tf_config = json.loads(env["TF_CONFIG"])
            task = tf_config.get("task", {})
            cluster = tf_config.get("cluster", {})
            chief = chief_task(task.get("type"), int(task.get("index", 0)), cluster)
        except (ValueError, TypeError, AttributeError):
            return []  # build_strategy reports a malformed TF_CONFIG clearly
        return [] if chief else overrides
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and int(env.get("SLURM_PROCID", "0") or 0) > 0:
        return overrides
    return []
