"""DVC stage eval_segmentation@MODEL: python stages/eval_segmentation.py MODEL."""

import sys

import torch

from demystify import config
from demystify.data.labelled import LabelError
from demystify.evaluation.downstream_stage import segment
from demystify.evaluation.features import FeatureError
from demystify.ssl.checkpoint import CheckpointError


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1:
            raise LabelError("usage: python stages/eval_segmentation.py MODEL")
        p = config.load("segmentation", "variants", "pretrain")
        name = argv[0]
        if name not in p["variants"]:
            raise LabelError(f"model {name!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        arch = p["variants"][name].arch or p["pretrain"].arch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = segment(name, arch, f"models/{name}/backbone.pt", p["segmentation"], f"results/segmentation/{name}", device)
    except (config.ConfigError, LabelError, FeatureError, CheckpointError) as exc:
        print(f"eval_segmentation: {exc}", file=sys.stderr)
        return 1
    print(f"eval_segmentation@{name}: {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
