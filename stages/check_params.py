"""DVC stage check_params: every key and value of --params against the schema, whichever stage
reads it. A key no stage reads (`dvc exp run -S +seed=1`) would otherwise rerun nothing, and the
experiment would be recorded as if it meant something; here it fails, naming the key."""

import argparse
import sys

from demystify.core import config, stage_process


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", required=True, help="the params file (params.yaml)")
    args = ap.parse_args(argv)
    try:
        data = config.read_yaml(args.params)
        config.validate(data, *[s for s in config.SECTIONS if s in data], source=args.params)
    except config.ConfigError as exc:
        print(f"check_params: {exc}", file=sys.stderr)
        return 1
    print(f"check_params: {args.params}: every key known, every value valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
