"""DVC stage plan_shards: every video under --videos, one list per shard of frames.shards in --out
(shard-K.csv: file, MD5, rejected reason), the one dependency of extract_frames@K on the videos."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.video.extract import ExtractionError
from demystify.video.shards import run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", required=True, help="folder searched recursively for videos")
    ap.add_argument("--out", required=True, help="folder of shard-K.csv lists")
    args = ap.parse_args(argv)
    try:
        p = config.load("frames", "data")
        counts = run_stage(videos_root=args.videos, out_root=args.out, shards=p["frames"].shards)
    except (config.ConfigError, ExtractionError) as exc:
        print(f"plan_shards: {exc}", file=sys.stderr)
        return 1
    print(f"plan_shards: {sum(counts.values())} videos in {len(counts)} shards", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
