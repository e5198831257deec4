"""DVC stage check_data: great-expectations checks of the manifests and corpora -> results/checks/."""

import sys

from demystify import config
from demystify.checks.stage import CheckError, run_stage


def main() -> int:
    try:
        p = config.load("checks", "frames", "pairs", "data", "world")
        summary = run_stage("data/frames", "data/pairs/pairs.parquet", p["data"].root, p["data"].videos,
                            "results/checks", p["checks"], p["frames"], p["pairs"], p["world"])
    except (config.ConfigError, CheckError) as exc:
        print(f"check_data: {exc}", file=sys.stderr)
        return 1
    verdicts = {name: "object-centric" if c["object_centric"] else "not object-centric"
                for name, c in summary["corpora"].items()}
    print(f"check_data: suites {summary['suites']}; corpora {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
