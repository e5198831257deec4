"""`evaluate@MODEL`: every evaluation of one model in one process (invariance, classification,
segmentation), each on its own data set with features extracted once and every probe fitted on
them. One stage per model keeps DVC's per-model caching (a new backbone reruns its own
evaluation only) without paying process start and imports three times."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import config
from ..data.labelled import LabelError
from ..ssl.checkpoint import CheckpointError
from .downstream_stage import classify, segment
from .features import FeatureError
from .invariance import InvarianceError
from .invariance_stage import evaluate as invariance
from .sets import SetError

ERRORS = (config.ConfigError, SetError, LabelError, FeatureError, CheckpointError, InvarianceError)
EVALUATIONS = {"invariance": invariance, "classification": classify, "segmentation": segment}


def describe(kind: str, metrics: dict) -> str:
    if kind == "invariance":
        return ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items())
    keys = ("linear_top1", "knn_top1", "svm_map") if kind == "classification" else ("miou", "pixel_accuracy")
    return ", ".join(f"{k} {metrics[k]}" for k in keys if k in metrics)


def run_stage(*, name: str, arch: str, backbone: str | Path, params: dict, out_dirs: dict[str, str | Path]) -> dict:
    """The `evaluate@MODEL` stage: each evaluation of EVALUATIONS on `backbone` into out_dirs[kind];
    params[kind] holds its section (data paths included). A known failure raises one of ERRORS,
    its message prefixed with the evaluation that failed."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for kind, evaluate in EVALUATIONS.items():
        try:
            results[kind] = evaluate(name, arch, backbone, params[kind], out_dirs[kind], device)
        except ERRORS as exc:
            raise type(exc)(f"{kind}: {exc}") from exc
        print(f"evaluate@{name} {kind}: {describe(kind, results[kind])}")
    return results
