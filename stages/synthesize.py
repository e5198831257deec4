"""DVC stage `synthesize`: render the synthetic world into data/world/ (params: world)."""

import sys

from demystify import config
from demystify.world.synthesize import synthesize


def main() -> int:
    try:
        params = config.load("world")
    except config.ConfigError as exc:
        print(f"synthesize: {exc}", file=sys.stderr)
        return 1
    summary = synthesize(params["world"], "data/world")
    print(f"synthesize: {summary['counts']} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
