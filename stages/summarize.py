"""DVC stage summarize@<KIND>: every model's <results>/MODEL/metrics.json -> one table
(table.csv), one flat metrics file and a bar chart per set and model in --out."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.summary.evaluations import KINDS, SummaryError, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kind", choices=list(KINDS))
    ap.add_argument("--results", required=True, help="results/<kind>: one folder per model")
    ap.add_argument("--out", required=True, help="the summary's folder")
    args = ap.parse_args(argv)
    try:
        p = config.load("invariance", "variants")
        table = run_stage(
            kind=args.kind,
            results_dir=args.results,
            models=list(p["variants"]),
            out_dir=args.out,
            ks=p["invariance"].ks,
        )
    except (config.ConfigError, SummaryError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 1
    print(f"summarize {args.kind}: {len(table)} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
