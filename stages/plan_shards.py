"""DVC stage plan_shards: every video under --videos, one list per shard of frames.shards in --out
(shard-K.csv: file, MD5, rejected reason), the one dependency of extract_frames@K on the videos."""

import sys

from demystify.core import config, stage_cli
from demystify.video.extract import ExtractionError
from demystify.video.shards import run_stage

PARSER = stage_cli.parser(
    __doc__, videos="folder searched recursively for videos", out="folder of shard-K.csv lists"
)


def run(args) -> list[str]:
    p = config.load("frames", "data")
    counts = run_stage(videos_root=args.videos, out_root=args.out, shards=p["frames"].shards)
    return [f"{sum(counts.values())} videos in {len(counts)} shards"]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("plan_shards", PARSER, run, (ExtractionError,), argv)


if __name__ == "__main__":
    sys.exit(main())
