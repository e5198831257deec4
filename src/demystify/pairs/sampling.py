"""Which frames to pair: anchors spread over each video, gaps drawn from [min_gap, max_gap]."""

from __future__ import annotations

import zlib

import numpy as np


def video_rng(seed: int, video: str) -> np.random.Generator:
    """A generator that depends on the seed and the video's name only, not on processing order."""
    return np.random.default_rng([seed, zlib.crc32(video.encode())])


def sample_pairs(
    n_frames: int, count: int, min_gap: int, max_gap: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Up to `count` (a, b) frame pairs with b - a in [min_gap, max_gap], anchors a spread
    evenly: one per stratum of the frames that have room for at least `min_gap` after them.
    An empty list when the video is shorter than min_gap + 1 frames."""
    last_anchor = n_frames - 1 - min_gap
    if last_anchor < 0:
        return []
    count = min(count, last_anchor + 1)
    edges = np.linspace(0, last_anchor + 1, count + 1)
    pairs = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a = int(rng.integers(int(np.ceil(lo)), max(int(np.ceil(lo)) + 1, int(np.ceil(hi)))))
        gap = int(rng.integers(min_gap, min(max_gap, n_frames - 1 - a) + 1))
        pairs.append((a, a + gap))
    return pairs
