"""DVC stage extract_frames@K: the videos of shard K under --videos -> one zip of JPEG frames per video,
manifest and rejected.csv in --out (data/frames/shard-K). With --plan (plan_shards' shard-K.csv): its
videos, each checked against its listed MD5; without: found under --videos. Without a shard: every video."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.video.extract import ExtractionError, run_stage
from demystify.video.shards import read_plan


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", required=True, help="folder searched recursively for videos")
    ap.add_argument(
        "--out",
        required=True,
        help="frames folder: <video>.zip (NNNNNN.jpg), manifest.parquet, rejected.csv",
    )
    ap.add_argument(
        "shard",
        type=int,
        nargs="?",
        default=None,
        help="one of frames.shards: only the videos that hash to it",
    )
    ap.add_argument("--metrics", required=True, help="the stage's metrics JSON")
    ap.add_argument(
        "--plan", help="plan_shards' list of the shard's videos (paths relative to --videos)"
    )
    args = ap.parse_args(argv)
    try:
        p = config.load("frames", "data")
        planned = read_plan(args.plan) if args.plan else None
        run_stage(
            videos_root=args.videos,
            out_root=args.out,
            metrics_path=args.metrics,
            params=p["frames"],
            shard=args.shard,
            planned=planned,
        )
    except (config.ConfigError, ExtractionError) as exc:
        print(f"extract_frames: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
