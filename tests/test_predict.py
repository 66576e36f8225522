"""`python -m zoo.predict`: masks for a folder, never over the inputs, one line per user error."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import build_tiny
from PIL import Image

from zoo.errors import ConfigError, DataError, MissingFileError, ModelFileError, OutputError
from zoo.predict import predict_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_tiny("unet", num_classes=1).save(path)
    return path


def images(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        array = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        if name.endswith(".npy"):
            np.save(folder / name, array)
        else:
            Image.fromarray(array).save(folder / name)
    return folder


def test_output_folder_that_is_or_contains_the_input_is_refused(model_path, tmp_path):
    src = images(tmp_path / "data" / "imgs", ["a.png", "b.png"])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for out in (src, tmp_path / "data", tmp_path):
        with pytest.raises(OutputError, match="is \\(or contains\\) the input folder"):
            predict_folder(model_path, src, out)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_inputs_sharing_a_stem_get_one_mask_each(model_path, tmp_path):
    src = images(tmp_path / "imgs", ["x.png", "x.jpg", "y.png"])
    written = predict_folder(model_path, src, tmp_path / "masks")
    assert sorted(p.name for p in written) == ["x.jpg.png", "x.png.png", "y.png"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(p.name for p in written)


def test_corrupt_image_fails_naming_it_or_is_skipped(model_path, tmp_path):
    src = images(tmp_path / "imgs", ["a.png", "c.png"])
    (src / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="b.png"):
        predict_folder(model_path, src, tmp_path / "out1")
    # The masks written before the bad file are complete files (atomic per file).
    assert [p.name for p in (tmp_path / "out1").iterdir()] == ["a.png"]
    written = predict_folder(model_path, src, tmp_path / "out2", skip_corrupt=True)
    assert sorted(p.name for p in written) == ["a.png", "c.png"]


def test_model_file_errors_name_the_file(model_path, tmp_path):
    src = images(tmp_path / "imgs", ["a.png"])
    with pytest.raises(MissingFileError, match="No model file at .*missing.keras"):
        predict_folder(tmp_path / "missing.keras", src, tmp_path / "out")
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(ModelFileError, match="only .keras files"):
        predict_folder(tmp_path / "m.h5", src, tmp_path / "out")
    truncated = tmp_path / "broken.keras"
    truncated.write_bytes(model_path.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="broken.keras: it is not a .keras archive"):
        predict_folder(truncated, src, tmp_path / "out")


@pytest.mark.parametrize("case", ["missing_model", "same_folder", "corrupt_image"])
def test_cli_user_errors_are_one_line(case, model_path, tmp_path):
    src = images(tmp_path / "imgs", ["a.png"])
    model, out = model_path, tmp_path / "out"
    if case == "missing_model":
        model = tmp_path / "nope.keras"
    elif case == "same_folder":
        out = src
    else:
        (src / "z.png").write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.predict", "--model", str(model), "--input", str(src),
         "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]


# --------------------------------------------------------------------------- tiled prediction
# Reference values are independent: the model run on the whole (edge-padded) image with NumPy's
# softmax/sigmoid, SciPy's clamped bilinear interpolation, Pillow's resize, hand-worked colors.


def whole_probs(model, image: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """The model on the whole image, padded at the end (edge) to the divisor, cropped back."""
    d = int(getattr(model, "divisor", 1) or 1)
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % d), (0, -w % d), (0, 0)), mode="edge")
    logits = np.asarray(model(padded[None].astype(np.float32), training=False))[0, :h, :w]
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def conv_model_file(path: Path, classes: int = 1, seed: int = 0) -> Path:
    """A plain Keras model of two 3x3 convs (receptive-field radius 2), saved: no metadata,
    so binary for one channel; tiling it with a center blend and a margin > 2 is exact."""
    import keras

    rng = np.random.default_rng(seed)
    image = keras.Input((None, None, 3), name="image")
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")
    c2 = keras.layers.Conv2D(classes, 3, padding="same")
    model = keras.Model(image, c2(c1(image)))
    for conv in (c1, c2):
        kernel, bias = (w.numpy() for w in conv.weights)
        conv.set_weights(
            [rng.normal(0, 0.7, kernel.shape).astype(np.float32), rng.normal(0, 0.3, bias.shape)]
        )
    model.save(path)
    return path


def test_cli_mixed_folder_end_to_end(tmp_path):
    """python -m zoo.predict on small, mid, large (> 2x the training size), gray and corrupt
    images: palette masks, float16 probabilities of the model itself, whole vs tiled by size."""
    from zoo.saving import load_model

    model = build_tiny("unet", num_classes=3)
    model.metadata = {"mode": "multiclass", "image_size": [32, 32]}
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(1)
    src = tmp_path / "imgs"
    src.mkdir()
    arrays = {
        "small": rng.integers(0, 256, (20, 27, 3), dtype=np.uint8),  # < training size
        "mid": rng.integers(0, 256, (60, 64, 3), dtype=np.uint8),  # <= 2x: whole
        "big": rng.integers(0, 256, (70, 100, 3), dtype=np.uint8),  # > 2x: tiled
        "gray": rng.integers(0, 256, (30, 40), dtype=np.uint8),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(src / f"{name}.png")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.predict", "--model", str(tmp_path / "m.keras"),
         "--input", str(src), "--output", str(out), "--probabilities", "--skip-corrupt"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "broken.png" in proc.stderr and "1 unreadable image(s) skipped: broken.png" in proc.stdout
    )
    assert sorted(p.name for p in out.glob("*.png")) == [
        "big.png",
        "gray.png",
        "mid.png",
        "small.png",
    ]
    assert sorted(p.name for p in (out / "probabilities").iterdir()) == [
        "big.npy", "gray.npy", "mid.npy", "small.npy",
    ]  # fmt: skip
    loaded = load_model(tmp_path / "m.keras")
    for name, array in arrays.items():
        probs = np.load(out / "probabilities" / f"{name}.npy")
        assert probs.dtype == np.float16 and probs.shape == (*array.shape[:2], 3)
        rgb = np.repeat(array[..., None], 3, -1) if array.ndim == 2 else array
        whole = whole_probs(loaded, rgb.astype(np.float32) / 255)
        if name == "big":  # tiled with the training size: differs from one whole pass
            assert np.abs(probs - whole).max() > 1e-2
            import zoo.inference as inf

            tiled = inf.predict(loaded, array, tile=32, overlap=0.5)
            np.testing.assert_allclose(probs, tiled, atol=1e-3)
        else:
            np.testing.assert_allclose(probs, whole, atol=1e-3)
        with Image.open(out / f"{name}.png") as mask:
            assert mask.mode == "P" and mask.size == array.shape[1::-1]
            palette = np.asarray(mask.getpalette()[:9]).reshape(3, 3)
            np.testing.assert_array_equal(palette, [[0, 0, 0], [128, 0, 0], [0, 128, 0]])
            ids = np.asarray(mask)
        exact = np.abs(np.sort(probs, -1)[..., -1] - np.sort(probs, -1)[..., -2]) > 2e-3
        np.testing.assert_array_equal(ids[exact], probs.argmax(-1)[exact])


def test_tiled_equals_whole_through_the_cli_and_outputs_are_right(tmp_path):
    """--tile with a center blend and a margin over the receptive field equals --tile whole;
    binary masks, 16-bit probability PNGs and overlays against hand-worked values."""
    import zoo.inference as inf
    from zoo.predict import main
    from zoo.saving import load_model

    path = conv_model_file(tmp_path / "conv.keras")
    image = np.random.default_rng(2).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(image).save(src / "x.png")
    overlap = inf.receptive_overlap(2, 16)
    common = ["--model", str(path), "--input", str(src / "x.png"), "--no-progress"]
    main([*common, "--output", str(tmp_path / "tiled"), "--tile", "16", "--blend", "center",
          "--overlap", str(overlap), "--probabilities", "npy", "--batch-size", "3"])  # fmt: skip
    main([*common, "--output", str(tmp_path / "whole"), "--tile", "whole",
          "--probabilities", "png", "--overlays", "--threshold", "0.4"])  # fmt: skip
    p = whole_probs(load_model(path), image / np.float32(255), "sigmoid")[..., 0]
    tiled = np.load(tmp_path / "tiled" / "probabilities" / "x.npy")[..., 0]
    np.testing.assert_allclose(tiled, p, atol=1e-3)
    png16 = np.asarray(Image.open(tmp_path / "whole" / "probabilities" / "x.png"))
    np.testing.assert_allclose(png16, np.round(p * 65535), atol=2)
    tiled_mask = np.asarray(Image.open(tmp_path / "tiled" / "x.png"))
    whole_mask = np.asarray(Image.open(tmp_path / "whole" / "x.png"))
    for mask, cut in ((tiled_mask, 0.5), (whole_mask, 0.4)):
        sure = np.abs(p - cut) > 1e-4
        np.testing.assert_array_equal(mask[sure], np.where(p > cut, 255, 0)[sure])
    overlay = np.asarray(Image.open(tmp_path / "whole" / "overlays" / "x.png")).astype(float)
    on = whole_mask > 0
    red = np.array([255.0, 0.0, 0.0])
    np.testing.assert_allclose(overlay[on], np.round(0.5 * image[on] + 0.5 * red), atol=0.51)
    np.testing.assert_array_equal(overlay[~on], image[~on])
    assert 0 < on.mean() < 1


def test_multilabel_masks_one_png_per_label(tmp_path):
    model = build_tiny("unet", num_classes=2)
    model.metadata = {"mode": "multilabel", "threshold": [0.4, 0.6]}
    model.save(tmp_path / "m.keras")
    image = np.random.default_rng(3).random((40, 50, 3)).astype(np.float32)
    np.save(tmp_path / "scene.npy", image)
    written = predict_folder(tmp_path / "m.keras", tmp_path / "scene.npy", tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        "label_0/scene.png", "label_1/scene.png",
    ]  # fmt: skip
    p = whole_probs(model, image, "sigmoid")
    for j, cut in enumerate([0.4, 0.6]):
        mask = np.asarray(Image.open(written[j]))
        sure = np.abs(p[..., j] - cut) > 1e-4
        np.testing.assert_array_equal(mask[sure], np.where(p[..., j] > cut, 255, 0)[sure])


def test_input_scale_resamples_native_images(tmp_path):
    """metadata input_scale 0.5: a 128x128 image is seen at 64x64 (so whole: <= 2x the
    training size 32) and the output is interpolated back to native pixels."""
    from scipy import ndimage

    model = build_tiny("unet", num_classes=2)
    model.metadata = {"mode": "multiclass", "image_size": [32, 32], "input_scale": [0.5, 0.5]}
    model.save(tmp_path / "m.keras")
    image = np.random.default_rng(4).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    predict_folder(tmp_path / "m.keras", tmp_path / "x.png", tmp_path / "o", probabilities="npy")
    small = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR)) / np.float32(255)
    seen = whole_probs(model, small)
    u = (np.arange(128) + 0.5) * 64 / 128 - 0.5
    yy, xx = np.meshgrid(u, u, indexing="ij")
    expected = np.stack(
        [ndimage.map_coordinates(seen[..., c], [yy, xx], order=1, mode="nearest") for c in (0, 1)],
        -1,
    )
    probs = np.load(tmp_path / "o" / "probabilities" / "x.npy")
    np.testing.assert_allclose(probs, expected, atol=2e-3)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--overlap", "1"], "Invalid --overlap=1; expected a fraction of the tile in [0, 1)"),
        (["--tta", "rot90"], "Invalid --tta='rot90'; expected one of none, hflip, flip, d4"),
        (["--tile", "big"], "Invalid --tile='big'"),
        (["--batch-size", "0"], "Invalid --batch-size=0"),
        (["--probabilities", "tif"], "Invalid --probabilities='tif'; expected null or one of"),
        (["--threshold", "1.5"], "Invalid --threshold=1.5"),
        (["--blend", "max"], "Invalid --blend='max'"),
    ],
)
def test_bad_flags_are_one_line_before_any_work(flags, needle, tmp_path, capsys):
    from zoo.predict import main

    src = images(tmp_path / "imgs", ["a.png"])
    # A missing model: the flag must be refused before the model is even looked for.
    argv = ["--model", str(tmp_path / "none.keras"), "--input", str(src), "--output",
            str(tmp_path / "out"), *flags]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert message.startswith("Error: ") and "\n" not in message and needle in message, message
    assert not (tmp_path / "out").exists()


def test_tile_off_the_divisor_and_channel_mismatch_name_the_problem(model_path, tmp_path):
    from zoo.predict import main

    src = images(tmp_path / "imgs", ["a.png"])
    (src / "b.png").write_bytes(b"corrupt")  # never read: the tile fails first
    with pytest.raises(SystemExit) as info:
        main(["--model", str(model_path), "--input", str(src), "--output", str(tmp_path / "out"),
              "--tile", "24x80"])  # fmt: skip
    assert str(info.value.code) == (
        "Error: Invalid --tile=24x80; expected a multiple of the model's divisor 32 "
        "(e.g. 32x96), 'auto' or 'whole'"
    )
    with pytest.raises(ConfigError, match=r"Invalid tile=24; .* divisor 32 \(e.g. 32\)"):
        predict_folder(model_path, src, tmp_path / "out", tile=24)
    assert not (tmp_path / "out").exists()
    np.save(src / "c.npy", np.zeros((8, 8, 2), np.uint8))
    (src / "b.png").unlink()
    with pytest.raises(
        DataError, match=r"c\.npy: The image has 2 channel\(s\) but the model takes 3"
    ):
        predict_folder(model_path, src, tmp_path / "out2")
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a.png"]


def test_mirrored_replicas_share_the_tiles_and_give_the_same_files(tmp_path, mirrored_strategy):
    path = conv_model_file(tmp_path / "conv.keras", classes=2, seed=5)
    image = np.random.default_rng(6).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    kw = dict(tile=16, batch_size=3, tta="flip", probabilities="npy")
    predict_folder(path, tmp_path / "x.png", tmp_path / "one", **kw)
    predict_folder(path, tmp_path / "x.png", tmp_path / "two", strategy=mirrored_strategy, **kw)
    np.testing.assert_array_equal(
        np.load(tmp_path / "two" / "probabilities" / "x.npy"),
        np.load(tmp_path / "one" / "probabilities" / "x.npy"),
    )
    assert (tmp_path / "two" / "x.png").read_bytes() == (tmp_path / "one" / "x.png").read_bytes()


def test_progress_line_on_terminals_only():
    import io

    from zoo.inference.progress import TextProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, drawn in ((Tty(), True), (io.StringIO(), False)):
        with TextProgress(2, stream=stream, interval=0) as bar:
            bar.image(0, "a.png")
            bar.update(3, 3)
            bar.image(1, "b.png")
            bar.update(1, 4)
        text = stream.getvalue()
        if drawn:
            assert "\r[############........]  2/2 images  b.png  tiles 1/4" in text  # 62%
            assert text.endswith("\n")
        else:
            assert text == ""
