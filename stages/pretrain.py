"""DVC stage pretrain@VARIANT: python stages/pretrain.py VARIANT (also under torchrun)."""

import sys

from demystify import config
from demystify.checks.gate import GateError, require_passed
from demystify.ssl.checkpoint import CheckpointError
from demystify.ssl.datasets import DataError
from demystify.ssl.train import PretrainError, train


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1:
            raise PretrainError("usage: python stages/pretrain.py VARIANT")
        p = config.load("pretrain", "variants")
        name = argv[0]
        if name not in p["variants"]:
            raise PretrainError(f"variant {name!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        require_passed("results/checks/gate.json")  # no training on data that failed checks.fail_on
        result = train(name, p["variants"][name], p["pretrain"], f"models/{name}", f"results/pretrain/{name}")
    except (config.ConfigError, GateError, PretrainError, DataError, CheckpointError) as exc:
        print(f"pretrain: {exc}", file=sys.stderr)
        return 1
    if result:
        print(f"pretrain@{argv[0]}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
