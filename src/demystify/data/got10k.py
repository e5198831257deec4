"""Readers of the GOT-10k layout (and TrackingNet's box files, which share its format).

GOT-10k: `<root>/list.txt` names the sequences; each `<root>/<seq>/` holds `groundtruth.txt`
("x,y,w,h" per frame, pixels, top-left origin), `meta_info.ini`, and optionally `cover.label`
(0-8, visible fraction in eighths) and `absence.label` (1 when the object is out of view).
TrackingNet: `anno/<video>.txt` with the same "x,y,w,h" lines.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from demystify.data import check_entry, read_list


class AnnotationError(ValueError):
    """Malformed annotation content; the message names the file and line."""


def read_split(root: str | Path) -> list[str]:
    """Sequence names of a GOT-10k split, in `list.txt` order. A list that is not UTF-8, or a
    name that leaves the split folder ('..', an absolute path), is an AnnotationError naming it."""
    path = Path(root) / "list.txt"
    names = [line.strip() for line in read_list(path, AnnotationError).splitlines() if line.strip()]
    return [check_entry(name, path, AnnotationError) for name in names]


def read_meta(seq_dir: str | Path) -> dict[str, str]:
    """`meta_info.ini` as a dict of strings (e.g. {'object_class': 'mug', 'anno_fps': '10Hz'})."""
    path = Path(seq_dir) / "meta_info.ini"
    lines = _read_lines(path)
    if not lines or lines[0].strip() != "[METAINFO]":
        raise AnnotationError(f"{path}:1: expected '[METAINFO]', got {(lines or [''])[0]!r}")
    meta: dict[str, str] = {}
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise AnnotationError(f"{path}:{no}: expected 'key: value', got {line!r}")
        meta[key.strip()] = value.strip()
    return meta


def anno_fps(meta: dict[str, str], source: str = "meta_info.ini") -> float | None:
    """The annotation rate of a `read_meta` dict ('10Hz' -> 10.0), None when absent."""
    text = meta.get("anno_fps")
    if not text:
        return None
    m = re.fullmatch(r"\s*([\d.]+)\s*(?:Hz|hz|fps)?\s*", text)
    try:
        rate = float(m[1]) if m else math.nan  # '1.2.3' matches the pattern but is no number
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise AnnotationError(f"{source}: anno_fps {text!r} is not a rate like '10Hz'")
    return rate


def resolution(meta: dict[str, str]) -> tuple[int, int] | None:
    """(width, height) of `resolution: (160, 120)`, None when absent or unreadable (or zero)."""
    m = re.fullmatch(r"\s*\(?\s*(\d+)\s*,\s*(\d+)\s*\)?\s*", meta.get("resolution", ""))
    return (int(m[1]), int(m[2])) if m and int(m[1]) > 0 and int(m[2]) > 0 else None


def read_boxes(txt_path: str | Path) -> np.ndarray:
    """(N, 4) float array of "x,y,w,h" lines, as written: 'nan' or 'inf' parse as numbers (see
    `has_box` for which rows hold a box). A line that is not four numbers, or a file that is not
    UTF-8 text, raises AnnotationError naming the file (and line)."""
    path = Path(txt_path)
    rows = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.replace("\t", ",").split(",")
        try:
            if len(parts) != 4:
                raise ValueError
            rows.append([float(p) for p in parts])
        except ValueError:
            raise AnnotationError(f"{path}:{no}: expected 'x,y,w,h', got {line!r}") from None
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def has_box(boxes: np.ndarray) -> np.ndarray:
    """Which rows of an (N, 4) x,y,w,h array hold a box: four finite numbers, w > 0 and h > 0.
    Any other row (NaN, inf, an empty 0,0,0,0 box) means "no box for that frame"."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        return np.isfinite(boxes).all(1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def without_invalid(boxes: np.ndarray) -> np.ndarray:
    """`boxes` with every row that holds no box (`has_box`) set to NaN."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4).copy()
    boxes[~has_box(boxes)] = np.nan
    return boxes


def read_annotations(seq_dir: str | Path) -> pd.DataFrame:
    """One row per annotated frame: frame (0-based), x, y, w, h, cover (-1: unknown), absence.
    A frame whose row holds no box (`has_box`) has NaN x, y, w, h; its labels are kept."""
    seq_dir = Path(seq_dir)
    boxes = without_invalid(read_boxes(seq_dir / "groundtruth.txt"))
    n = len(boxes)
    cover = _read_labels(seq_dir / "cover.label", n, default=-1, valid=range(0, 9))
    absence = _read_labels(seq_dir / "absence.label", n, default=0, valid=range(0, 2))
    return pd.DataFrame(
        {
            "frame": np.arange(n, dtype=np.int64),
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2],
            "h": boxes[:, 3],
            "cover": cover,
            "absence": absence,
        }
    )


def _read_labels(path: Path, n: int, default: int, valid: range) -> np.ndarray:
    if not path.exists():
        return np.full(n, default, dtype=np.int64)
    values = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            value = int(line.strip())
            if value not in valid:
                raise ValueError
        except ValueError:
            raise AnnotationError(
                f"{path}:{no}: expected an integer in {valid.start}..{valid.stop - 1}, got {line!r}"
            ) from None
        values.append(value)
    if len(values) != n:
        raise AnnotationError(f"{path}: {len(values)} labels for {n} boxes in groundtruth.txt")
    return np.asarray(values, dtype=np.int64)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a text file ({exc.reason})") from None


def nearest_rows(time_s: np.ndarray, rate: float, n_rows: int) -> np.ndarray:
    """Index of the annotation row nearest each time, for annotations at `rate` rows per second
    (clipped to the last row). The epsilon keeps k + 0.5 from float noise."""
    rows = np.floor(np.asarray(time_s, float) * rate + 0.5 + 1e-9).astype(np.int64)
    return np.clip(rows, 0, max(n_rows - 1, 0))


def annotated(time_s: np.ndarray, rate: float, n_rows: int) -> np.ndarray:
    """Which times fall within the annotated span [0, n_rows / rate): the source frame shown at
    that time has an annotation row. Ground truth shorter than the video (e.g. a test split's
    single first-frame box) annotates only its own frames; `nearest_rows` clips the rest."""
    return np.floor(np.asarray(time_s, float) * rate + 1e-9) < n_rows
