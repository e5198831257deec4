"""DVC stage extract_frames@K: the videos of shard K under --videos -> one zip of JPEG frames per video,
manifest and rejected.csv in --out (data/frames/shard-K). With --plan (plan_shards' shard-K.csv): its
videos, each checked against its listed MD5; without: found under --videos. Without a shard: every video."""

import sys

from demystify.core import config, stage_cli
from demystify.video.extract import ExtractionError, run_stage
from demystify.video.shards import read_plan

PARSER = stage_cli.parser(
    __doc__,
    videos="folder searched recursively for videos",
    out="frames folder: <video>.zip (NNNNNN.jpg), manifest.parquet, rejected.csv",
    metrics="the stage's metrics JSON",
)
PARSER.add_argument(
    "shard", type=int, nargs="?", default=None, help="one of frames.shards: only its videos"
)
PARSER.add_argument("--plan", help="plan_shards' list of the shard's videos (relative to --videos)")


def run(args) -> None:
    run_stage(
        videos_root=args.videos,
        out_root=args.out,
        metrics_path=args.metrics,
        params=config.load("frames", "data")["frames"],
        shard=args.shard,
        planned=read_plan(args.plan) if args.plan else None,
    )


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("extract_frames", PARSER, run, (ExtractionError,), argv)


if __name__ == "__main__":
    sys.exit(main())
