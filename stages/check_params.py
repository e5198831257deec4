"""DVC stage check_params: every key and value of --params against the schema, whichever stage
reads it. A key no stage reads (`dvc exp run -S +seed=1`) would otherwise rerun nothing, and the
experiment would be recorded as if it meant something; here it fails, naming the key."""

import sys

from demystify.core import config, stage_cli

PARSER = stage_cli.parser(__doc__, params="the params file (params.yaml)")


def run(args) -> list[str]:
    data = config.read_yaml(args.params)
    config.validate(data, *[s for s in config.SECTIONS if s in data], source=args.params)
    return [f"{args.params}: every key known, every value valid"]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("check_params", PARSER, run, (), argv)


if __name__ == "__main__":
    sys.exit(main())
