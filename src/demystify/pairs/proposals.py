"""Label-free region proposals: no labels, no downloaded weights.

`motion`: background subtraction. The background is the per-pixel temporal median of frames
sampled over the whole video (a static camera is assumed); pixels far from it are foreground.
An object that sat still for most of the clip leaves a "ghost" in that median (foreground where
it no longer is), so foreground must also be near pixels that changed against both the frame
`MOTION_STEP` before and after (three-frame differencing; measured on the synthetic videos:
proposal-to-object IoU 0.61 -> 0.66). Connected components are the proposals, scored by their
mean distance. Static videos have no foreground, hence no proposals: counted, not guessed at.

`saliency`: OpenCV's spectral-residual saliency (Hou & Zhang, CVPR 2007) of the single frame,
thresholded with Otsu; for moving cameras, where a median background means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MEDIAN_FRAMES = 32  # frames sampled for the background model
MOTION_STEP = 2  # frames between the differenced frames
MOTION_LEVEL = 6.0  # mean grey-level change that counts as motion
MOTION_REACH = 3  # pixels: foreground must lie this close to motion


@dataclass(frozen=True)
class Proposal:
    box: np.ndarray  # x, y, w, h
    score: float  # in [0, 1]


def background(frames) -> np.ndarray:
    """Per-pixel temporal median of up to MEDIAN_FRAMES frames spread over the sequence."""
    idx = np.linspace(0, len(frames) - 1, min(MEDIAN_FRAMES, len(frames))).round().astype(int)
    return np.median(np.stack([frames[i] for i in idx]), axis=0).astype(np.float32)


def _components(
    mask: np.ndarray, strength: np.ndarray, min_area: float, max_area: float
) -> list[Proposal]:
    h, w = mask.shape
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    # Closing bridges thin parts (poles, legs) that fall under the threshold; measured on the
    # synthetic videos: 4 iterations fit object boxes better than 2 (mean IoU 0.71 vs 0.69).
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=4)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        share = bw * bh / (w * h)
        if share < min_area or share > max_area:
            continue
        out.append(Proposal(np.array([x, y, bw, bh], float), float(strength[labels == i].mean())))
    return sorted(out, key=lambda p: -p.score)


def _changed(frame: np.ndarray, other: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(np.float32) - other.astype(np.float32)).mean(axis=-1) > MOTION_LEVEL


def motion_proposals(
    frame: np.ndarray,
    bg: np.ndarray,
    threshold: float,
    min_area: float,
    max_area: float,
    before: np.ndarray | None = None,
    after: np.ndarray | None = None,
) -> list[Proposal]:
    """Proposals in `frame`; `before` / `after` (frames MOTION_STEP away) suppress ghosts."""
    # Mean over colour channels (in grey levels): less noisy than the max of the three.
    distance = np.abs(frame.astype(np.float32) - bg).mean(axis=-1)
    mask = distance > threshold
    neighbours = [f for f in (before, after) if f is not None]
    if neighbours:
        moving = np.logical_and.reduce([_changed(frame, f) for f in neighbours])
        reach = np.ones((2 * MOTION_REACH + 1, 2 * MOTION_REACH + 1), np.uint8)
        mask &= cv2.dilate(moving.astype(np.uint8), reach).astype(bool)
    return _components(mask.astype(np.uint8), np.clip(distance / 255.0, 0, 1), min_area, max_area)


def saliency_proposals(frame: np.ndarray, min_area: float, max_area: float) -> list[Proposal]:
    ok, sal = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(frame)
    if not ok:
        return []
    sal8 = (255 * sal / max(float(sal.max()), 1e-6)).astype(np.uint8)
    _, mask = cv2.threshold(sal8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return _components(mask.astype(np.uint8), sal8 / 255.0, min_area, max_area)
