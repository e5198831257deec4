"""DVC stage extract_frames: the videos folder -> data/frames (JPEGs, manifest, rejected.csv)."""

import sys

from demystify import config
from demystify.video.extract import ExtractionError, run_stage


def main() -> None:
    try:
        p = config.load("frames", "data")
        run_stage(p["data"].videos, "data/frames", "results/frames/metrics.json", p["frames"])
    except (config.ConfigError, ExtractionError) as exc:
        print(f"extract_frames: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
