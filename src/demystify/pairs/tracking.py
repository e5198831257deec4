"""Tracking a box from frame a to frame b with an OpenCV tracker, checked forward-backward.

The box is tracked through every frame between a and b (small steps keep the tracker's search
window on the object), then back from b to a; the IoU of the returned box with the original
is the pair's confidence (the forward-backward check of Kalal et al., ICPR 2010): a tracker
that drifted rarely drifts back onto its start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from demystify.pairs.boxes import iou

TRACKERS: dict[str, Callable[[], object]] = {
    "csrt": lambda: cv2.TrackerCSRT_create(),
    "kcf": lambda: cv2.TrackerKCF_create(),
    "mil": lambda: cv2.TrackerMIL_create(),
    "medianflow": lambda: cv2.legacy.TrackerMedianFlow_create(),
}


@dataclass(frozen=True)
class TrackResult:
    box: np.ndarray | None  # the box in the last frame; None when the tracker lost it
    confidence: float  # forward-backward IoU; 0 when lost


def _to_int_box(box: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return int(round(x)), int(round(y)), max(1, int(round(w))), max(1, int(round(h)))


def track(frames: Sequence[np.ndarray], box: np.ndarray, kind: str) -> np.ndarray | None:
    """Track `box` from frames[0] through frames[-1]; None as soon as the tracker reports loss."""
    tracker = TRACKERS[kind]()
    tracker.init(frames[0], _to_int_box(box))
    current = np.asarray(box, float)
    for frame in frames[1:]:
        ok, found = tracker.update(frame)
        if not ok:
            return None
        current = np.array(found, float)
    return current


def track_checked(frames: Sequence[np.ndarray], box: np.ndarray, kind: str) -> TrackResult:
    forward = track(frames, box, kind)
    if forward is None:
        return TrackResult(None, 0.0)
    backward = track(list(frames)[::-1], forward, kind)
    confidence = 0.0 if backward is None else float(iou(backward, box))
    return TrackResult(forward, confidence)
