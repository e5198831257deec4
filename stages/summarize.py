"""DVC stage summarize@<KIND>: every model's <results>/MODEL/metrics.json -> one table
(table.csv), one flat metrics file and a bar chart per set and model in --out."""

import sys

from demystify.core import config, stage_cli
from demystify.summary.evaluations import KINDS, SummaryError, run_stage

PARSER = stage_cli.parser(
    __doc__, results="results/<kind>: one folder per model", out="the summary's folder"
)
PARSER.add_argument("kind", choices=list(KINDS))


def run(args) -> list[str]:
    p = config.load("invariance", "variants")
    table = run_stage(
        kind=args.kind,
        results_dir=args.results,
        models=list(p["variants"]),
        out_dir=args.out,
        ks=p["invariance"].ks,
    )
    return [f"{args.kind}: {len(table)} values"]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("summarize", PARSER, run, (SummaryError,), argv)


if __name__ == "__main__":
    sys.exit(main())
