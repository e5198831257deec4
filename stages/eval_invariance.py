"""DVC stage eval_invariance@MODEL: python stages/eval_invariance.py MODEL."""

import sys

import torch

from demystify import config
from demystify.evaluation.features import FeatureError
from demystify.evaluation.invariance_stage import evaluate
from demystify.evaluation.sets import SetError
from demystify.ssl.checkpoint import CheckpointError


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1:
            raise SetError("usage: python stages/eval_invariance.py MODEL")
        p = config.load("invariance", "variants", "pretrain")
        name = argv[0]
        if name not in p["variants"]:
            raise SetError(f"model {name!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        arch = p["variants"][name].arch or p["pretrain"].arch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = evaluate(name, arch, f"models/{name}/backbone.pt", p["invariance"], f"results/invariance/{name}",
                           device)
    except (config.ConfigError, SetError, FeatureError, CheckpointError) as exc:
        print(f"eval_invariance: {exc}", file=sys.stderr)
        return 1
    print(f"eval_invariance@{name}: " + ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
