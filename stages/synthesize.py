"""DVC stage synthesize: render the synthetic world (params: world) into --out."""

import sys

from demystify.core import config, stage_cli
from demystify.world.synthesize import run_stage

PARSER = stage_cli.parser(__doc__, out="the world's folder (videos, corpora, evaluation sets)")


def run(args) -> list[str]:
    summary = run_stage(params=config.load("world")["world"], out=args.out)
    return [f"{summary['counts']} in {summary['seconds']} s"]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("synthesize", PARSER, run, (), argv)


if __name__ == "__main__":
    sys.exit(main())
