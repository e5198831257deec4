"""Reading images: one list of what counts as an image, one decoder, one pixel cap, for every
reader (pretraining corpora, the kNN monitor, the invariance and downstream evaluations).

- Suffixes: IMAGE_SUFFIXES is exactly what the decoder (Pillow) reads here; every other file a
  folder reader meets is counted and named on stderr (`skip_line`), never dropped silently.
- Depth: every image arrives as RGB uint8 (3, H, W) whatever its mode: grey, grey + alpha, RGBA
  (alpha dropped), palette and CMYK are converted; 16-bit samples are scaled to 8 bits, never
  truncated to the low byte: grey as round(v * 255 / 65535), colour by Pillow's own reduction (the
  high byte; PPM rounded), within one level of each other and both exact for v = 257 * k. For
  8-bit PNG and JPEG the pixels are exactly those torchvision's decoder gave before.
- Frames: a path through a frames zip (`.../shard-K/<video>.zip/NNNNNN.jpg`, demystify.core.frames_store)
  reads that member; every other path is a file.
- Size: the header is read first; past MAX_PIXELS the file is refused by name before any pixel
  is decoded (a decompression bomb, or one huge image in a corpus of small ones).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from demystify.core import frames_store

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp")
# files a dataset folder holds beside its images (the world's and the public layouts'): not reported
SIDE_FILES = frozenset(
    {
        "annotations.csv",
        "labels.csv",
        "classes.txt",
        "objects.csv",
        "manifest.parquet",
        "rejected.csv",
        "Thumbs.db",
        "desktop.ini",
        ".DS_Store",
    }
)
MAX_PIXELS = 2**26  # 64 megapixels (8192 x 8192): 192 MB decoded, 768 MB as float


class ImageError(ValueError):
    """A file that is not a readable image within the pixel cap; the message names it."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def split_images(files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(images, skipped): the files with an image suffix, and the others that are not known side
    files (hidden files are side files too: .gitkeep, .dvcignore)."""
    images, skipped = [], []
    for f in files:
        if is_image(f):
            images.append(f)
        elif f.name not in SIDE_FILES and not f.name.startswith("."):
            skipped.append(f)
    return images, skipped


def skip_line(
    where: str, skipped: list[Path], root: Path | None = None, shown: int = 3
) -> str | None:
    """One line naming the files skipped for their suffix, grouped by suffix (None if none)."""
    if not skipped:
        return None
    groups: dict[str, list[str]] = {}
    for f in sorted(skipped):
        name = (
            f.relative_to(root).as_posix()
            if root is not None and f.is_relative_to(root)
            else f.name
        )
        groups.setdefault(f.suffix.lower() or "no suffix", []).append(name)
    parts = []
    for suffix, names in sorted(groups.items()):
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        parts.append(f"{suffix}: {', '.join(names[:shown])}{more}")
    return (
        f"{where}: skipped {len(skipped)} file(s) that are not images by suffix ({'; '.join(parts)}; "
        f"images are {' '.join(IMAGE_SUFFIXES)})"
    )


def report_skipped(where: str, skipped: list[Path], root: Path | None = None) -> None:
    line = skip_line(where, skipped, root)
    if line:
        print(line, file=sys.stderr)


def _open(path: str, error: type[Exception]) -> Image.Image:
    """The image with only its header read; past MAX_PIXELS an error, before decoding."""
    try:
        with warnings.catch_warnings():  # Pillow warns past its own limit (89 MP); ours is the cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(frames_store.image_source(path))
    except Image.DecompressionBombError:
        raise error(
            f"{path}: image over the pixel cap of {MAX_PIXELS} (Pillow refused its header)"
        ) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
    ) as exc:  # UnidentifiedImageError is an OSError
        raise error(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise error(
            f"{path}: image of {w}x{h} = {w * h} pixels is over the cap of {MAX_PIXELS} "
            "(demystify.core.images.MAX_PIXELS); downscale it or leave it out"
        )
    if w < 1 or h < 1:
        im.close()
        raise error(f"{path}: image of {w}x{h} pixels (empty)")
    return im


def image_size(path: str | Path, error: type[Exception] = ImageError) -> tuple[int, int]:
    """(width, height) from the header alone: readable, an image, within MAX_PIXELS."""
    with _open(str(path), error) as im:
        return im.size


def _rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of any mode; samples over 8 bits scaled, not truncated."""
    if im.mode in (
        "I;16",
        "I;16L",
        "I;16B",
        "I;16N",
        "I",
    ):  # 16-bit grey (Pillow holds it as integers)
        grey = np.asarray(im, dtype=np.int64)
        grey = ((np.clip(grey, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "F":
        raise ValueError("32-bit float samples (mode F) have no defined range")
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def decode_rgb(path: str | Path, error: type[Exception] = ImageError) -> torch.Tensor:
    """uint8 (3, H, W) RGB of the image at `path` (header checked first: see `image_size`)."""
    path = str(path)
    with _open(path, error) as im:
        try:
            pixels = _rgb8(im)
        except (
            OSError,
            ValueError,
            SyntaxError,
            EOFError,
        ) as exc:  # truncated, corrupt, unsupported mode
            raise error(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def box_bounds(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The pixels (x0, y0, x1, y1) an (x, y, w, h) box covers: rounded outwards, clipped to a
    `width` x `height` image; None when that leaves under 2 pixels either way (then the callers,
    the pretraining views and the evaluations' crops, take the whole image)."""
    x, y, bw, bh = box
    x0, y0 = int(max(0, np.floor(x))), int(max(0, np.floor(y)))
    x1, y1 = int(min(width, np.ceil(x + bw))), int(min(height, np.ceil(y + bh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1
