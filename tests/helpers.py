"""Shared test helpers: each model check in the test modules is a few lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.build_context import shapes_only

# Keras' automatic names: a layer called like this was created without a stable name.
AUTO_NAMES = (
    "conv2d",
    "batch_normalization",
    "activation",
    "add",
    "concatenate",
    "up_sampling2d",
    "depthwise_conv2d",
    "max_pooling2d",
    "dropout",
)


# The models whose heavy end-to-end tests (a train.py run, every export format, mixed
# precision) run by default: one of each kind of decoder (skip-connection, pyramid, atrous,
# transformer). Every other registered model runs them with the tests marked slow (CI runs
# both), which keeps the default run near 20 minutes on 2 cores as the zoo grows.
DEFAULT_RUN_MODELS = ("unet", "fpn", "deeplab_lite", "segformer")


def every_model_heavy(group: str | None = None) -> list:
    """`zoo.list_models()` as pytest params, those outside DEFAULT_RUN_MODELS marked slow.

    `group`: a model's tests carrying the same group run in one xdist worker (`--dist
    loadgroup`, pyproject.toml), so what they share per process (a model trained once,
    test_export.py) is computed once, not once per worker."""

    def marks(name: str) -> list:
        slow = [] if name in DEFAULT_RUN_MODELS else [pytest.mark.slow]
        return slow + ([pytest.mark.xdist_group(f"{group}-{name}")] if group else [])

    return [pytest.param(n, marks=marks(n)) for n in zoo.list_models()]


def build_tiny(name: str, num_classes: int = 2, input_shape=(None, None, 3), **overrides):
    """The registered model `name` built from its `tiny_config` (plus `overrides`)."""
    config = {**zoo.model_info(name).tiny_config, **overrides}
    return zoo.create_model(name, num_classes=num_classes, input_shape=input_shape, **config)


def fixed_batch(batch: int, height: int, width: int, num_classes: int, seed: int = 0):
    """Images in [0, 1] and integer masks whose classes follow image brightness, so a
    segmentation net can actually fit them."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, height, width, 3), dtype=np.float32)
    masks = np.minimum((images.mean(-1) * num_classes).astype(np.int32), num_classes - 1)
    return images, masks


def pixel_loss(masks, logits):
    """Plain per-pixel loss: BCE for one channel, softmax cross-entropy otherwise."""
    if logits.shape[-1] == 1:
        labels = tf.cast(masks[..., None], logits.dtype)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(masks, logits))


def train_steps(model, images, masks, steps: int = 3, learning_rate: float = 1e-2):
    """Adam steps on one batch; returns (losses, gradients of the first step)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    losses, first_grads = [], None
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = pixel_loss(masks, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        first_grads = grads if first_grads is None else first_grads
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    return losses, first_grads


def eval_loss(model, images, masks) -> float:
    return float(pixel_loss(masks, model(images, training=False)))


def count_trainable(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def count_model_trainable(name: str, **kwargs) -> int:
    """Trainable parameters of `zoo.create_model(name, **kwargs)`, counted from the shapes of
    a model built in `shapes_only()` (no weight drawn)."""
    with shapes_only():
        return count_trainable(zoo.create_model(name, **kwargs))


def assert_params_equal_smp(specs: list[tuple], also: Sequence[dict] = ()) -> list[int]:
    """Each spec (zoo model, smp architecture, encoder[, reference options such as
    used_only=True, or ``encoder="tu-..."`` where smp names it otherwise]) has as many
    trainable parameters as smp's model, all smp models counted in one reference
    interpreter (ours built without drawing weights). `also`: further
    reference requests (tests/reference/smp_param_count.py) counted in the same run, not
    compared. Returns smp's counts: the specs', then those of `also`.

    One failure lists every mismatch as "model/encoder: zoo <count> != smp <count>".
    """
    from torch_ref import smp_param_counts

    requests = [{"arch": s[1], "encoder": s[2], **(s[3] if len(s) > 3 else {})} for s in specs]
    counts = smp_param_counts([*requests, *also])
    theirs = counts[: len(specs)]
    wrong = []
    for spec, want in zip(specs, theirs):
        got = count_model_trainable(spec[0], num_classes=1, encoder=spec[2])
        if got != want:
            wrong.append(f"{spec[0]}/{spec[2]}: zoo {got:,} != smp {want:,}")
    assert not wrong, "; ".join(wrong)
    return counts


def all_layers(model):
    """Every layer, nested models included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def assert_save_load_identical(model, images, path) -> keras.Model:
    """Save to `.keras`, load with safe_mode and no custom_objects, compare outputs."""
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(
        np.asarray(model(images, training=False)), np.asarray(loaded(images, training=False))
    )
    return loaded


# A train.py run of a few seconds: 6 steps of a width-8 ResNet-18 U-Net on 32x32 shapes.
TINY_RUN = [
    "data.image_size=[32,32]", "data.train_size=8", "data.batch_size=4", "data.cache=false",
    "model.encoder=resnet18", "+model.encoder_kwargs.base_width=8",
    "model.decoder_channels=[16,8,8,8,8]", "trainer.max_steps=6", "trainer.tensorboard=false",
    "trainer.num_overlays=0", "trainer.verbose=0",
]  # fmt: skip


def train_tiny(run_dir: Path, *overrides: str) -> None:
    """`train.py` with TINY_RUN plus `overrides` into `run_dir`; fails the test if it fails."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "train.py", *TINY_RUN, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def unet_trains_saves_and_reloads(tmp_path, encoder: str, layer: str) -> None:
    """A U-Net on `encoder` (its tiny configuration): one training step moves `layer`'s
    kernel, and its .keras file reloads in safe mode, without custom_objects, to the same
    logits."""
    import losses
    from zoo.saving import load_model

    model = zoo.create_model(
        "unet",
        num_classes=1,
        input_shape=(None, None, 3),
        encoder=encoder,
        encoder_kwargs=zoo.encoder_info(encoder).tiny_config,
        decoder_channels=[16, 16, 8, 8, 8],
    )
    kernel = model.get_layer(layer).kernel
    before = np.asarray(kernel).copy()
    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64, 3), dtype=np.float32)
    masks = (images.mean(-1, keepdims=True) > 0.5).astype("int32")
    train = losses.attach(model, "wbce+dice", mode="binary", weight=False)
    train.compile(optimizer=keras.optimizers.Adam(1e-2))
    train.fit({"image": images, "mask": masks}, epochs=1, batch_size=2, verbose=0)
    assert np.abs(np.asarray(kernel) - before).max() > 1e-4
    path = tmp_path / f"{encoder}_unet.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_allclose(again(images), model(images), atol=1e-5)


def features_match_smp_encoder(
    tmp_path,
    encoder: str,
    size=(64, 96),
    max_scale=50.0,
    smp_name: str | None = None,
    strides=(2, 4, 8, 16, 32),
    output_stride: int = 32,
) -> None:
    """Our `encoder` with the weights of a random smp one (batch-norm statistics fitted to
    random images, tests/reference/smp_encoder.py) gives its features at strides 2-32 as
    closely to smp's float64 ones as smp's own float32 does: deep random nets amplify float32
    round-off (Inception-v4: ~1e-3 of the scale at stride 32, in PyTorch too), while a wrong
    weight, pixel or path is off by O(1) of the scale. `max_scale` bounds the features' size
    (MobileOne's unnormalized branch sums reach hundreds). `smp_name`: smp's name of the
    encoder when it differs (``tu-convnext_atto``); `strides`: the ones we have (smp's
    stride-2 map of an encoder that starts at stride 4 is empty). `output_stride` 16 or 8:
    both dilated (smp's argument); our deepest map (keyed by the output stride) is compared
    with smp's last, the levels smp keeps between them at that size are not compared."""
    from torch_ref import run_reference

    images = np.random.default_rng(0).random((2, *size, 3), dtype=np.float32)
    path = tmp_path / f"{encoder}.safetensors"
    dilated = {"output_stride": output_stride} if output_stride != 32 else {}
    theirs = run_reference(
        "smp_encoder", {"images": images}, encoder=smp_name or encoder, path=str(path), **dilated
    )
    net = zoo.create_encoder(
        encoder, input_shape=(None, None, 3), weights=str(path), input_normalization="imagenet",
        **dilated,
    )  # fmt: skip
    ours = net(images, training=False)
    strides = [s for s in strides if s <= output_stride]
    assert sorted(ours) == sorted(strides)
    for stride in strides:
        level = stride if stride < output_stride else 32  # smp's deepest map at that size
        exact, want, got = theirs[f"s{level}_f64"], theirs[f"s{level}"], np.asarray(ours[stride])
        assert got.shape == want.shape, stride
        scale = float(np.abs(exact).max())
        assert 0.1 < scale < max_scale  # features of a known size: the tolerance means something
        theirs_off = float(np.abs(want - exact).max())
        ours_off = float(np.abs(got - exact).max())
        print(f"{encoder} stride {stride}: ours {ours_off:.2e}, torch f32 {theirs_off:.2e} off f64")
        assert ours_off < 3 * theirs_off + 1e-6 * scale, (stride, ours_off, theirs_off)


def divisible(v: float, divisor: int = 8, limit: float = 0.9) -> int:
    """timm's make_divisible: the nearest multiple of `divisor`, at least `divisor`, plus one
    more where that falls `limit` below `v` (timm's round_limit; 0: never)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < limit * v else new


def stem_top_left_tap(name: str, size: int, **kwargs) -> float:
    """The stem's output at (0, 0) of encoder `name` (built with `kwargs`) when its kernel only
    keeps the top-left tap, on a `size`-square image whose pixel (0, 0) is 1: 1 where the tap
    reads the pixel, 0 where it reads padding."""
    net = zoo.create_encoder(name, input_shape=(size, size, 3), input_normalization=None, **kwargs)
    stem = net.get_layer("encoder_stem_conv")
    kernel = np.zeros(stem.kernel.shape, np.float32)
    kernel[0, 0, 0, :] = 1.0
    stem.kernel.assign(kernel)
    image = np.zeros((1, size, size, 3), np.float32)
    image[0, 0, 0, 0] = 1.0
    probe = keras.Model(net.input, net.get_layer("encoder_stem_bn").input)
    return float(np.asarray(probe(image))[0, 0, 0, 0])


def batch_norm_shapes(key: str, channels: int) -> dict[str, tuple[int, ...]]:
    """A PyTorch ``BatchNorm2d``'s state-dict shapes under `key` (affine, running statistics,
    counter), for the ``timm_shapes`` key tables the encoder tests write out."""
    shapes = {f"{key}.{p}": (channels,) for p in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{key}.num_batches_tracked"] = ()
    return shapes


def trainable_params(shapes: dict[str, tuple[int, ...]]) -> int:
    """Trainable parameters of a state dict's shapes: batch-norm statistics left out."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers))


def smp_file_loads_as_timm_file(tmp_path, encoder: str, state: dict, smp_key, **kwargs) -> None:
    """`state` (timm's keys) saved as timm's file and, keys through `smp_key` plus a decoder
    key, as an smp model's: `encoder` built on each holds identical weights."""
    from safetensors.numpy import save_file

    save_file(state, str(tmp_path / "timm.safetensors"))
    smp = {smp_key(k): v for k, v in state.items()}
    smp["segmentation_head.0.weight"] = np.zeros((1, 16, 3, 3), np.float32)
    save_file(smp, str(tmp_path / "smp.safetensors"))
    nets = [
        zoo.create_encoder(encoder, input_shape=(32, 32, 3), weights=str(p), **kwargs)
        for p in (tmp_path / "timm.safetensors", tmp_path / "smp.safetensors")
    ]
    assert nets[0].weights
    for a, b in zip(nets[0].weights, nets[1].weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def from_timm_cache(
    tmp_path, monkeypatch, encoder: str, tag: str, state: dict, weights="imagenet", **kwargs
):
    """`encoder` built with `weights` (a name that should resolve to timm's `tag`) after
    `state` was put where timm's `tag` weights of it are cached (``SEGZOO_HOME``, no network)."""
    from safetensors.numpy import save_file

    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path))
    path = tmp_path / "weights" / "timm" / f"{encoder}.{tag}" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return zoo.create_encoder(encoder, input_shape=(32, 32, 3), weights=weights, **kwargs)
