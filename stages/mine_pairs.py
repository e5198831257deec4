"""DVC stage mine_pairs: the frames (--frames, with its manifest) -> positive pairs (--out) and
their metrics and grid (--results); ground truth read beside the videos (--videos)."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.pairs.mine import PairsError, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--frames", required=True, help="extract_frames' output folder (its shard-K folders)"
    )
    ap.add_argument(
        "--videos",
        required=True,
        help="the videos folder (GOT-10k / TrackingNet ground truth beside them)",
    )
    ap.add_argument("--out", required=True, help="pairs manifest (parquet)")
    ap.add_argument("--results", required=True, help="folder for metrics.json and pairs.png")
    args = ap.parse_args(argv)
    try:
        p = config.load("pairs", "data")
        metrics = run_stage(
            frames_root=args.frames,  # every shard's manifest
            videos_root=args.videos,
            out_pairs=args.out,
            out_dir=args.results,
            p=p["pairs"],
        )
    except (config.ConfigError, PairsError) as exc:
        print(f"mine_pairs: {exc}", file=sys.stderr)
        return 1
    print(
        f"mine_pairs: {metrics['pairs']} pairs from {metrics['videos']} videos, mean iou_gt {metrics['mean_iou']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
