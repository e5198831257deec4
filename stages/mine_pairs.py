"""DVC stage mine_pairs: the frames (--frames, with its manifest) -> positive pairs (--out) and
their metrics and grid (--results); ground truth read beside the videos (--videos)."""

import sys

from demystify.core import config, stage_cli
from demystify.pairs.mine import PairsError, run_stage

PARSER = stage_cli.parser(
    __doc__,
    frames="extract_frames' output folder (its shard-K folders)",
    videos="the videos folder (GOT-10k / TrackingNet ground truth beside them)",
    out="pairs manifest (parquet)",
    results="folder for metrics.json and pairs.png",
)


def run(args) -> list[str]:
    metrics = run_stage(
        frames_root=args.frames,  # every shard's manifest
        videos_root=args.videos,
        out_pairs=args.out,
        out_dir=args.results,
        p=config.load("pairs", "data")["pairs"],
    )
    return [
        f"{metrics['pairs']} pairs from {metrics['videos']} videos, mean iou_gt {metrics['mean_iou']}"
    ]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("mine_pairs", PARSER, run, (PairsError,), argv)


if __name__ == "__main__":
    sys.exit(main())
