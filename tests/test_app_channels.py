"""Any number of input channels through the app: `data.channels`, the folder reader, the
augmentation, training with train.py, prediction, export and overlays (docs/data.md)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_train import TINY_UNET, train

from zoo.data import build_datasets
from zoo.data.config import AugmentConfig
from zoo.data.io import read_image, to_channels
from zoo.data.pipeline import augment
from zoo.errors import ConfigError, DataError
from zoo.outputs import display_rgb, write_overlays


def squares(rng, size=32, channels=1):
    """A 0/255 mask with one 8x8 square and an image (uint8, `channels` bands) that shows it
    brighter in every band, at a different level per band."""
    mask = np.zeros((size, size), np.uint8)
    y, x = rng.integers(2, size - 10, 2)
    mask[y : y + 8, x : x + 8] = 255
    levels = 20 + 30 * np.arange(channels)
    image = levels + (mask[..., None] > 0) * 100 + rng.normal(0, 4, (size, size, channels))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def gray_folder(root, n=6, size=32, seed=0):
    """Gray PNGs (mode L) and 0/255 masks."""
    rng = np.random.default_rng(seed)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = squares(rng, size, 1)
        Image.fromarray(image[..., 0]).save(root / "images" / f"g{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"g{i}.png")
    return root


def band_folder(root, channels=4, n=6, size=32, seed=1):
    """`channels`-band uint8 .npy images and 0/255 PNG masks."""
    rng = np.random.default_rng(seed)
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = squares(rng, size, channels)
        np.save(root / "images" / f"b{i}.npy", image)
        Image.fromarray(mask).save(root / "masks" / f"b{i}.png")
    return root


def folder_cfg(root, **kw):
    return {"name": "folder", "root": str(root), "image_size": [32, 32], "val_ratio": 0.0,
            "augment": {"enabled": False}, **kw}  # fmt: skip


# --- The reader's rule -----------------------------------------------------------------------


def test_channel_rule_by_hand():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgba = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(to_channels(gray, "g", 3), np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(to_channels(rgba, "a", 3), rgba[..., :3])
    np.testing.assert_array_equal(to_channels(gray, "g", 1), gray[..., None])
    np.testing.assert_array_equal(to_channels(rgba, "a", 4), rgba)  # the 4th band is data
    for image, channels in ((rgba[..., :3], 1), (rgba, 1), (gray, 4), (rgba[..., :2], 3)):
        with pytest.raises(DataError, match=f"data.channels={channels} ") as info:
            to_channels(image, "/data/x.tif", channels)
        got = 1 if image.ndim == 2 else image.shape[-1]
        assert "'/data/x.tif'" in str(info.value) and f"data.channels={got} to" in str(info.value)


def test_multiband_tiffs_read_as_stored(tmp_path):
    import tifffile

    rng = np.random.default_rng(3)
    for channels, kw in (
        (4, {}),
        (13, {"planarconfig": "contig"}),
        (5, {"planarconfig": "separate"}),
    ):
        shape = (channels, 6, 7) if kw.get("planarconfig") == "separate" else (6, 7, channels)
        stored = rng.integers(0, 65535, shape, dtype=np.uint16)
        path = tmp_path / f"b{channels}.tif"
        tifffile.imwrite(path, stored, photometric="minisblack" if channels != 4 else None, **kw)
        want = np.moveaxis(stored, 0, -1) if kw.get("planarconfig") == "separate" else stored
        np.testing.assert_array_equal(read_image(path, channels), (want / 65535).astype(np.float32))


def test_channels_config_is_checked():
    with pytest.raises(ConfigError, match="data.channels=0"):
        build_datasets({"name": "shapes", "channels": 0}, global_batch_size=2)
    with pytest.raises(ConfigError, match="data.channels=1.*data=shapes has RGB"):
        build_datasets({"name": "shapes", "channels": 1}, global_batch_size=2)


def test_folder_keeps_one_and_four_channels(tmp_path):
    gray = gray_folder(tmp_path / "gray", n=4)
    bundle = build_datasets(folder_cfg(gray, channels=1), global_batch_size=4)
    assert bundle.info.channels == 1
    batch = next(iter(bundle.train))["image"].numpy()
    assert batch.shape == (4, 32, 32, 1)
    files = sorted((gray / "images").glob("*.png"))
    stored = {f.name: np.asarray(Image.open(f), np.float32) / 255 for f in files}
    # Without augmentation every training image is one of the files, exactly.
    for image in batch:
        assert any(np.array_equal(image[..., 0], s) for s in stored.values())
    # The default (3) still repeats a gray image, as before.
    np.testing.assert_array_equal(read_image(files[0]), np.stack([stored[files[0].name]] * 3, -1))

    bands = band_folder(tmp_path / "bands", channels=4, n=4)
    bundle = build_datasets(folder_cfg(bands, channels=4), global_batch_size=4)
    batch = next(iter(bundle.train))["image"].numpy()
    assert bundle.info.channels == 4 and batch.shape == (4, 32, 32, 4)
    arrays = [np.load(f).astype(np.float32) / 255 for f in sorted(bands.glob("images/*.npy"))]
    for image in batch:
        assert any(np.array_equal(image, a) for a in arrays)
    # data.channels=3 (the default) reads a 4-channel file as RGBA: its 4th channel is dropped.
    batch = next(iter(build_datasets(folder_cfg(bands), global_batch_size=4).train))["image"]
    for image in batch.numpy():
        assert any(np.array_equal(image, a[..., :3]) for a in arrays)
    two = band_folder(tmp_path / "two", channels=2, n=2)
    with pytest.raises(DataError, match="has 2 channel.*data.channels=3.*data.channels=2 to"):
        build_datasets(folder_cfg(two), global_batch_size=2)


def test_resize_keeps_every_band_apart(tmp_path):
    # Pillow resizes RGBA with premultiplied alpha; a 4th band must be resized on its own.
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.zeros((16, 16, 4), np.uint8)
    image[..., 0], image[..., 3] = 200, np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    np.save(root / "images" / "a.npy", image)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "a.png")
    cfg = folder_cfg(root, channels=4, image_size=[32, 32], resize="resize")
    out = next(iter(build_datasets(cfg, global_batch_size=1).train))["image"].numpy()[0]
    np.testing.assert_array_equal(out[..., 0], np.full((32, 32), 200 / 255, np.float32))
    want = np.asarray(Image.fromarray(image[..., 3]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(out[..., 3], want / np.float32(255))


@pytest.mark.parametrize("channels", [1, 4])
def test_geometric_augmentation_moves_every_band_with_the_mask(channels):
    # Band k of the image is (k + 1) / 10 on the mask: after flips and quarter turns (no
    # resampling: full-size window) every band must still equal the transformed mask.
    rng = np.random.default_rng(0)
    mask = (rng.random((16, 16, 1)) > 0.5).astype(np.int32)
    image = mask.astype(np.float32) * (np.arange(1, channels + 1, dtype=np.float32) / 10)
    weight = np.ones((16, 16, 1), np.float32)
    cfg = AugmentConfig(scale=[1.0, 1.0], brightness=0.0, contrast=0.0)
    turned = 0
    for seed in range(8):
        out = augment(tf.constant(image), tf.constant(mask), tf.constant(weight),
                      tf.constant([seed, 1], tf.int64), (16, 16), cfg)  # fmt: skip
        got, m = out["image"].numpy(), out["mask"].numpy()
        assert got.shape == (16, 16, channels)
        np.testing.assert_allclose(got, m * (np.arange(1, channels + 1) / 10), atol=1e-6)
        turned += not np.array_equal(m, mask)
    assert turned  # the transforms did happen


def test_contrast_is_per_band_except_for_rgb():
    # Constant bands at different levels: around each band's own mean a contrast change
    # leaves them as they are; RGB images scale around the image mean (as torchvision).
    levels = np.array([0.1, 0.2, 0.6, 0.9], np.float32)
    mask = np.zeros((8, 8, 1), np.int32)
    weight = np.ones((8, 8, 1), np.float32)
    cfg = AugmentConfig(hflip=False, vflip=False, rot90=False, scale=[1.0, 1.0],
                        brightness=0.0, contrast=0.5)  # fmt: skip
    key = tf.constant([3, 4], tf.int64)
    four = np.broadcast_to(levels, (8, 8, 4)).copy()
    out = augment(tf.constant(four), tf.constant(mask), tf.constant(weight), key, (8, 8), cfg)
    np.testing.assert_allclose(out["image"].numpy(), four, atol=1e-6)
    rgb = four[..., :3]
    out = augment(tf.constant(rgb), tf.constant(mask), tf.constant(weight), key, (8, 8), cfg)
    got = out["image"].numpy()[0, 0]
    mean = levels[:3].mean()
    factor = (got - mean) / (levels[:3] - mean)  # one factor for all three, not 1
    np.testing.assert_allclose(factor, factor[0], rtol=1e-4)
    assert abs(factor[0] - 1) > 1e-3


# --- Overlays --------------------------------------------------------------------------------


def test_overlays_show_gray_and_the_first_three_bands(tmp_path):
    rng = np.random.default_rng(2)
    masks = (rng.random((1, 8, 8, 1)) > 0.5).astype(np.int32)
    logits = rng.normal(size=(1, 8, 8, 1)).astype(np.float32)
    for channels in (1, 2, 4):
        images = rng.random((1, 8, 8, channels)).astype(np.float32)
        (path,) = write_overlays(tmp_path / str(channels), images, masks, logits, 1)
        left = np.asarray(Image.open(path).convert("RGB"))[:, :8]
        shown = images[0][..., :3] if channels >= 3 else np.repeat(images[0][..., :1], 3, -1)
        np.testing.assert_array_equal(left, np.round(shown * 255).astype(np.uint8))
    assert display_rgb(np.full((2, 2), 65535, np.uint16)).tolist() == [[[255] * 3] * 2] * 2


# --- Through train.py ------------------------------------------------------------------------


def test_gray_folder_trains_exports_and_predicts(tmp_path):
    """train.py on gray PNGs with data.channels=1 and trainer.export=[saved_model]: a
    1-channel model, its verified SavedModel (logits equal to model.keras'), overlays, and
    prediction of a gray image."""
    root = gray_folder(tmp_path / "gray")
    run_dir = tmp_path / "run"
    args = ["data=folder", f"data.root={root}", "data.channels=1", "data.batch_size=2",
            "trainer.max_steps=2", "trainer.export=[saved_model]", *TINY_UNET,
            "trainer.num_overlays=1"]  # fmt: skip
    proc = train(args, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    assert model.inputs[0].shape[-1] == 1 and model.metadata["channels"] == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = metrics["exports"]["saved_model"]
    assert entry["path"] == "model_saved_model" and entry["logits_error"] <= 1e-5
    assert metrics["timing"]["export_s"] >= entry["seconds"] > 0
    (overlay,) = (run_dir / "overlays").glob("*.png")
    assert Image.open(overlay).size == (3 * 32, 32)

    # The artifact computes model.keras' logits on gray uint8 images of any size.
    gray = np.stack([squares(np.random.default_rng(7), 40)[0] for _ in range(2)])  # (2,40,40,1)
    loaded = tf.saved_model.load(str(run_dir / "model_saved_model"))
    out = loaded.signatures["serving_default"](image=tf.constant(gray))
    padded = np.pad(gray, ((0, 0), (0, 24), (0, 24), (0, 0)), mode="edge")  # to 64, as inside
    want = model(padded.astype(np.float32) / 255, training=False).numpy()[:, :40, :40]
    np.testing.assert_allclose(out["logits"].numpy(), want, atol=1e-5 * max(1, np.abs(want).max()))

    # zoo.predict on a gray PNG with the 1-channel model: the mask of its own logits.
    from zoo.predict import predict_folder

    image = gray[0, ..., 0][:32, :32]
    Image.fromarray(image).save(tmp_path / "new.png")
    (written,) = predict_folder(run_dir / "model.keras", tmp_path / "new.png", tmp_path / "out")
    logits = model(image[None, ..., None].astype(np.float32) / 255, training=False).numpy()[
        0, ..., 0
    ]
    mask = np.asarray(Image.open(written))
    clear = np.abs(logits) > 1e-4
    np.testing.assert_array_equal((mask > 0)[clear], (logits > 0)[clear])

    # Rerunning the finished run with more formats only re-evaluates and re-exports.
    again = [a if not a.startswith("trainer.export=") else "trainer.export=[onnx]" for a in args]
    proc = train(again, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["exports"]["onnx"]["logits_error"] <= 1e-4
    assert (run_dir / "model.onnx").is_file() and (run_dir / "model_saved_model").is_dir()
