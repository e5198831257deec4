"""`evaluate@MODEL`: every evaluation of one model in one process (invariance, classification,
segmentation), each on its own data set with features extracted once and every probe fitted on
them. One stage per model keeps DVC's per-model caching (a new backbone reruns its own
evaluation only) without paying process start and imports three times."""

from __future__ import annotations

import sys

import torch

from .. import config
from ..data.labelled import LabelError
from ..ssl.checkpoint import CheckpointError
from .downstream_stage import classify, segment
from .features import FeatureError
from .invariance_stage import evaluate as invariance
from .sets import SetError

ERRORS = (config.ConfigError, SetError, LabelError, FeatureError, CheckpointError)
EVALUATIONS = {"invariance": invariance, "classification": classify, "segmentation": segment}


class UsageError(ValueError):
    pass


def describe(kind: str, metrics: dict) -> str:
    if kind == "invariance":
        return ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items())
    keys = ("linear_top1", "knn_top1", "svm_map") if kind == "classification" else ("miou", "pixel_accuracy")
    return ", ".join(f"{k} {metrics[k]}" for k in keys if k in metrics)


def run(argv: list[str]) -> int:
    """Evaluate MODEL = argv[0]: results/<kind>/MODEL for every kind; a known failure is one line
    on stderr (naming the evaluation) and exit status 1."""
    kind = "evaluate"
    try:
        if len(argv) != 1:
            raise UsageError("usage: python stages/evaluate.py MODEL")
        p = config.load(*EVALUATIONS, "variants", "pretrain")
        name = argv[0]
        if name not in p["variants"]:
            raise UsageError(f"model {name!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        arch = p["variants"][name].arch or p["pretrain"].arch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for kind, evaluate in EVALUATIONS.items():
            metrics = evaluate(name, arch, f"models/{name}/backbone.pt", p[kind], f"results/{kind}/{name}", device)
            print(f"evaluate@{name} {kind}: {describe(kind, metrics)}")
    except (*ERRORS, UsageError) as exc:
        print(f"evaluate ({kind}): {exc}", file=sys.stderr)
        return 1
    return 0
