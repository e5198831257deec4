"""A PNG grid of sample pairs with their boxes: what the model will be asked to match."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from demystify.core.frames_store import FramesError, FrameStore, decode_bgr
from demystify.core.io import atomic_path

TILE = 128  # height of one frame in the grid
COLUMNS = 2  # pairs per row
CAPTION_DECIMALS = 6  # as the pairs manifest's floats (mine.DECIMALS)


def _tile(img: np.ndarray, box: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    scale = TILE / img.shape[0]
    out = cv2.resize(img, (round(img.shape[1] * scale), TILE), interpolation=cv2.INTER_AREA)
    x, y, w, h = (np.asarray(box, float) * scale).round()
    # Corners clipped far outside the tile: a huge box draws as its visible edges, never overflows.
    x0, y0, x1, y1 = np.clip([x, y, x + w - 1, y + h - 1], -(1 << 16), 1 << 16).astype(int)
    cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
    return out


def _fixed(value: float, digits: int) -> str:
    # rounded to CAPTION_DECIMALS first: a value whose last bits differ between CPUs (22.4999... on
    # one, 22.5000... on another) prints the same digits, so pairs.png is the same bytes everywhere
    return f"{round(float(value), CAPTION_DECIMALS):.{digits}f}"


def caption_text(r) -> str:
    """A pair's caption: video, frames, score, iou_gt and the object's viewpoint change, each at a
    fixed precision."""
    text = f"{r.video} {r.frame_a}->{r.frame_b} s {_fixed(r.score, 2)}"
    text += "" if np.isnan(r.iou_gt) else f" iou {_fixed(r.iou_gt, 2)}"
    return text + (
        "" if np.isnan(r.view_change_deg) else f" view {_fixed(r.view_change_deg, 0)}deg"
    )  # how far it turned


def draw_grid(pairs: pd.DataFrame, frames_root: Path, out: Path, count: int) -> None:
    """Up to `count` pairs spread over the table, each as [frame a | frame b] with its boxes and
    a caption (video, frames, score, iou_gt, the object's viewpoint change). An empty table gives a small placeholder image."""
    picks = (
        pairs.iloc[np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)]
        if len(pairs)
        else pairs
    )
    store = FrameStore(frames_root)
    rows = [row for _, r in picks.iterrows() if (row := _pair_row(r, store)) is not None]
    grid = _arrange(rows) if rows else _placeholder()
    with atomic_path(out) as tmp:
        ok, data = cv2.imencode(".png", grid)
        tmp.write_bytes(data.tobytes())


def _pair_row(r, store: FrameStore) -> np.ndarray | None:
    """One pair as its caption over [frame a | frame b]; None when a box or a frame is missing."""
    boxes = r[["a_x", "a_y", "a_w", "a_h", "b_x", "b_y", "b_w", "b_h"]].to_numpy(float)
    if not np.isfinite(boxes).all():  # a frame without a box: nothing to draw (never a crash)
        return None
    try:
        a, b = decode_bgr(store.read(r.path_a)), decode_bgr(store.read(r.path_b))
    except FramesError:
        return None
    if a is None or b is None:
        return None
    pair = np.concatenate(
        [
            _tile(a, r[["a_x", "a_y", "a_w", "a_h"]].to_numpy(float), (0, 200, 0)),
            np.full((TILE, 4, 3), 255, np.uint8),
            _tile(b, r[["b_x", "b_y", "b_w", "b_h"]].to_numpy(float), (0, 0, 230)),
        ],
        1,
    )
    caption = np.full((18, pair.shape[1], 3), 255, np.uint8)
    cv2.putText(
        caption, caption_text(r), (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.concatenate([caption, pair], 0)


def _arrange(rows: list[np.ndarray]) -> np.ndarray:
    """The pairs, padded to one width, COLUMNS to a row of the grid."""
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(r, ((0, 6), (0, width - r.shape[1] + 6), (0, 0)), constant_values=255) for r in rows
    ]
    while len(rows) % COLUMNS:
        rows.append(np.full_like(rows[0], 255))
    return np.concatenate(
        [np.concatenate(rows[i : i + COLUMNS], 1) for i in range(0, len(rows), COLUMNS)], 0
    )


def _placeholder() -> np.ndarray:
    grid = np.full((40, 320, 3), 255, np.uint8)
    cv2.putText(
        grid, "no pairs", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
    )
    return grid
