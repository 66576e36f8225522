"""Downloading weight files into the cache folder, checked, atomically, failing fast offline.

Cache folder: ``$SEGZOO_HOME/weights`` if ``SEGZOO_HOME`` is set, else
``$KERAS_HOME/segzoo/weights`` (``KERAS_HOME`` defaults to ``~/.keras``). A file is downloaded
once, to a temporary name first, then moved in place (concurrent workers are safe). Without
network (or with ``SEGZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) a request fails within seconds
with one line naming the file, its URL and the exact path to put it in. Files are checked by
SHA-256 where the source publishes one (`WeightsSource.sha256`, or the hash the Hugging Face
hub sends with a download); never by a made-up hash.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import DownloadError

HOME_ENV = "SEGZOO_HOME"
OFFLINE_ENV = "SEGZOO_OFFLINE"
TIMEOUT_ENV = "SEGZOO_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's named weights come from.

    Args:
        url: the file to download.
        file: its path inside the cache folder.
        description: what the weights are (shown in docs and messages).
        license: the weights' license.
        normalization: the preprocessing they were trained with (a
            `zoo.pretrained.Normalization`), when it differs from the encoder's.
        sha256: the file's SHA-256 where the publisher gives one (never made up).
    """

    url: str
    file: str
    description: str
    license: str
    normalization: Any = None
    sha256: str | None = None


def timm_hub_source(
    encoder: str, tag: str, license: str, normalization: Any = None
) -> WeightsSource:
    """timm's `tag` weights of `encoder` on the Hugging Face hub (``timm/<encoder>.<tag>``,
    ``model.safetensors`` at ``main``: timm pins no revision), cached under
    ``timm/<encoder>.<tag>/``."""
    repo = f"timm/{encoder}.{tag}"
    return WeightsSource(
        url=f"https://huggingface.co/{repo}/resolve/main/model.safetensors",
        file=f"{repo}/model.safetensors",
        description=f"timm's {encoder}.{tag} weights",
        license=license,
        normalization=normalization,
    )


def cache_dir() -> Path:
    """The folder weights are cached in (see the module docstring)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "weights"
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(keras_home).expanduser() / "segzoo" / "weights"


def cached_path(source: WeightsSource) -> Path:
    return cache_dir() / source.file


def fetch(source: WeightsSource, what: str) -> Path:
    """The local path of `source`'s file, downloading it into the cache on first use.

    Args:
        source: the weights.
        what: how messages name them, e.g. ``"'imagenet' weights of encoder 'resnet34'"``.

    Raises:
        DownloadError: one line (no network, offline mode, HTTP error, wrong hash) naming the file,
            its URL and the exact path to put it in.
    """
    path = cached_path(source)
    if path.is_file():
        _check_hash(path, source, what)
        return path
    where = (
        f"download {source.url} and save it as {path} "
        f"(the cache folder is set by {HOME_ENV} or KERAS_HOME)"
    )
    offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
    if offline:
        raise DownloadError(
            f"The {what} are not in the cache and downloads are off ({OFFLINE_ENV} or "
            f"HF_HUB_OFFLINE is set): {where}"
        )
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.part-{os.getpid()}")
    print(f"Downloading the {what} from {source.url} to {path}", file=sys.stderr)
    redirects = _RecordingRedirects()
    digest = hashlib.sha256()
    try:
        opener = urllib.request.build_opener(redirects)
        with opener.open(source.url, timeout=timeout) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
            headers = [*redirects.headers, response.headers]
    except (OSError, urllib.error.URLError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DownloadError(
            f"Could not download the {what} ({type(err).__name__}: {reason}): {where}"
        ) from None
    published = source.sha256 or _published_sha256(headers)
    if published and digest.hexdigest() != published:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"The download of the {what} has SHA-256 {digest.hexdigest()}, but {published} "
            f"is published for it (a broken transfer?): {where}"
        )
    os.replace(part, path)  # atomic: a concurrent worker sees the whole file or none
    return path


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib and keeps each redirect response's headers: the
    Hugging Face hub publishes a large file's SHA-256 (``X-Linked-Etag``) on the redirect
    to its storage."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _published_sha256(headers: list) -> str | None:
    """The SHA-256 a server published for the file (Hugging Face: ``X-Linked-Etag``)."""
    for h in headers:
        value = (h.get("X-Linked-Etag") or "").strip()
        value = value.removeprefix("W/").strip('"').lower()
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    return None


def _check_hash(path: Path, source: WeightsSource, what: str, cleanup: bool = False) -> None:
    if not source.sha256:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != source.sha256:
        if cleanup:
            path.unlink(missing_ok=True)
        raise DownloadError(
            f"The {what} at {path} have SHA-256 {digest.hexdigest()}, expected "
            f"{source.sha256}: delete the file and download {source.url} again"
        )
