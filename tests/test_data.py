"""Data package: shapes generator, weight maps, folder dataset, pipeline determinism and resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf
from PIL import Image

from zoo.data import (
    build_datasets,
    elastic,
    generate_shapes,
    parse_data_config,
    pipeline,
    read_image,
    read_mask,
    shapes,
    weights,
)
from zoo.data.config import AugmentConfig

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def tiny_shapes(**kw):
    cfg = {
        "name": "shapes",
        "train_size": 12,
        "val_size": 5,
        "image_size": [32, 32],
        "cache": False,
        "min_objects": 2,
        "max_objects": 4,
    }
    cfg.update(kw)
    return cfg


def take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


# ----------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seeded():
    a = generate_shapes(4, (40, 48), seed=3)
    shapes._MEMORY.clear()  # regenerate rather than return the in-memory copy
    b = generate_shapes(4, (40, 48), seed=3)
    assert a is not b
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.instances, b.instances)
    c = generate_shapes(4, (40, 48), seed=4)
    assert not np.array_equal(a.images, c.images)
    # Image i depends only on (seed, split, i): a larger set shares the prefix.
    d = generate_shapes(6, (40, 48), seed=3)
    np.testing.assert_array_equal(d.images[:4], a.images)
    v = generate_shapes(4, (40, 48), seed=3, split="val")
    assert not np.array_equal(v.images, a.images)
    assert a.images.shape == (4, 40, 48, 3) and a.images.dtype == np.uint8


def test_shapes_masks_consistent_with_instances():
    data = generate_shapes(8, (48, 48), seed=0, min_objects=3, max_objects=6)
    for inst, cls in zip(data.instances, data.classes):
        ids = np.unique(inst)
        assert ids[0] == 0 and len(ids) >= 2
        np.testing.assert_array_equal(ids, np.arange(len(ids)))  # renumbered 1..K
        np.testing.assert_array_equal(cls > 0, inst > 0)
        for i in ids[1:]:
            assert len(np.unique(cls[inst == i])) == 1  # one shape kind per instance
    np.testing.assert_array_equal(data.masks(1), (data.instances > 0).astype(np.int32))
    assert set(np.unique(data.masks(5))) <= set(range(5))
    # Objects touch or overlap somewhere: some pair of different instances is 4-adjacent.
    inst = data.instances
    a, b = inst[:, :, 1:], inst[:, :, :-1]
    assert np.any((a > 0) & (b > 0) & (a != b))


# ----------------------------------------------------------------------------- weights


def brute_border(inst, w0, sigma):
    """Independent O(N^2) reference: distances from each pixel to every pixel of each instance."""
    ys, xs = np.mgrid[0 : inst.shape[0], 0 : inst.shape[1]]
    dists = []
    for i in np.unique(inst)[1:]:
        py, px = np.nonzero(inst == i)
        d = np.sqrt((ys[..., None] - py) ** 2 + (xs[..., None] - px) ** 2).min(-1)
        dists.append(d)
    if len(dists) < 2:
        return np.zeros(inst.shape)
    d = np.sort(np.stack(dists), axis=0)
    return np.where(inst == 0, w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2)), 0.0)


def test_unet_border_two_squares_hand_checked():
    inst = np.zeros((12, 13), np.int32)
    inst[2:6, 1:5] = 1  # square A: columns 1..4
    inst[2:6, 7:11] = 2  # square B: columns 7..10, gap = columns 5 and 6
    mask = (inst > 0).astype(np.int32)
    cw = np.array([0.5, 2.0], np.float32)
    w = weights.weight_map(mask, "unet_border", cw, inst, w0=10, sigma=5)
    # Gap pixel (3, 5): 1 px from A, 2 px from B.
    assert w[3, 5] == pytest.approx(0.5 + 10 * math.exp(-((1 + 2) ** 2) / 50), rel=1e-6)
    assert w[3, 6] == pytest.approx(0.5 + 10 * math.exp(-((2 + 1) ** 2) / 50), rel=1e-6)
    # Corner (11, 12): nearest A pixel (5, 4), nearest B pixel (5, 10).
    d1, d2 = math.hypot(6, 8), math.hypot(6, 2)
    assert w[11, 12] == pytest.approx(0.5 + 10 * math.exp(-((d1 + d2) ** 2) / 50), rel=1e-6)
    assert w[3, 2] == pytest.approx(2.0)  # foreground: class weight only
    np.testing.assert_allclose(weights.border_term(inst, 10, 5), brute_border(inst, 10, 5), 1e-5)


def test_unet_border_matches_brute_force_and_single_instance():
    data = generate_shapes(3, (40, 40), seed=5, min_objects=4)
    assert max(len(np.unique(i)) for i in data.instances) > 3
    for inst in data.instances:
        np.testing.assert_allclose(
            weights.border_term(inst, 7.0, 3.0), brute_border(inst, 7.0, 3.0), rtol=1e-5, atol=1e-6
        )
    one = np.zeros((8, 8), np.int32)
    one[2:4, 2:4] = 1
    assert not weights.border_term(one).any()  # d2 is infinite: no border term


def test_class_balance_closed_form():
    masks = [np.array([[0, 0], [0, 1]]), np.array([[0, 255], [1, 1]])]
    counts = weights.class_counts(masks, num_classes=1)
    np.testing.assert_array_equal(counts, [4, 3])  # 255 (ignored) not counted
    cw = weights.class_balance_weights(counts)
    np.testing.assert_allclose(cw, [7 / (2 * 4), 7 / (2 * 3)], rtol=1e-6)
    maps = [weights.weight_map(m, "class_balance", cw, ignore_index=255) for m in masks]
    valid = np.concatenate([w[m != 255] for w, m in zip(maps, masks)])
    assert valid.mean() == pytest.approx(1.0)
    assert maps[1][0, 1] == 0.0  # ignored pixel
    np.testing.assert_array_equal(weights.weight_map(masks[0], "none"), np.ones((2, 2)))
    # Absent classes get weight 0; multiclass counts.
    np.testing.assert_allclose(weights.class_balance_weights(np.array([2, 0, 6])), [2, 0, 8 / 12])
    with pytest.raises(ValueError, match="weight_map='bogus'"):
        weights.weight_map(masks[0], "bogus", cw)


# ----------------------------------------------------------------------------- pipeline


def test_build_shapes_layout_and_info():
    bundle = build_datasets(tiny_shapes(weight_map="unet_border"), global_batch_size=4, seed=0)
    info = bundle.info
    assert (info.num_classes, info.mode, info.ignore_index) == (1, "binary", None)
    assert (info.train_size, info.val_size, info.steps_per_epoch) == (12, 5, 3)
    assert info.image_size == (32, 32)
    batch = take(bundle.train, 1)[0]
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (4, 32, 32, 1) and batch["mask"].dtype == np.int32
    assert batch["weight"].shape == (4, 32, 32, 1) and batch["weight"].dtype == np.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert set(np.unique(batch["mask"])) <= {0, 1}
    assert tf.data.experimental.cardinality(bundle.train) == tf.data.INFINITE_CARDINALITY
    # No autotuning thread, whose up-to-60-s sleep an iterator's destructor waits out.
    assert not bundle.train.options().autotune.enabled
    assert not bundle.val.options().autotune.enabled
    val = take(bundle.val, 10)
    assert [b["image"].shape[0] for b in val] == [4, 1]
    # Validation is unaugmented: exactly the generated images and masks, in order.
    data = generate_shapes(5, (32, 32), seed=0, split="val", min_objects=2, max_objects=4)
    images, masks = bundle.val_images(3)
    np.testing.assert_allclose(images, data.images[:3] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(masks[..., 0], data.masks(1)[:3])
    multi = build_datasets(tiny_shapes(num_classes=5), global_batch_size=4)
    assert multi.info.mode == "multiclass" and len(multi.info.class_names) == 5


def test_resume_equals_dropping_batches():
    cfg = tiny_shapes(weight_map="class_balance")
    full = take(build_datasets(cfg, global_batch_size=4, seed=7).train, 8)  # 3 steps/epoch
    for k in (2, 5):
        resumed = take(build_datasets(cfg, global_batch_size=4, seed=7, start_step=k).train, 8 - k)
        for a, b in zip(full[k:], resumed):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    again = take(build_datasets(cfg, global_batch_size=4, seed=7).train, 2)
    np.testing.assert_array_equal(again[1]["image"], full[1]["image"])
    other = take(build_datasets(cfg, global_batch_size=4, seed=8).train, 1)
    assert not np.array_equal(other[0]["image"], full[0]["image"])


def test_epoch_order_depends_only_on_seed_and_epoch():
    # Augmentation off: every batch image is a stored image, so its index can be recovered.
    cfg = tiny_shapes(augment={"enabled": False}, train_size=10)
    data = generate_shapes(10, (32, 32), seed=0, min_objects=2, max_objects=4)
    flat = data.images.reshape(10, -1).astype(np.float32) / 255.0

    def order(seed, start_step, steps, parallel=-1):
        c = dict(cfg, num_parallel_calls=parallel)
        bundle = build_datasets(c, global_batch_size=3, seed=seed, start_step=start_step)
        out = []
        for b in take(bundle.train, steps):
            for img in b["image"].reshape(3, -1):
                out.append(int(np.argmin(np.abs(flat - img).max(1))))
        return out

    base = order(seed=1, start_step=0, steps=9)  # 3 epochs of 3 batches (one sample dropped)
    epochs = [base[0:9], base[9:18], base[18:27]]
    for e in epochs:
        assert len(set(e)) == 9  # no repeats within an epoch
    assert epochs[0] != epochs[1]
    assert order(seed=1, start_step=3, steps=3) == epochs[1]
    assert order(seed=1, start_step=0, steps=3, parallel=1) == epochs[0]
    assert order(seed=2, start_step=0, steps=3) != epochs[0]
    p = pipeline.epoch_permutation(1, 4, 10).numpy()
    np.testing.assert_array_equal(np.sort(p), np.arange(10))
    np.testing.assert_array_equal(p, pipeline.epoch_permutation(1, 4, 10).numpy())


def coded_sample(size=32, block=8, seed=0):
    """Mask of constant blocks; the image encodes the mask, the weight encodes it too."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 4, (size // block, size // block))
    mask = np.kron(grid, np.ones((block, block), np.int64)).astype(np.int32)
    image = np.repeat((mask / 3.0)[..., None], 3, -1).astype(np.float32)
    weight = (1.0 + mask).astype(np.float32)
    return tf.constant(image), tf.constant(mask[..., None]), tf.constant(weight[..., None])


def test_augmentation_keeps_image_mask_weight_aligned():
    image, mask, weight = coded_sample()
    geo = AugmentConfig(scale=[1.0, 1.0], brightness=0.0, contrast=0.0)
    seen = set()
    for i in range(12):
        key = tf.constant([3, i], tf.int64)
        out = pipeline.augment(image, mask, weight, key, (32, 32), geo)
        m = out["mask"].numpy()[..., 0]
        np.testing.assert_array_equal(np.round(out["image"].numpy()[..., 0] * 3), m)
        np.testing.assert_allclose(out["weight"].numpy()[..., 0], 1.0 + m)
        seen.add(m.tobytes())
    assert len(seen) > 4  # flips / rotations really happened
    # Random resized crops: bilinear image vs nearest mask agree away from block edges.
    crop = AugmentConfig(scale=[0.3, 0.7], brightness=0.0, contrast=0.0)
    for i in range(6):
        out = pipeline.augment(image, mask, weight, tf.constant([4, i], tf.int64), (32, 32), crop)
        m = out["mask"].numpy()[..., 0]
        code = np.round(out["image"].numpy()[..., 0] * 3)
        assert (code == m).mean() > 0.9
        np.testing.assert_array_equal(out["weight"].numpy()[..., 0], 1.0 + m)
    # Photometric changes touch the image only.
    photo = AugmentConfig(hflip=False, vflip=False, rot90=False, scale=[1, 1], brightness=0.3)
    out = pipeline.augment(image, mask, weight, tf.constant([5, 0], tf.int64), (32, 32), photo)
    np.testing.assert_array_equal(out["mask"].numpy(), mask.numpy())
    np.testing.assert_array_equal(out["weight"].numpy(), weight.numpy())
    assert not np.allclose(out["image"].numpy(), image.numpy())


def test_rotation_moves_points_by_the_angle_and_keeps_labels():
    # Closed forms: a quarter turn is tf.image.rot90 (counter-clockwise); a blob at distance r
    # right of the centre moves to (cy - r sin a, cx + r cos a) (y down, counter-clockwise).
    x = np.random.default_rng(0).random((7, 7, 2)).astype(np.float32)
    for interpolation in ("BILINEAR", "NEAREST"):
        turned = pipeline.rotate(tf.constant(x), tf.constant(np.pi / 2), interpolation)
        np.testing.assert_allclose(turned.numpy(), np.rot90(x, 1, axes=(0, 1)), atol=1e-5)
    yy, xx = np.mgrid[0:41, 0:41].astype(np.float32)
    cy = cx = 20.0
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx - 10) ** 2) / (2 * 1.5**2))[..., None]
    a = np.deg2rad(30.0)
    out = pipeline.rotate(tf.constant(blob), tf.constant(a, tf.float32), "BILINEAR").numpy()[..., 0]
    centroid = ((yy * out).sum() / out.sum(), (xx * out).sum() / out.sum())
    np.testing.assert_allclose(centroid, (cy - 10 * np.sin(a), cx + 10 * np.cos(a)), atol=0.05)
    cfg = AugmentConfig(
        hflip=False, vflip=False, rot90=False, scale=[1, 1], rotate=45, brightness=0, contrast=0
    )
    assert len(warped_masks(cfg, 6, 8)) == 8  # a different angle per sample


def warped_masks(cfg, seed, n):
    """Augment `coded_sample` n times with a warping `cfg` and check what must hold: labels
    keep their values (nearest), the weight map follows the mask, the image agrees with the
    mask away from block edges, borders are reflected (no zeros). Returns the distinct masks."""
    image, mask, weight = coded_sample()
    seen = set()
    for i in range(n):
        out = pipeline.augment(image, mask, weight, tf.constant([seed, i], tf.int64), (32, 32), cfg)
        m = out["mask"].numpy()[..., 0]
        assert set(np.unique(m)) <= set(np.unique(mask.numpy()))
        code = np.round(out["image"].numpy()[..., 0] * 3)
        assert (code == m).mean() > 0.9
        assert (np.round(out["weight"].numpy()[..., 0]) == 1.0 + m).mean() > 0.9
        assert out["weight"].numpy().min() >= 1.0 - 1e-6
        seen.add(m.tobytes())
    return seen


def test_elastic_warp_resamples_at_the_displaced_points():
    # Closed forms: bilinear interpolation reproduces a linear ramp exactly, so a constant
    # displacement (dy, dx) gives ramp(y + dy, x + dx) wherever that point is inside; points
    # outside are mirrored at the border (x = -2 reads x = 2); a zero field is the identity.
    h, w = 20, 24
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.stack([0.5 * yy + 0.25 * xx, 3.0 - 0.1 * xx], -1)
    zero = tf.zeros([h, w, 2])
    for interpolation in ("BILINEAR", "NEAREST"):
        out = elastic.warp(tf.constant(ramp), zero, interpolation).numpy()
        np.testing.assert_allclose(out, ramp, atol=1e-6)
    dy, dx = 1.25, -2.5
    field = tf.constant(np.broadcast_to([dy, dx], (h, w, 2)).astype(np.float32))
    out = elastic.warp(tf.constant(ramp), field, "BILINEAR").numpy()
    want = np.stack([0.5 * (yy + dy) + 0.25 * (xx + dx), 3.0 - 0.1 * (xx + dx)], -1)
    inside = (yy + dy <= h - 1) & (xx + dx >= 0)
    np.testing.assert_allclose(out[inside], want[inside], atol=1e-5)
    shift = tf.constant(np.broadcast_to([0.0, -2.0], (h, w, 2)).astype(np.float32))
    labels = np.random.default_rng(1).integers(0, 4, (h, w, 1)).astype(np.int32)
    moved = elastic.warp(tf.constant(labels), shift, "NEAREST").numpy()
    assert moved.dtype == np.int32
    np.testing.assert_array_equal(moved[:, 0], labels[:, 2])  # mirrored: -2 -> 2
    np.testing.assert_array_equal(moved[:, 1], labels[:, 1])
    np.testing.assert_array_equal(moved[:, 2:], labels[:, :-2])
    # The field's unit is pixels: with one control point per pixel (no interpolation) its
    # standard deviation is the requested one.
    key = tf.constant([3, 4], tf.int64)
    f = elastic.displacement_field(key, 64, 64, 6.0, 64).numpy()
    assert f.shape == (64, 64, 2)
    assert abs(f.std() - 6.0) < 0.3 and abs(f.mean()) < 0.3
    smooth = elastic.displacement_field(key, 64, 64, 6.0, 3).numpy()
    # A coarse grid: neighbouring pixels move alike (independent ones differ by ~6 * sqrt 2).
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.05 * np.abs(np.diff(f, axis=0)).mean()


def test_elastic_augment_keeps_labels_and_moves_every_field_together():
    cfg = AugmentConfig(
        hflip=False, vflip=False, rot90=False, scale=[1, 1], elastic=4, brightness=0, contrast=0
    )
    seen = warped_masks(cfg, 7, 6)
    image, mask, weight = coded_sample()
    assert len(seen) == 6 and mask.numpy()[..., 0].tobytes() not in seen  # every sample moved
    off = AugmentConfig(
        hflip=False, vflip=False, rot90=False, scale=[1, 1], brightness=0, contrast=0
    )
    out = pipeline.augment(image, mask, weight, tf.constant([7, 0], tf.int64), (32, 32), off)
    np.testing.assert_array_equal(out["mask"].numpy(), mask.numpy())


# ----------------------------------------------------------------------------- configs


def test_yaml_configs_match_schemas(tmp_path):
    for path in sorted(CONF.glob("*.yaml")):
        values = OmegaConf.to_container(OmegaConf.load(path))
        values.pop("defaults", None)
        if values.get("root") == "???":
            values["root"] = str(tmp_path)
        cfg = parse_data_config(values)
        assert cfg.name == path.stem


@pytest.mark.parametrize(
    "override, message",
    [
        ({"name": "nope"}, r"data.name='nope'.*shapes, folder"),
        ({"weight_map": "border"}, r"data.weight_map='border'.*unet_border"),
        ({"mask_interpolation": "cubic"}, r"data.mask_interpolation='cubic'.*linear, nearest"),
        ({"bogus": 1}, r"Unknown key data.bogus"),
        ({"augment": {"flip": True}}, r"Unknown key data.augment.flip"),
        ({"augment": {"scale": [0.5, 2.0]}}, r"data.augment.scale"),
        ({"augment": {"rotate": 270}}, r"data.augment.rotate=270.*\[0, 180\]"),
        ({"augment": {"elastic": -1}}, r"data.augment.elastic=-1.*pixels"),
        ({"augment": {"elastic_grid": 1}}, r"data.augment.elastic_grid=1.*>= 2"),
        ({"augment": {"gamma": -0.5}}, r"data.augment.gamma=-0.5.*\[0, 4\]"),
        ({"augment": {"noise": 2}}, r"data.augment.noise=2.*standard deviation"),
        ({"image_size": [32]}, r"data.image_size"),
        ({"num_classes": 3}, r"data.num_classes=3"),
        ({"background_class": 0}, r"data.background_class=0.*null unless the data is multiclass"),
        ({"num_classes": 5, "background_class": 5}, r"data.background_class=5.*class id 0\.\.4"),
    ],
)
def test_bad_config(override, message):
    with pytest.raises(ValueError, match=message):
        build_datasets(tiny_shapes(**override), global_batch_size=2)


def test_batch_larger_than_train_set():
    with pytest.raises(ValueError, match="global_batch_size=64"):
        build_datasets(tiny_shapes(), global_batch_size=64)


# ----------------------------------------------------------------------------- folder


def write_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    if image.dtype == np.float32:
        np.save(folder / "images" / f"{stem}.npy", image)
    else:
        Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")  # uint16 -> 16-bit PNG


def rand_pair(rng, h=16, w=16, values=(0, 255)):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.choice(np.array(values, np.uint8), (h, w))
    return image, mask


def folder_cfg(root, **kw):
    cfg = {"name": "folder", "root": str(root), "image_size": [16, 16], "num_workers": 2}
    cfg.update(kw)
    return cfg


def test_folder_ratio_split_binary_0_255(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {f"s{i}": rand_pair(rng) for i in range(10)}
    for stem, (img, mask) in pairs.items():
        write_pair(tmp_path, stem, img, mask)
    bundle = build_datasets(folder_cfg(tmp_path, val_ratio=0.3), global_batch_size=2)
    assert (bundle.info.train_size, bundle.info.val_size) == (7, 3)
    images, masks = bundle.val_images(3)
    # Match every val sample with its file: image / 255 and 0/255 -> 0/1.
    for img, m in zip(images, masks):
        stem = min(pairs, key=lambda s: np.abs(pairs[s][0] / 255.0 - img).max())
        np.testing.assert_allclose(img, pairs[stem][0] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(m[..., 0], pairs[stem][1] // 255)
    batch = take(bundle.train, 1)[0]
    assert set(np.unique(batch["mask"])) <= {0, 1}
    # The split depends on split_seed only.
    again = build_datasets(folder_cfg(tmp_path, val_ratio=0.3), global_batch_size=2)
    np.testing.assert_array_equal(again.val_images(3)[0], images)


def test_folder_reads_gif_images_and_masks_and_refuses_animations(tmp_path):
    # DRIVE-style: TIFF images with 0/255 GIF masks (palette mode, gray palette): read as 0/1.
    import tifffile

    from zoo.data.io import read_image_raw

    rng = np.random.default_rng(3)
    pairs = {f"s{i}": rand_pair(rng) for i in range(5)}
    for stem, (img, mask) in pairs.items():
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "images" / f"{stem}.tif", img, photometric="rgb")
        Image.fromarray(mask).convert("P").save(tmp_path / "masks" / f"{stem}.gif")
    assert Image.open(tmp_path / "masks" / "s0.gif").mode == "P"
    bundle = build_datasets(folder_cfg(tmp_path, val_ratio=0.4), global_batch_size=2)
    images, masks = bundle.val_images(2)
    for img, m in zip(images, masks):
        stem = min(pairs, key=lambda s: np.abs(pairs[s][0] / 255.0 - img).max())
        np.testing.assert_allclose(img, pairs[stem][0] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(m[..., 0], pairs[stem][1] // 255)
    # A palette GIF: its colors as an image, its indices as a mask.
    indices = rng.integers(0, 3, (12, 10), dtype=np.uint8)
    pal = Image.fromarray(indices, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pal.save(tmp_path / "pal.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.gif"), indices)
    colors = read_image_raw(tmp_path / "pal.gif")
    np.testing.assert_array_equal(colors[..., 0], np.where(indices == 1, 255, 0))
    np.testing.assert_array_equal(colors[..., 2], np.where(indices == 2, 255, 0))
    # Two frames: which one is the mask is not ours to guess.
    frames = [Image.fromarray(m, "L").convert("P") for m in (pairs["s0"][1], pairs["s1"][1])]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"'.*anim\.gif' has 2 frames; expected one image"):
        read_mask(tmp_path / "anim.gif")


def test_crop_mode_validates_every_pixel_of_larger_images(tmp_path, monkeypatch):
    # A 40x24 validation image with 16x16 windows: rows start at 0, 16, 24 (the last flush
    # with the edge), columns at 0, 8; a 16x16 one is one window; a 10x16 one (shorter than
    # the window) is one window resized as before. The windows hold the image's own pixels.
    assert pipeline.eval_windows(np.array([[40, 24], [16, 16], [10, 16]]), (16, 16)).tolist() == [
        [0, 0, 0], [0, 0, 8], [0, 16, 0], [0, 16, 8], [0, 24, 0], [0, 24, 8],
        [1, 0, 0], [2, 0, 0],
    ]  # fmt: skip
    rng = np.random.default_rng(5)
    big, big_mask = rand_pair(rng, 40, 24)
    write_pair(tmp_path / "val", "big", big, big_mask)
    for i in range(3):
        write_pair(tmp_path / "train", f"t{i}", *rand_pair(rng, 40, 24))
    bundle = build_datasets(folder_cfg(tmp_path, resize="crop"), global_batch_size=2)
    assert bundle.info.val_size == 6
    batches = list(bundle.val)
    images = np.concatenate([b["image"].numpy() for b in batches])
    masks = np.concatenate([b["mask"].numpy() for b in batches])[..., 0]
    assert images.shape == (6, 16, 16, 3) and [len(b["image"]) for b in batches] == [2, 2, 2]
    for k, (y0, x0) in enumerate([(0, 0), (0, 8), (16, 0), (16, 8), (24, 0), (24, 8)]):
        np.testing.assert_allclose(images[k], big[y0 : y0 + 16, x0 : x0 + 16] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(masks[k], big_mask[y0 : y0 + 16, x0 : x0 + 16] // 255)
    # Too many windows to cache (many large images): the same batches, cut on every pass.
    monkeypatch.setattr("zoo.data.build.VAL_CACHE_BYTES", 0)
    uncached = build_datasets(folder_cfg(tmp_path, resize="crop"), global_batch_size=2)
    for _ in range(2):
        again = np.concatenate([b["image"].numpy() for b in uncached.val])
        np.testing.assert_array_equal(again, images)
    covered = np.zeros((40, 24), bool)
    for _, y0, x0 in pipeline.eval_windows(np.array([[40, 24]]), (16, 16)):
        covered[y0 : y0 + 16, x0 : x0 + 16] = True
    assert covered.all()


def test_too_few_training_images_for_the_batch_name_a_batch_that_fits(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        write_pair(tmp_path, f"t{i}", *rand_pair(rng))
    cfg = folder_cfg(tmp_path, batch_size=4, val_ratio=0.0)
    with pytest.raises(
        ValueError,
        match=r"has 3 samples, fewer than global_batch_size=4; .*"
        r"data.batch_size=3\), add data, or let recipe=auto plan the batch",
    ):
        build_datasets(cfg, global_batch_size=4)
    # Two replicas of 4: 3 images give one full global batch at 1 per replica.
    with pytest.raises(ValueError, match=r"global_batch_size=8; .*data.batch_size=1\)"):
        build_datasets(cfg, global_batch_size=8)


def test_fewer_images_than_a_batch_draw_several_crops_each(tmp_path):
    # 3 images of 40x40 hold 2 x 2 crops of 16x16 each (12 in all): a batch of 8 is drawn as
    # 3 passes' worth of draws, every image in it 2-3 times, each draw at its own window.
    yy, xx = np.mgrid[0:40, 0:40]
    for i in range(3):
        image = np.stack([np.full((40, 40), 40 * i + 10), yy * 5, xx * 5], -1).astype(np.uint8)
        write_pair(tmp_path, f"t{i}", image, np.zeros((40, 40), np.uint8))
    crops_only = {"hflip": False, "vflip": False, "rot90": False, "scale": [1.0, 1.0],
                  "brightness": 0.0, "contrast": 0.0}  # fmt: skip
    cfg = folder_cfg(tmp_path, batch_size=8, val_ratio=0.0, augment=crops_only)
    bundle = build_datasets(cfg, global_batch_size=8, seed=3)
    assert (bundle.info.train_size, bundle.info.steps_per_epoch) == (3, 1)  # 9 draws // 8
    batches = [b["image"].numpy() for b in bundle.train.take(3)]
    for x in batches:
        ids = np.rint(x[:, 0, 0, 0] * 255 - 10).astype(int) // 40
        assert sorted(np.bincount(ids, minlength=3)) == [2, 3, 3]
        corners = {(i, round(y * 51), round(z * 51)) for i, y, z in zip(ids, x[:, 0, 0, 1],
                                                                        x[:, 0, 0, 2])}  # fmt: skip
        # Draws of one image are different crops (25 x 25 windows possible in 40 px).
        assert len(corners) >= 6
        # Each crop is a 16x16 window of its image: the coordinates step by one pixel.
        np.testing.assert_allclose(np.diff(x[:, :, 0, 1], axis=1) * 255, 5, atol=1e-3)
    # Resume: the stream from step 2 is the full stream's third batch.
    again = build_datasets(cfg, global_batch_size=8, seed=3, start_step=2)
    np.testing.assert_array_equal(next(iter(again.train))["image"].numpy(), batches[2])
    # A batch no larger than the images: one draw per image and pass.
    small = build_datasets({**cfg, "batch_size": 2}, global_batch_size=2, seed=3)
    assert small.info.steps_per_epoch == 1
    # Crops that cannot fill a batch: the error counts them and names a batch that fits.
    fits = r"lower data.batch_size \(e.g. data.batch_size=12\)"
    with pytest.raises(
        ValueError,
        match=r"has 3 samples \(12 crops of 16x16\), fewer than global_batch_size=16; " + fits,
    ):
        build_datasets({**cfg, "batch_size": 16}, global_batch_size=16)


def test_folder_subfolders_16bit_multiclass_resize_and_npy(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img, mask = rand_pair(rng, 24, 20, values=(0, 1, 2, 255))
            write_pair(tmp_path / split, f"{split}{i}", img, mask.astype(np.uint16))
    write_pair(
        tmp_path / "train",
        "float",
        rng.random((24, 20, 3)).astype(np.float32),
        np.zeros((24, 20), np.uint8),
    )
    cfg = folder_cfg(
        tmp_path, num_classes=3, ignore_index=255, image_size=[12, 10], resize="resize"
    )
    bundle = build_datasets(cfg, global_batch_size=2)
    assert (bundle.info.train_size, bundle.info.val_size) == (5, 2)
    src = read_mask(tmp_path / "val" / "masks" / "val0.png")
    assert src.max() == 255 and src.dtype == np.int32
    _, masks = bundle.val_images(1)
    # Nearest-neighbour downscale by 2: only values of the source, no blends.
    assert set(np.unique(masks)) <= {0, 1, 2, 255}
    assert masks.shape == (1, 12, 10, 1)
    batch = take(bundle.train, 1)[0]
    assert batch["image"].shape == (2, 12, 10, 3)
    # Mixed 8-bit PNG and float .npy sources: everything scaled to [0, 1] exactly once.
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].max() > 0.3  # not scaled twice
    assert set(np.unique(batch["mask"])) <= {0, 1, 2, 255}
    # weight_map none: ones, except ignored pixels (weight 0).
    np.testing.assert_array_equal(batch["weight"], (batch["mask"] != 255).astype(np.float32))


def test_folder_crop_mode_and_instance_masks(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(4):
        img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        inst = np.zeros((20, 30), np.uint8)
        inst[2:8, 2:12], inst[2:8, 13:25] = 1, 2  # two touching-ish instances
        write_pair(tmp_path, f"i{i}", img, inst)
    cfg = folder_cfg(
        tmp_path, mask_type="instance", resize="crop", weight_map="unet_border", val_ratio=0.25
    )
    bundle = build_datasets(cfg, global_batch_size=3)
    _, masks = bundle.val_images(1)
    assert masks.shape == (1, 16, 16, 1) and set(np.unique(masks)) <= {0, 1}
    batch = take(bundle.train, 1)[0]
    assert batch["weight"].max() > 1.0  # border term between the two instances


def test_auto_image_size_hand_worked():
    from zoo.data.sizing import auto_image_size

    assert auto_image_size([(128, 128)] * 3)[0] == [128, 128]  # used whole
    assert auto_image_size([(100, 100), (300, 200)])[0] == [96, 96]  # multiples of 32
    assert auto_image_size([(100, 60)], divisor=16)[0] == [96, 48]
    assert auto_image_size([(1024, 768)])[0] == [256, 256]  # CPU-sized crops at native scale
    size, why = auto_image_size([(20, 20)])
    assert size == [32, 32] and "upsampled" in why  # only below the model's divisor
    # A 100x130 thumbnail among 19 photos of 300x400 does not set the crop: 256 px, the
    # thumbnail enlarged to it; one of 230x390 is no outlier (230 >= 3/4 of 300) and sets 224;
    # two thumbnails of 20 (10%) are the 10th percentile themselves and set the crop (96x128).
    size, why = auto_image_size([(300, 400)] * 19 + [(100, 130)])
    assert size == [256, 256] and why.endswith("(down to 100x130) are enlarged to the crop")
    assert auto_image_size([(300, 400)] * 19 + [(230, 390)])[0] == [224, 256]
    assert auto_image_size([(300, 400)] * 18 + [(100, 130)] * 2)[0] == [96, 128]


def test_folder_defaults_keep_native_resolution(tmp_path):
    # Five 100x100 tiles and one 120x150 image, with the folder defaults (image_size: null,
    # resize: crop): 96x96 crops of the stored pixels, nothing resampled.
    rng = np.random.default_rng(5)
    pairs = {f"s{i}": rand_pair(rng, 100, 100) for i in range(5)}
    pairs["big"] = rand_pair(rng, 120, 150)
    for stem, (img, mask) in pairs.items():
        write_pair(tmp_path, stem, img, mask)
    cfg = {"name": "folder", "root": str(tmp_path), "num_workers": 2}
    parsed = parse_data_config(cfg)
    assert (parsed.image_size, parsed.resize, parsed.batch_size) == (None, "crop", 8)
    bundle = build_datasets(cfg, global_batch_size=2)
    assert bundle.info.image_size == (96, 96)
    images, masks = bundle.val_images(1)
    # The first validation window is the top-left 96x96 of a stored image, pixel for pixel
    # (the windows that follow cover the rest of it).
    crops = {s: (img[:96, :96], m) for s, (img, m) in pairs.items()}
    stem = min(crops, key=lambda s: np.abs(crops[s][0] / 255.0 - images[0]).max())
    np.testing.assert_allclose(images[0], crops[stem][0] / 255.0, atol=1e-6)
    batch = take(bundle.train, 1)[0]
    assert batch["image"].shape == (2, 96, 96, 3)
    # A model that takes multiples of 4 trains on the whole 100x100 tiles.
    cfg["val_ratio"] = 0.0
    del pairs["big"]
    (tmp_path / "images" / "big.png").unlink()
    (tmp_path / "masks" / "big.png").unlink()
    assert build_datasets(cfg, global_batch_size=2, size_divisor=4).info.image_size == (100, 100)


def test_read_image_formats(tmp_path):
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (3, 4, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[..., 1], gray16 / 65535.0, atol=1e-6)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[..., 0], 1.0)


def test_image_intensity_rule_is_one_for_every_source(tmp_path):
    """docs/data.md "Image intensities": uint8 / 255, uint16 / 65535, floats in [0, 1] as they
    are; floats outside [0, 1] and signed / 32-bit integers refused, never clipped."""
    ramp = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(ramp).save(tmp_path / "f01.tif")  # 32-bit float TIFF (Pillow mode "F")
    np.save(tmp_path / "f01.npy", ramp.astype(np.float64))
    for name in ("f01.tif", "f01.npy"):
        np.testing.assert_array_equal(
            read_image(tmp_path / name), np.repeat(ramp[..., None], 3, -1)
        )
    # The same values times 255: the old TIFF reader clipped them to 99.7% white.
    Image.fromarray(ramp * 255).save(tmp_path / "f255.tif")
    np.save(tmp_path / "f255.npy", ramp * 255)
    Image.fromarray(ramp - 0.5).save(tmp_path / "neg.tif")
    for name, lo, hi in (("f255.tif", 0, 255), ("f255.npy", 0, 255), ("neg.tif", -0.5, 0.5)):
        with pytest.raises(
            ValueError,
            match=rf"'.*{name}' .* values in \[{lo}, {hi}\]; float images must lie in \[0, 1\]",
        ):
            read_image(tmp_path / name)
    # Unsigned 16 bit: / 65535 from TIFF, PNG and .npy (either byte order) alike.
    u16 = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300
    Image.fromarray(u16).save(tmp_path / "u16.tif")
    Image.fromarray(u16).save(tmp_path / "u16.png")
    np.save(tmp_path / "u16.npy", u16.astype(">u2"))
    for name in ("u16.tif", "u16.png", "u16.npy"):
        np.testing.assert_allclose(read_image(tmp_path / name)[..., 2], u16 / 65535.0, atol=1e-7)
    # Signed or 32-bit integers have no standard full scale: refused, not divided by 65535.
    Image.fromarray(u16.astype(np.int32) * 10).save(tmp_path / "i32.tif")
    np.save(tmp_path / "i64.npy", u16.astype(np.int64))
    for name in ("i32.tif", "i64.npy"):
        with pytest.raises(ValueError, match=rf"'.*{name}' .*integer images must be unsigned 8 or"):
            read_image(tmp_path / name)


def make_valid(root, n=4):
    rng = np.random.default_rng(3)
    for i in range(n):
        write_pair(root, f"x{i}", *rand_pair(rng))


BAD_CASES = {
    "missing_root": (lambda r: None, FileNotFoundError, r"data.root not found: '.*nowhere'"),
    "missing_masks_dir": (
        lambda r: [p.unlink() for p in (r / "masks").iterdir()] and (r / "masks").rmdir(),
        FileNotFoundError,
        r"Missing folder '.*masks'",
    ),
    "image_without_mask": (
        lambda r: (r / "masks" / "x1.png").unlink(),
        ValueError,
        r"Image '.*x1.png' has no mask",
    ),
    "mask_without_image": (
        lambda r: (r / "images" / "x2.png").unlink(),
        ValueError,
        r"Mask '.*x2.png' has no image",
    ),
    "size_mismatch": (
        lambda r: Image.fromarray(np.zeros((8, 16), np.uint8)).save(r / "masks" / "x0.png"),
        ValueError,
        r"Image '.*x0.png' is 16x16 but its mask '.*x0.png' is 8x16",
    ),
    "value_out_of_range": (
        lambda r: Image.fromarray(np.full((16, 16), 7, np.uint8)).save(r / "masks" / "x3.png"),
        ValueError,
        r"Mask '.*x3.png' has value 7 out of range for num_classes=1 \(allowed: 0/1 or 0/255\); "
        r"set data.num_classes=8 \(or more\)",
    ),
    "nan_image": (
        lambda r: (
            (r / "images" / "x1.png").unlink(),
            np.save(r / "images" / "x1.npy", np.full((16, 16, 3), np.nan, np.float32)),
        ),
        ValueError,
        r"Image '.*x1.npy' contains NaN or Inf",
    ),
    "inf_image": (
        lambda r: (
            (r / "images" / "x1.png").unlink(),
            np.save(r / "images" / "x1.npy", np.where(np.eye(16)[..., None] > 0, np.inf, 0.5)),
        ),
        ValueError,
        r"Image '.*x1.npy' contains NaN or Inf",
    ),
    "float_tiff_out_of_range": (
        lambda r: (
            (r / "images" / "x1.png").unlink(),
            Image.fromarray(np.full((16, 16), 200.0, np.float32)).save(r / "images" / "x1.tif"),
        ),
        ValueError,
        r"Image '.*x1.tif' is a float TIFF with values in \[200, 200\]; float images must lie in",
    ),
    "corrupt_image": (
        lambda r: (r / "images" / "x2.png").write_bytes(b"\x89PNG not really"),
        ValueError,
        r"Cannot read image '.*x2.png'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_folder_bad_input(tmp_path, case):
    make_valid(tmp_path)
    damage, error, message = BAD_CASES[case]
    damage(tmp_path)
    root = tmp_path / "nowhere" if case == "missing_root" else tmp_path
    with pytest.raises(error, match=message):
        build_datasets(folder_cfg(root), global_batch_size=2)


def test_folder_255_needs_ignore_index(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(4):
        write_pair(tmp_path, f"m{i}", *rand_pair(rng, values=(0, 1, 2, 255)))
    with pytest.raises(ValueError, match=r"value 255 out of range .*set data.ignore_index=255"):
        build_datasets(folder_cfg(tmp_path, num_classes=3), global_batch_size=2)
    bundle = build_datasets(
        folder_cfg(tmp_path, num_classes=3, ignore_index=255), global_batch_size=2
    )
    assert bundle.info.ignore_index == 255


def test_skip_corrupt_counts_and_limits(tmp_path):
    make_valid(tmp_path, n=10)
    (tmp_path / "images" / "x4.png").write_bytes(b"garbage")
    cfg = folder_cfg(tmp_path, skip_corrupt=True, max_corrupt_ratio=0.1)
    bundle = build_datasets(cfg, global_batch_size=2)
    assert len(bundle.info.skipped) == 1 and bundle.info.skipped[0].endswith("x4.png")
    assert bundle.info.train_size + bundle.info.val_size == 9
    (tmp_path / "masks" / "x5.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"2 of 10 samples are unreadable .*max_corrupt_ratio=0.1"):
        build_datasets(cfg, global_batch_size=2)


def test_pets_without_tfds_has_clear_error():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"segzoo\[tfds\]"):
            build_datasets({"name": "pets"}, global_batch_size=2)
    else:
        pytest.skip("tensorflow-datasets is installed; the download path is not tested")


def test_shapes_disk_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    a = generate_shapes(3, (24, 24), seed=11, cache=True)
    assert len(list(tmp_path.glob("shapes-*.npz"))) == 1
    shapes._MEMORY.clear()
    b = generate_shapes(3, (24, 24), seed=11, cache=True)  # read back from disk
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert b.instances.dtype == np.int32


def test_native_sizes_and_input_scale_are_recorded(tmp_path):
    """The sizes as stored, before resizing, give the model's input_scale (median per axis)."""
    rng = np.random.default_rng(5)
    sizes = [(64, 128), (64, 128), (32, 64), (64, 64)]
    for i, (h, w) in enumerate(sizes):
        write_pair(tmp_path / "train", f"t{i}", *rand_pair(rng, h, w))
    write_pair(tmp_path / "val", "v0", *rand_pair(rng, 20, 24))
    cfg = folder_cfg(tmp_path, image_size=[32, 32], resize="resize")
    info = build_datasets(cfg, global_batch_size=2).info
    assert sorted(info.native_sizes) == sorted(sizes)  # training images only
    # y factors 32/64, 32/64, 32/32, 32/64 -> 0.5; x 32/128, 32/128, 32/64, 32/64 -> 0.375
    assert info.input_scale == (0.5, 0.375)
    # crop keeps native resolution; images smaller than a crop were upscaled: 32/16 = 2
    for i in range(3):
        write_pair(tmp_path / "crop", f"c{i}", *rand_pair(rng, *[(16, 40), (16, 40), (64, 90)][i]))
    crop = folder_cfg(tmp_path / "crop", image_size=[32, 32], resize="crop", val_ratio=0)
    assert build_datasets(crop, global_batch_size=1).info.input_scale == (2.0, 2.0)
    assert build_datasets(tiny_shapes(), global_batch_size=4).info.input_scale == (1.0, 1.0)


def test_one_reader_one_rule_for_training_and_inference(tmp_path):
    """zoo.data.io decodes every file once: training (read_image_raw), evaluation and tiled
    inference (read_pixels, memory-mapped) see the same pixels, and the same refusals."""
    import tifffile

    from zoo.data.io import read_image_raw, read_pixels
    from zoo.inference import TiledPredictor

    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    u16 = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    tifffile.imwrite(tmp_path / "rgb_zip.tif", rgb, photometric="rgb", compression="zlib")
    np.save(tmp_path / "u16be.npy", u16.astype(">u2"))
    Image.fromarray(u16).save(tmp_path / "u16.tif")
    Image.fromarray(rgb[..., 0]).convert("1").save(tmp_path / "bits.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    for name in ("rgb.png", "rgb_zip.tif", "u16be.npy", "u16.tif", "bits.png", "pal.png"):
        stored = read_pixels(tmp_path / name)
        trained = read_image_raw(tmp_path / name)
        as_rgb = np.repeat(stored[..., None], 3, -1) if stored.ndim == 2 else stored[..., :3]
        if trained.dtype == np.uint8:
            np.testing.assert_array_equal(trained, as_rgb, err_msg=name)
        else:  # 16 bit: / 65535, either byte order
            np.testing.assert_allclose(trained, as_rgb / 65535.0, atol=1e-7, err_msg=name)
    assert isinstance(read_pixels(tmp_path / "rgb_zip.tif"), np.memmap)
    np.testing.assert_array_equal(read_pixels(tmp_path / "rgb_zip.tif"), rgb)
    assert set(np.unique(read_pixels(tmp_path / "bits.png"))) <= {0, 255}
    # A palette TIFF: colors as an image, indices as a mask.
    indices = rng.integers(0, 4, (12, 10), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = np.array([[0, 0, 0], [65535, 0, 0], [0, 65535, 0], [0, 0, 65535]]).T
    tifffile.imwrite(tmp_path / "pal.tif", indices, photometric="palette", colormap=cmap)
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.tif"), indices)
    colors = read_image_raw(tmp_path / "pal.tif")
    np.testing.assert_array_equal(colors[..., 0], np.where(indices == 1, 255, 0))
    # The refusals are the same for every consumer, arrays given to the predictor included.
    np.save(tmp_path / "f255.npy", rgb.astype(np.float32))
    np.save(tmp_path / "i16.npy", u16.astype(np.int16))
    import keras

    x = keras.Input((None, None, 3))
    predictor = TiledPredictor(keras.Model(x, keras.layers.Conv2D(1, 1)(x)), tile=None)
    for name, needle in (("f255.npy", "float images must lie in"), ("i16.npy", "unsigned 8")):
        for reader in (read_pixels, read_image_raw):
            with pytest.raises(ValueError, match=rf"'.*{name}' .*{needle}"):
                reader(tmp_path / name)
        with pytest.raises(ValueError, match=needle):
            predictor.predict(np.load(tmp_path / name))
    nan = rng.random((12, 10, 3)).astype(np.float32)
    nan[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf values \(1 values\)"):
        predictor.predict(nan)


def test_pillow_limit_is_lifted_for_our_reads_only_and_restored_across_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from zoo.data.io import read_pixels

    limit = Image.MAX_IMAGE_PIXELS
    image = np.zeros((30, 40, 3), np.uint8)
    for i in range(8):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: read_pixels(tmp_path / f"{i}.png"), range(8)))
    assert Image.MAX_IMAGE_PIXELS == limit
    with pytest.raises(ValueError, match=r"0\.png' has 1200 pixels, more than max_pixels=1000"):
        read_pixels(tmp_path / "0.png", max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_resample_shrinks_before_cropping_and_sets_the_input_scale(tmp_path):
    """`data.resample`: the stored images are resampled (Pillow bilinear, masks nearest) before
    crops are cut; the automatic crop size and the input scale follow the resampled size."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)
    mask = np.zeros((128, 96), np.uint8)
    mask[20:84, 10:50] = 255  # 64 x 40 px -> 32 x 20 px at 0.5x
    for split in ("train", "val"):
        for i in range(2):
            write_pair(tmp_path / split, f"{split}{i}", image, mask)
    cfg = folder_cfg(tmp_path, image_size=None, resample=0.5)
    bundle = build_datasets(cfg, global_batch_size=2)
    info = bundle.info
    # 64 x 48 after resampling -> crops of 64 x 32 (divisor 32); the model sees 0.5x.
    assert list(info.image_size) == [64, 32]
    assert tuple(info.input_scale) == (0.5, 0.5)
    assert sorted(info.native_sizes) == [(128, 96)] * 2  # stored sizes, as before
    # The first validation window is the top-left 64 x 32 of the image shrunk to 64 x 48.
    images, masks = bundle.val_images(1)
    small = np.asarray(Image.fromarray(image).resize((48, 64), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(images[0], small[:, :32], atol=1e-6)
    expected = np.zeros((64, 48), np.int32)
    expected[10:42, 5:25] = 1
    np.testing.assert_array_equal(masks[0][..., 0], expected[:, :32])


@pytest.mark.parametrize(
    "override, message",
    [({"resample": 0}, r"data.resample=0; expected a factor in \(0, 4\]"),
     ({"resample": -0.5}, r"data.resample=-0.5"),
     ({"resample": 0.5, "resize": "resize"}, r"data.resample=0.5; expected 1 with resize=resize")],
)  # fmt: skip
def test_bad_resample_is_one_line(tmp_path, override, message):
    write_pair(tmp_path, "a", *rand_pair(np.random.default_rng(0)))
    with pytest.raises(ValueError, match=message):
        build_datasets(folder_cfg(tmp_path, val_ratio=0, **override), global_batch_size=1)


def test_binary_jpeg_masks_are_thresholded_and_class_ids_refused(tmp_path):
    # A 0/255 mask saved as JPEG comes back with compression noise near its edges; it is read
    # as 1 where the gray level is >= 128, which recovers the drawn mask.
    rng = np.random.default_rng(4)
    truth = np.zeros((48, 48), np.uint8)
    truth[8:30, 12:40] = 255
    for i in range(3):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"a{i}.png"
        )
        Image.fromarray(np.stack([truth] * 3, -1)).save(
            tmp_path / "masks" / f"a{i}.jpg", quality=75
        )
    stored = np.asarray(Image.open(tmp_path / "masks" / "a0.jpg"))
    assert len(np.unique(stored)) > 2  # the file really is noisy
    np.testing.assert_array_equal(read_mask(tmp_path / "masks" / "a0.jpg"), truth // 255)
    bundle = build_datasets(folder_cfg(tmp_path, image_size=[48, 48], val_ratio=0.34),
                            global_batch_size=1)  # fmt: skip
    np.testing.assert_array_equal(bundle.val_images(1)[1][0][..., 0], truth // 255)
    with pytest.raises(ValueError, match=r"a0.jpg' is a JPEG: .*only be binary"):
        build_datasets(folder_cfg(tmp_path, num_classes=3), global_batch_size=1)


def test_mask_suffix_pairs_masks_named_after_their_images(tmp_path):
    rng = np.random.default_rng(6)
    for i in range(3):
        image, mask = rand_pair(rng)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / f"ISIC_{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"ISIC_{i}_segmentation.png")
    # Without the suffix: one line naming the image, and the setting that pairs them.
    with pytest.raises(
        ValueError, match=r"ISIC_0.png' has no mask.*data.mask_suffix=_segmentation"
    ):
        build_datasets(folder_cfg(tmp_path, val_ratio=0), global_batch_size=1)
    bundle = build_datasets(folder_cfg(tmp_path, val_ratio=0, mask_suffix="_segmentation"),
                            global_batch_size=1)  # fmt: skip
    assert bundle.info.train_size == 3
    from zoo.recipe import fingerprint_folder

    fp = fingerprint_folder(tmp_path, mask_suffix="_segmentation", cache=False)
    assert fp.num_train == 3
