"""Color-coded class masks (`data.class_colors`): reading, config errors, the app end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data import build_datasets
from zoo.data.colors import colors_to_ids, read_class_mask
from zoo.data.config import parse_data_config

COLORS = [[0, 0, 0], [128, 64, 128], [70, 130, 180]]  # background, road, sky
VOID = (64, 0, 64)


def painted(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, RGB color mask, class ids by hand) with a road, a sky and a void patch."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), np.int32)
    top, bottom = rng.integers(4, 10), rng.integers(20, 26)
    ids[:top] = 2
    ids[bottom:] = 1
    ids[12:15, 3:7] = 255  # void
    rgb = np.zeros((size, size, 3), np.uint8)
    for i, color in enumerate(COLORS):
        rgb[ids == i] = color
    rgb[ids == 255] = VOID
    image = np.clip(rgb * 0.8 + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    return image, rgb, ids


def write_folder(root: Path, n: int = 6, size: int = 32) -> dict[str, np.ndarray]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    truth = {}
    for i in range(n):
        image, rgb, ids = painted(i, size)
        Image.fromarray(image).save(root / "images" / f"f{i}.png")
        Image.fromarray(rgb).save(root / "masks" / f"f{i}.png")
        truth[f"f{i}"] = ids
    return truth


def cfg(root: Path, **kw) -> dict:
    out = {"name": "folder", "root": str(root), "num_classes": 3, "class_colors": COLORS,
           "ignore_index": 255, "num_workers": 2}  # fmt: skip
    out.update(kw)
    return out


def test_colors_map_to_their_class_ids_by_hand():
    rgb = np.array([[[0, 0, 0], [70, 130, 180], [128, 64, 128]],
                    [[70, 130, 180], [1, 2, 3], [0, 0, 0]]], np.uint8)  # fmt: skip
    ids = colors_to_ids(rgb, COLORS, ignore_index=255)
    np.testing.assert_array_equal(ids, [[0, 2, 1], [2, 255, 0]])
    assert ids.dtype == np.int32
    # An alpha channel is not compared; colors listed in any order map to their own index.
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], -1)
    np.testing.assert_array_equal(colors_to_ids(rgba, COLORS[::-1], 9), [[2, 0, 1], [0, 9, 2]])
    with pytest.raises(ValueError, match=r"'m.png' has color \[1, 2, 3\] \(1 px\) that is not"):
        colors_to_ids(rgb, COLORS, None, "m.png")


def test_folder_fingerprint_and_evaluation_read_the_same_ids(tmp_path):
    truth = write_folder(tmp_path)
    c = parse_data_config(cfg(tmp_path))
    for stem, ids in truth.items():
        np.testing.assert_array_equal(read_class_mask(tmp_path / "masks" / f"{stem}.png", c), ids)
    bundle = build_datasets(cfg(tmp_path, val_ratio=0.5, image_size=[32, 32]),
                            global_batch_size=2)  # fmt: skip
    _, masks = bundle.val_images(3)
    # Training reads the hand-made ids (every tile's road and sky are of another height).
    assert len({t.tobytes() for t in truth.values()}) == 6
    for m in masks:
        assert m[..., 0].astype(np.int32).tobytes() in {t.tobytes() for t in truth.values()}

    from zoo.inference.evaluate import read_eval_pair
    from zoo.recipe import fingerprint_folder

    _, mask = read_eval_pair(tmp_path / "images" / "f0.png", tmp_path / "masks" / "f0.png", c)
    np.testing.assert_array_equal(mask, truth["f0"])
    fp = fingerprint_folder(tmp_path, num_classes=3, ignore_index=255, class_colors=COLORS,
                            cache=False)  # fmt: skip
    counted = np.bincount(np.concatenate([t[t != 255] for t in truth.values()]), minlength=3)
    np.testing.assert_allclose(fp.class_frequencies, counted / counted.sum(), atol=1e-6)


@pytest.mark.parametrize(
    "override, message",
    [({"num_classes": 1}, r"expected 2 colors .*for 3 classes set data.num_classes=3"),
     ({"num_classes": 4}, r"expected 4 colors"),
     ({"class_colors": [[0, 0, 0], [256, 0, 0], [1, 1, 1]]}, r"each 0..255"),
     ({"class_colors": [[0, 0, 0], [0, 0, 0], [1, 1, 1]]}, r"distinct"),
     ({"class_colors": [[0, 0], [1, 1], [2, 2]]}, r"\[r, g, b\]"),
     ({"mode": "multilabel"}, r"null with data.mode=multilabel")],
)  # fmt: skip
def test_bad_class_colors_are_one_line(tmp_path, override, message):
    with pytest.raises(ValueError, match=r"Invalid data.class_colors=.*" + message):
        parse_data_config(cfg(tmp_path, **override))


def test_masks_that_are_not_color_pngs_are_refused(tmp_path):
    write_folder(tmp_path, n=2)
    c = parse_data_config(cfg(tmp_path, ignore_index=None))
    with pytest.raises(ValueError, match=r"f0.png' has color \[64, 0, 64\] \(12 px\)"):
        read_class_mask(tmp_path / "masks" / "f0.png", c)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match=r"gray.png' has shape \(8, 8\).*class_colors=null"):
        read_class_mask(tmp_path / "gray.png", c)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match=r"m.jpg' is a JPEG: .*save color masks as PNG"):
        read_class_mask(tmp_path / "m.jpg", c)


def test_recipe_auto_trains_on_color_masks_end_to_end(tmp_path):
    # The command line a CamVid-style user types: colors as a Hydra list, unlisted (void)
    # colors ignored; the recipe fingerprints the color masks and the run scores 3 classes.
    from test_train import train

    root = tmp_path / "data"
    write_folder(root, n=8)
    run_dir = tmp_path / "run"
    colors = "[" + ",".join(f"[{r},{g},{b}]" for r, g, b in COLORS) + "]"
    args = ["recipe=auto", "data=folder", f"data.root={root}", "data.num_classes=3",
            f"data.class_colors={colors}", "data.ignore_index=255", "trainer.max_steps=4",
            "trainer.verbose=0", "trainer.num_overlays=0", "trainer.tensorboard=false"]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["val_dice"] <= 1.0
    fingerprint = json.loads((run_dir / "fingerprint.json").read_text())
    assert len(fingerprint["class_frequencies"]) == 3
    # Predicted masks are palette PNGs of class ids, drawn in the dataset's own colors.
    out = tmp_path / "pred"
    proc = train(["mode=predict", f"checkpoint={run_dir / 'model.keras'}",
                  f"predict.input={root / 'images'}", f"predict.output={out}"],
                 tmp_path / "predict_run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = Image.open(out / "f0.png")
    assert written.mode == "P" and written.getpalette()[:9] == sum(COLORS, [])
    assert set(np.unique(np.asarray(written))) <= {0, 1, 2}


def test_training_overlays_draw_classes_in_their_colors(tmp_path):
    from zoo.outputs import write_overlays

    _, _, ids = painted(0)
    ids[ids == 255] = 0
    logits = np.eye(3, dtype=np.float32)[ids]  # a perfect prediction
    image = np.zeros((1, 32, 32, 3), np.float32)
    (path,) = write_overlays(tmp_path, image, ids[None, ..., None], logits[None], 3,
                             class_colors=COLORS)  # fmt: skip
    panel = np.asarray(Image.open(path))
    truth, pred = panel[:, 32:64], panel[:, 64:96]
    np.testing.assert_array_equal(truth, np.asarray(COLORS, np.uint8)[ids])
    np.testing.assert_array_equal(pred, truth)
