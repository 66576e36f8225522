"""`python -m zoo.predict`: masks for a folder, never over the inputs, one line per user error."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import build_tiny
from PIL import Image

from zoo.errors import DataError, MissingFileError, ModelFileError, OutputError
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
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(
        p.name for p in written
    )


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
