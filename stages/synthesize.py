"""DVC stage synthesize: render the synthetic world (params: world) into --out."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.world.synthesize import run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--out", required=True, help="the world's folder (videos, corpora, evaluation sets)"
    )
    args = ap.parse_args(argv)
    try:
        p = config.load("world")
    except config.ConfigError as exc:
        print(f"synthesize: {exc}", file=sys.stderr)
        return 1
    summary = run_stage(params=p["world"], out=args.out)
    print(f"synthesize: {summary['counts']} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
