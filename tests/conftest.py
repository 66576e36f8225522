"""Test-session setup: quiet TensorFlow, the TF backend, and two logical CPU devices.

Two logical CPUs let MirroredStrategy tests run on a machine without GPUs; they must be
configured before TensorFlow initializes its devices, hence here, at import time.

The suite runs in pytest-xdist workers (`-n auto` in pyproject.toml), one process per core up
to MAX_WORKERS; each worker is a TensorFlow process of its own, so this module runs in each.
"""

import ctypes
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Workers share a GPU where there is one: without growth the first takes all its memory.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# XLA's CPU code generation without LLVM's optimizations: the tests that compile with XLA
# check what it accepts and computes, not how fast the code runs, and compiling a training
# step costs ~40% less (MAnet's bfloat16 step under XLA: 28 s -> 16 s on 2 cores).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    _xla = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{_xla} --xla_backend_optimization_level=0".strip()
# Fingerprints and CPU speed measured by the tests' runs (under the suite's load) stay out of
# the user's cache (~/.cache/segzoo): a later real run would plan from them.
if "ZOO_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache, _creator = tempfile.mkdtemp(prefix="segzoo-test-cache-"), os.getpid()
    os.environ["ZOO_CACHE_DIR"] = _cache
    # xdist workers may inherit the folder: only its creator (the last to exit) removes it.
    atexit.register(lambda: os.getpid() == _creator and shutil.rmtree(_cache, True))

# Each xdist worker is a TensorFlow process whose ops would each use every core: two workers on
# two cores ran four busy threads. Per worker cores // workers (TensorFlow reads the variable
# when it starts, and the train.py processes that tests start inherit it) measured on 2 cores:
# the default suite 20:40 -> 15:32, the slow tests 26:40 -> 23:31 (two halves). A value the
# user set wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (_cores or 1) // _workers)))

# `zoo` first, as a user's script would: it makes TensorFlow's start-up choices (oneDNN on x86)
# that only hold when made before TensorFlow is imported.
import zoo  # noqa: E402, F401

# isort: split
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
if _cpus:
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # devices already initialized by an earlier import
        pass


import pytest  # noqa: E402

# More workers than this gain little (each is a TensorFlow process using every core for its
# ops, ~1-2 GB of memory) and cost memory on big machines.
MAX_WORKERS = 4


@pytest.hookimpl(wrapper=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: xdist's count (one per available core) capped at MAX_WORKERS, unless
    PYTEST_XDIST_AUTO_NUM_WORKERS sets it."""
    workers = yield
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return workers
    return min(workers, MAX_WORKERS)


# Module-scoped fixtures that train a model or run a benchmark or a reference (10-70 s each):
# every xdist worker that ran one of their tests would run them again, so their tests share
# a worker (`--dist loadgroup`, pyproject.toml). Measured: the bench smoke ran twice (~68 s
# each), the reliability and train references twice (~13 s each).
SHARED_MODULE_FIXTURES = (
    "smoke_result",  # test_bench
    "reference",  # test_reliability, test_segformer
    "trained_unet",  # test_train
    "trained_global_model",  # test_inference
    "smp_dpt",  # test_dpt
    "two_workers",  # test_multiworker
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = [n for n in SHARED_MODULE_FIXTURES if n in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.{shared[0]}"))


@pytest.fixture(scope="session")
def mirrored_strategy():
    """The one MirroredStrategy over the two logical CPUs, shared by every test.

    Several MirroredStrategy objects in one process reuse collective instance keys, and a later
    one's synchronized-BN all-reduce then collides with an earlier one's ("Shape mismatch in the
    collective instance"), so tests must not create their own.
    """
    from zoo import distribute

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPUs configured above")
    return distribute.build_strategy({"name": "mirrored", "devices": ["/cpu:0", "/cpu:1"]})


@pytest.fixture(params=["default", "mirrored"])
def one_or_two_replicas(request):
    """The default strategy (one device), then the shared two-replica `mirrored_strategy`."""
    if request.param == "mirrored":
        return request.getfixturevalue("mirrored_strategy")
    return tf.distribute.get_strategy()


class NetworkBlockedError(OSError):
    """A test tried to reach the network (tests must not)."""


def _loopback(address) -> bool:
    import ipaddress

    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and other non-IP families
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every Python socket connection to a non-loopback address fails (loopback works:
    multi-worker tests talk over 127.0.0.1)."""
    import socket

    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(original):
        def wrapper(self, address):
            if not _loopback(address):
                raise NetworkBlockedError(f"tests must not use the network (connect to {address})")
            return original(self, address)

        return wrapper

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))


@pytest.fixture(autouse=True)
def _free_keras_state_after_slow_tests(request):
    """After each slow test (full-size models), release what TensorFlow's gradient registry
    keeps of plain Keras fits (losses/graph_memory.py; LossModel.fit does it itself), drop
    Keras' global state and TensorFlow's kernel cache, and hand freed heap back to the system
    (glibc keeps it otherwise). Before the release existed, the slow tests in 2 workers held
    16 + 8 GB at once without this clean-up and 3-7 GB each with it; since, one worker running
    test_distribute's 13 per-model runs stays under 1 GB (was 2.5 GB), and the clean-up takes
    ~1 s a test (was 2-4 s there, 4-7 s later in a worker). The default suite's small
    models skip the garbage collection it costs."""
    yield
    if request.node.get_closest_marker("slow") is not None:
        import keras

        from losses.graph_memory import release_custom_gradient_graphs

        release_custom_gradient_graphs()  # graphs of plain keras fits (LossModel's release)
        keras.backend.clear_session()
        _trim_heap()


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
