"""Decoding image files (a folder or a ``.zip``) to uint8 NHWC arrays with Pillow.

:func:`decode_images` decodes many files with a pool of worker processes (threads where
``fork`` is unavailable) on chunks; :func:`decode_chunk` decodes a few in this process (the
streaming loader's workers, :mod:`noisylabels.data.stream`). Used by
:mod:`noisylabels.data.imagefolder` and :mod:`noisylabels.data.clothing1m`.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import sys
import threading
import warnings
import zipfile
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["decode_images", "decode_chunk", "open_image", "close_zip"]

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PARALLEL_MIN = 2000  # below this many images decode in-process

_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}
_ZIPS_LOCK = threading.Lock()


def _zip_handle(source: str) -> zipfile.ZipFile:
    # One handle per process (a forked child must not share its parent's file offset).
    key = (os.getpid(), source)
    with _ZIPS_LOCK:
        zf = _ZIPS.get(key)
        if zf is None:
            zf = zipfile.ZipFile(source)
            _ZIPS[key] = zf
        return zf


def close_zip(source: str) -> None:
    """Close this process's handle on the zip ``source`` (if open)."""
    with _ZIPS_LOCK:
        zf = _ZIPS.pop((os.getpid(), source), None)
    if zf is not None:
        zf.close()


def _read_bytes(source: str, is_zip: bool, name: str) -> bytes:
    try:
        if is_zip:
            return _zip_handle(source).read(name)
        with open(os.path.join(source, name), "rb") as fh:
            return fh.read()
    except (OSError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"cannot read image {source}:{name}: {err}") from None


def _decode_one(data: bytes, where: str) -> PILImage:
    """Decode one image file's bytes with Pillow; raises :class:`UserError` naming ``where``."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        reason = "not a recognised image format" if isinstance(err, UnidentifiedImageError) else str(err)
        raise UserError(f"cannot decode image {where}: {reason}") from None
    return im


def open_image(source: str, *, is_zip: bool, name: str, where: str | None = None) -> PILImage:
    """The image ``name`` in ``source`` (decoded; zip handle left open: :func:`close_zip`).

    ``where`` names the file in an error (default ``source:name`` or the joined path)."""
    if where is None:
        where = f"{source}:{name}" if is_zip else os.path.join(source, name)
    return _decode_one(_read_bytes(source, is_zip, name), where)


def decode_chunk(
    source: str, is_zip: bool, names: Sequence[str], size: tuple[int, int], resize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``names`` to ``(n, H, W, 3)`` uint8 plus a flag per image that it was grey."""
    from PIL import Image

    w, h = size
    out = np.empty((len(names), h, w, 3), dtype=np.uint8)
    grey = np.zeros(len(names), dtype=bool)
    for k, name in enumerate(names):
        where = f"{source}:{name}" if is_zip else os.path.join(source, name)
        im = _decode_one(_read_bytes(source, is_zip, name), where)
        is_grey = im.mode in _GREY_MODES
        im = im.convert("L" if is_grey else "RGB")
        if im.size != (w, h):
            if not resize:
                raise UserError(
                    f"image {where} is {im.size[0]}x{im.size[1]} but the first image is {w}x{h}; "
                    "pass image_size= to resize all images"
                )
            im = im.resize((w, h), Image.BILINEAR)
        arr = np.asarray(im)
        out[k] = arr[..., None] if is_grey else arr
        grey[k] = is_grey
    return out, grey


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _executor(workers: int) -> Executor:
    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    return ThreadPoolExecutor(workers)


def decode_images(
    source: str | os.PathLike[str],
    names: Sequence[str],
    *,
    is_zip: bool,
    image_size: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode image files to one uint8 NHWC array (RGB, or 1 channel if all are grey).

    Parameters
    ----------
    source:
        The folder or zip holding the files.
    names:
        File paths inside ``source``.
    is_zip:
        Whether ``source`` is a zip archive.
    image_size:
        Resize every image to ``image_size x image_size`` (bilinear). ``None``
        requires all images to have the first image's size.
    workers:
        Decoder processes (threads where ``fork`` is unavailable); ``None``
        uses up to 8 CPU cores for 2,000 images or more, ``0``/``1`` decodes
        in this process.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W, 3)`` uint8, or ``(N, H, W, 1)`` when every image is grey.

    Raises
    ------
    UserError
        A missing or undecodable file, or mixed sizes without ``image_size``.
    """
    src = str(source)
    if len(names) == 0:
        raise UserError(f"no images to decode in {src}")
    try:
        return _decode_images(src, list(names), is_zip=is_zip, image_size=image_size, workers=workers)
    finally:
        if is_zip:
            close_zip(src)


def _decode_images(
    src: str, names: list[str], *, is_zip: bool, image_size: int | None, workers: int | None
) -> np.ndarray:
    n = len(names)
    if image_size is not None:
        if int(image_size) < 1:
            raise UserError(f"image_size must be a positive integer, got {image_size!r}")
        size = (int(image_size), int(image_size))
    else:
        size = open_image(src, is_zip=is_zip, name=names[0]).size
    if workers is None:
        workers = min(_cpu_count(), 8) if n >= _PARALLEL_MIN else 0
    workers = max(int(workers), 0)
    nchunks = max(1, workers * 8)
    step = max(64, math.ceil(n / nchunks))
    chunks = [list(names[i:i + step]) for i in range(0, n, step)]
    resize = image_size is not None
    results: list[tuple[np.ndarray, np.ndarray]] | None = None
    if workers > 1 and len(chunks) > 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork in a threaded process
                ex = _executor(min(workers, len(chunks)))
                try:
                    futs = [ex.submit(decode_chunk, src, is_zip, c, size, resize) for c in chunks]
                    results = [f.result() for f in futs]
                finally:  # on an error, do not decode the chunks not yet started
                    ex.shutdown(wait=True, cancel_futures=True)
        except UserError:
            raise
        except Exception:  # broken pool, no fork in a daemon process, ...: decode here instead
            results = None
    if results is None:
        results = [decode_chunk(src, is_zip, c, size, resize) for c in chunks]
    x = np.empty((n, size[1], size[0], 3), dtype=np.uint8)
    all_grey = True
    pos = 0
    for arr, grey in results:
        x[pos:pos + len(arr)] = arr
        pos += len(arr)
        all_grey = all_grey and bool(grey.all())
    return np.ascontiguousarray(x[..., :1]) if all_grey else x
