"""DVC stage summarize_training: every variant's training curves (--pretrain/VARIANT) overlaid, one
CSV per quantity and one PNG, in --out."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.summary.curves import CurvesError, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pretrain", required=True, help="results/pretrain: one folder per variant")
    ap.add_argument("--out", required=True, help="the overlaid curves' folder")
    args = ap.parse_args(argv)
    try:
        p = config.load("variants")
        rows = run_stage(pretrain=args.pretrain, variants=list(p["variants"]), out_dir=args.out)
    except (config.ConfigError, CurvesError) as exc:
        print(f"summarize_training: {exc}", file=sys.stderr)
        return 1
    print(f"summarize_training: {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
