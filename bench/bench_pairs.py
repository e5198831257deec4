"""Region-tracker pairs: quality against ground truth as the gap grows, per tracker, and speed.

Runs on the pipeline's own frames (`dvc repro extract_frames` first; default: data/frames and
data/world/videos) with the params of params.yaml, changing only what each table varies.
Prints: per gap, mean iou_gt, share >= 0.5, tracking-only IoU; per tracker, the same at the
default gaps plus tracked pairs/s; and the share of mine_pairs' time spent tracking.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from demystify.core import config
from demystify.core.frames_store import read_manifest
from demystify.pairs import mine


def run(manifest: pd.DataFrame, frames: Path, videos: Path, p, workers: int) -> tuple[dict, float]:
    start = time.perf_counter()
    _, metrics = mine.mine_all(manifest, frames, videos, p, progress=False, workers=workers)
    return metrics, time.perf_counter() - start


def line(label: str, m: dict, seconds: float | None = None) -> str:
    text = (
        f"  {label:>12}  pairs {m['pairs']:4d}  mean iou_gt {m['mean_iou']:.3f}  "
        f"iou>=0.5 {m['share_iou_050']:.3f}  tracking-only iou {m['mean_tracking_iou']:.3f}"
    )
    if seconds is not None:
        tracked = m["pairs"] + sum(
            v
            for k, v in m.items()
            if k.startswith("rejected_")
            and k not in ("rejected_too_short", "rejected_no_proposals", "rejected_absent")
        )
        text += f"  {seconds:6.2f} s  {tracked / seconds:6.1f} tracked regions/s"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="data/frames")
    ap.add_argument("--videos", default="data/world/videos")
    ap.add_argument("--gaps", default="1,2,3,5,8,12")
    ap.add_argument("--trackers", default="medianflow,kcf,csrt,mil")
    args = ap.parse_args()
    frames, videos = Path(args.frames), Path(args.videos)
    manifest = read_manifest(frames)  # every shard's
    p = config.load("pairs")["pairs"].model_copy(update={"source": "tracker"})
    workers = os.cpu_count() or 1
    print(
        f"{manifest['video'].nunique()} videos, {len(manifest)} frames "
        f"({manifest['width'].iloc[0]}x{manifest['height'].iloc[0]}); {workers} workers; tracker {p.tracker}"
    )

    print("quality by gap (frames of the extracted rate, min_gap = max_gap):")
    for gap in (int(g) for g in args.gaps.split(",")):
        m, _ = run(
            manifest, frames, videos, p.model_copy(update={"min_gap": gap, "max_gap": gap}), workers
        )
        print(line(f"gap {gap}", m))

    print(f"by tracker (gap {p.min_gap}-{p.max_gap}):")
    for kind in args.trackers.split(","):
        m, seconds = run(manifest, frames, videos, p.model_copy(update={"tracker": kind}), workers)
        print(line(kind, m, seconds))

    # Share of the stage's time in the tracker: one process, tracking calls timed.
    spent = [0.0]
    original = mine.track_checked

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    mine.track_checked = timed
    try:
        _, seconds = run(manifest, frames, videos, p, 1)
    finally:
        mine.track_checked = original
    print(
        f"one process, {p.tracker}: {seconds:.2f} s for the stage's work, {spent[0]:.2f} s tracking "
        f"({100 * spent[0] / seconds:.0f} %)"
    )


if __name__ == "__main__":
    main()
