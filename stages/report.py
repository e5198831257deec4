"""DVC stage report: the paper's tables for this run and a verdict per claim -> --markdown (report.md)
and --out (its figures, headline.json, metrics.json), from the summaries, the pretraining results
and the per-item results."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.report.build import ReportError, ReportPaths, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--summary", required=True, help="results/summary: the summarize stages' folders"
    )
    ap.add_argument("--pretrain", required=True, help="results/pretrain: one folder per variant")
    ap.add_argument(
        "--results",
        required=True,
        help="the per-item results' root (invariance/, classification/, ...)",
    )
    ap.add_argument(
        "--sweep", required=True, help="the runs of a seed sweep (CSV; header only: this run alone)"
    )
    ap.add_argument(
        "--out", required=True, help="the report's folder: figures, headline.json, metrics.json"
    )
    ap.add_argument(
        "--markdown", help="report.md (default: in --out); it links the figures as if beside them"
    )
    args = ap.parse_args(argv)
    try:
        p = config.load("report", "invariance", "variants")
        paths = ReportPaths(
            summary=args.summary,
            pretrain=args.pretrain,
            results=args.results,
            out_dir=args.out,
            sweep=args.sweep,
            markdown=args.markdown,
        )
        result = run_stage(
            paths=paths, params=p["report"], ks=p["invariance"].ks, variants=p["variants"]
        )
    except (config.ConfigError, ReportError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print("report: " + "; ".join(f"claim {c}: {v}" for c, v in result["verdicts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
