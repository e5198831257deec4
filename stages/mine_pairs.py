"""DVC stage mine_pairs: frames manifest -> data/pairs/pairs.parquet, results/pairs/ (metrics, grid)."""

import sys

from demystify import config
from demystify.pairs.mine import PairsError, run_stage


def main() -> int:
    try:
        p = config.load("pairs", "data")
        metrics = run_stage("data/frames/manifest.parquet", "data/frames", p["data"].videos,
                            "data/pairs/pairs.parquet", "results/pairs", p["pairs"])
    except (config.ConfigError, PairsError) as exc:
        print(f"mine_pairs: {exc}", file=sys.stderr)
        return 1
    print(f"mine_pairs: {metrics['pairs']} pairs from {metrics['videos']} videos, "
          f"mean iou_gt {metrics['mean_iou']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
