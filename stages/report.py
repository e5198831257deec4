"""DVC stage report: the paper's tables for this run and a verdict per claim -> --markdown (report.md)
and --out (its figures, headline.json, metrics.json), from the summaries, the pretraining results
and the per-item results."""

import sys

from demystify.core import config, stage_cli
from demystify.report.build import ReportError, ReportPaths, run_stage

PARSER = stage_cli.parser(
    __doc__,
    summary="results/summary: the summarize stages' folders",
    pretrain="results/pretrain: one folder per variant",
    results="the per-item results' root (invariance/, classification/, ...)",
    sweep="the runs of a seed sweep (CSV; header only: this run alone)",
    out="the report's folder: figures, headline.json, metrics.json",
)
PARSER.add_argument(
    "--markdown", help="report.md (default: in --out); it links the figures as if beside them"
)


def run(args) -> list[str]:
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
    return ["; ".join(f"claim {c}: {v}" for c, v in result["verdicts"].items())]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("report", PARSER, run, (ReportError,), argv)


if __name__ == "__main__":
    sys.exit(main())
