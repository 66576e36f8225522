"""Label-mask resampling (`zoo.data.resample`, `data.mask_interpolation`)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo.data import build_datasets, pipeline
from zoo.data.config import AugmentConfig
from zoo.data.resample import resize_labels, resize_labels_np, resize_triplet

SIZES = [(5, 5), (64, 64), (37, 41), (128, 100), (20, 30), (12, 9)]


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int32)


def test_hand_worked_corner():
    # A 2x2 mask with three foreground pixels enlarged to 3x3: the centre output pixel samples
    # the source at (0.5, 0.5), where the bilinear image is the mean of the four pixels, 0.75:
    # linear gives foreground; nearest takes the source pixel (1, 1), background.
    m = tf.constant([[1, 1], [1, 0]])[..., None]
    assert resize_labels(m, (3, 3))[..., 0].numpy().tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    w = tf.ones((2, 2, 1))
    _, near, _ = resize_triplet(tf.zeros((2, 2, 1)), m, w, (3, 3), "nearest")
    assert near[..., 0].numpy().tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("size", SIZES)
def test_binary_mask_is_thresholded_bilinear_resize(size):
    m = (np.random.default_rng(sum(size)).random((23, 17, 1)) > 0.5).astype(np.int32)
    got = resize_labels(tf.constant(m), size).numpy()
    bilinear = tf.image.resize(m.astype(np.float32), size, method="bilinear").numpy()
    clear = np.abs(bilinear - 0.5) > 1e-4  # exact ties go to the nearest pixel
    np.testing.assert_array_equal(got[clear], (bilinear > 0.5)[clear])
    assert got.shape == (*size, 1) and got.dtype == np.int32


@pytest.mark.parametrize("size", SIZES)
def test_class_ids_are_argmax_of_resized_one_hot(size):
    # Ids 0, 1, 4 and the ignore label 255: no class count is needed, 255 is kept like a class.
    ids = np.array([0, 1, 4, 255])
    m = ids[np.random.default_rng(7).integers(0, 4, (19, 26))][..., None].astype(np.int64)
    got = resize_labels(tf.constant(m), size).numpy()[..., 0]
    one_hot = np.stack([m[..., 0] == v for v in ids], -1).astype(np.float32)
    r = tf.image.resize(one_hot, size, method="bilinear").numpy()
    top2 = np.sort(r, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4
    np.testing.assert_array_equal(got[clear], ids[r.argmax(-1)][clear])
    assert clear.mean() > 0.8


def test_multilabel_channels_resize_independently_and_same_size_is_identity():
    rng = np.random.default_rng(3)
    m = (rng.random((15, 15, 3)) > 0.6).astype(np.uint8)
    both = resize_labels(tf.constant(m), (33, 21)).numpy()
    for k in range(3):
        alone = resize_labels(tf.constant(m[..., k : k + 1]), (33, 21)).numpy()
        np.testing.assert_array_equal(both[..., k : k + 1], alone)
    assert both.dtype == np.uint8
    np.testing.assert_array_equal(resize_labels(tf.constant(m), (15, 15)).numpy(), m)


def test_weight_map_follows_the_mask_pixel_by_pixel():
    # Weights that are a function of the label (0 on ignored pixels) stay that function.
    rng = np.random.default_rng(11)
    ids = np.array([0, 1, 2, 255])
    m = ids[rng.integers(0, 4, (21, 18))][..., None].astype(np.int32)
    table = {0: 1.0, 1: 3.0, 2: 5.0, 255: 0.0}
    w = np.vectorize(table.get)(m).astype(np.float32)
    image = tf.zeros((21, 18, 3))
    for size in [(40, 40), (11, 13)]:
        _, mask, weight = resize_triplet(image, tf.constant(m), tf.constant(w), size, "linear")
        expect = np.vectorize(table.get)(mask.numpy()).astype(np.float32)
        np.testing.assert_array_equal(weight.numpy(), expect)


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_scale_jittered_crops_keep_outlines_where_the_image_has_them(interpolation):
    # The image is the mask itself (a disk, one channel): after a random resized crop the
    # mask should be where the resized image crosses 0.5. Linear resampling gets every pixel
    # that is not a tie; nearest keeps the enlarged source staircase and misses some.
    m = disk(48, 48, 23.3, 24.6, 15.2)
    image = tf.constant(m[..., None].astype(np.float32))
    mask, weight = tf.constant(m[..., None]), tf.ones((48, 48, 1))
    cfg = AugmentConfig(scale=[0.2, 0.4], brightness=0.0, contrast=0.0)
    wrong = 0
    for i in range(8):
        key = tf.constant([9, i], tf.int64)
        out = pipeline.augment(image, mask, weight, key, (48, 48), cfg, interpolation)
        img, lab = out["image"].numpy()[..., 0], out["mask"].numpy()[..., 0]
        clear = np.abs(img - 0.5) > 1e-4
        wrong += int(((img > 0.5) != lab)[clear].sum())
    assert (wrong == 0) if interpolation == "linear" else (wrong > 20)


def test_numpy_resize_follows_pillows_bilinear_image():
    # Hand-worked: two columns widened to four (Pillow samples at x = 0.25, 0.75 of the
    # source's two columns for outputs 0..3: the left two nearer 0, the right two nearer 3).
    assert resize_labels_np(np.array([[0, 3], [0, 3]]), (1, 4)).tolist() == [[0, 0, 3, 3]]
    # A binary disk up and down: Pillow's bilinear resize of the 0/1 map, thresholded.
    m = disk(40, 40, 19.5, 18.2, 11.7)
    for size in [(97, 71), (23, 17)]:
        got = resize_labels_np(m, size)
        f = np.asarray(Image.fromarray(m.astype(np.float32)).resize(size[::-1], Image.BILINEAR))
        clear = np.abs(f - 0.5) > 1e-4
        np.testing.assert_array_equal(got[clear], (f > 0.5)[clear])
    lab = np.stack([m, m.T], -1).astype(np.uint8)  # multilabel: channel by channel
    out = resize_labels_np(lab, (60, 60))
    assert out.shape == (60, 60, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], resize_labels_np(m.T.astype(np.uint8), (60, 60)))


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_folder_resize_mode_uses_the_chosen_interpolation(tmp_path, interpolation):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    m = disk(20, 20, 9.4, 10.3, 6.6)
    for i in range(3):
        Image.fromarray((m * 200 + 20).astype(np.uint8)).save(tmp_path / "images" / f"a{i}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "masks" / f"a{i}.png")
    cfg = {
        "name": "folder",
        "root": str(tmp_path),
        "resize": "resize",
        "image_size": [52, 52],
        "val_ratio": 0.34,
        "mask_interpolation": interpolation,
    }
    _, masks = build_datasets(cfg, global_batch_size=1).val_images(1)
    if interpolation == "linear":
        expect = resize_labels_np(m, (52, 52))
    else:
        expect = np.asarray(Image.fromarray(m).resize((52, 52), Image.NEAREST))
    np.testing.assert_array_equal(masks[0, ..., 0], expect)
    assert (
        resize_labels_np(m, (52, 52)) != np.asarray(Image.fromarray(m).resize((52, 52), 0))
    ).any()
