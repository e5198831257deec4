"""Axis-aligned boxes as (x, y, w, h) in pixels, top-left origin."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (..., 4) and b (..., 4), broadcast; 0 where either box is empty."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y1 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def outside_share(box: np.ndarray, width: int, height: int) -> float:
    """Share of the box's area that lies outside a width x height frame."""
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        return 1.0
    inside = max(0.0, min(x + w, width) - max(x, 0.0)) * max(0.0, min(y + h, height) - max(y, 0.0))
    return 1.0 - inside / (w * h)


def clip(box: np.ndarray, width: int, height: int) -> np.ndarray:
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    return np.array([x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)])
