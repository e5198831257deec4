"""DVC stage summarize_training: every variant's training curves (--pretrain/VARIANT) overlaid, one
CSV per quantity and one PNG, in --out."""

import sys

from demystify.core import config, stage_cli
from demystify.summary.curves import CurvesError, run_stage

PARSER = stage_cli.parser(
    __doc__, pretrain="results/pretrain: one folder per variant", out="the overlaid curves' folder"
)


def run(args) -> list[str]:
    variants = list(config.load("variants")["variants"])
    return [str(run_stage(pretrain=args.pretrain, variants=variants, out_dir=args.out))]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("summarize_training", PARSER, run, (CurvesError,), argv)


if __name__ == "__main__":
    sys.exit(main())
