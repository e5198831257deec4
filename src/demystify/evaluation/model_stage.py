"""`evaluate_<KIND>@MODEL`: one evaluation (invariance, classification or segmentation) of one
model, a DVC stage of its own so that a change of one evaluation's params reruns that evaluation
only (`-S classification.knn.k=50` reruns the classification of each model, nothing else). Each
evaluation has its own data sets, so features are still extracted once per data set and model;
what three stages cost over one is a process start and imports (measured in docs/pipeline.md)."""

from __future__ import annotations

from pathlib import Path

import torch

from demystify.backbone import CheckpointError
from demystify.core import config
from demystify.evaluation.downstream_stage import classify, segment
from demystify.evaluation.features import FeatureError
from demystify.evaluation.invariance import InvarianceError
from demystify.evaluation.invariance_stage import evaluate as invariance
from demystify.evaluation.labelled import LabelError
from demystify.evaluation.sets import SetError

ERRORS = (config.ConfigError, SetError, LabelError, FeatureError, CheckpointError, InvarianceError)
EVALUATIONS = {"invariance": invariance, "classification": classify, "segmentation": segment}


def describe(kind: str, metrics: dict) -> str:
    if kind == "invariance":
        return ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items())
    keys = (
        ("linear_top1", "knn_top1", "svm_map")
        if kind == "classification"
        else ("miou", "pixel_accuracy")
    )
    return ", ".join(f"{k} {metrics[k]}" for k in keys if k in metrics)


def run_stage(
    *, kind: str, name: str, arch: str, backbone: str | Path, params, out_dir: str | Path
) -> dict:
    """The `evaluate_<kind>@MODEL` stage: evaluation `kind` of EVALUATIONS on `backbone` into
    out_dir; params is its section (data paths included). A known failure raises one of ERRORS
    (the stage's name, which the script prints first, says which evaluation failed)."""
    if kind not in EVALUATIONS:
        raise config.ConfigError(f"evaluation {kind!r} is not one of {', '.join(EVALUATIONS)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = EVALUATIONS[kind](name, arch, backbone, params, out_dir, device)
    print(f"evaluate_{kind}@{name}: {describe(kind, metrics)}")
    return metrics
