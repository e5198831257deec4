"""The command line shared by the per-model evaluation stages (`eval_<kind>@MODEL`): validate
params, resolve the model's architecture and device, run, and turn a known failure into one
line on stderr and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from .. import config
from ..data.labelled import LabelError
from ..ssl.checkpoint import CheckpointError
from .features import FeatureError
from .sets import SetError

ERRORS = (config.ConfigError, SetError, LabelError, FeatureError, CheckpointError)


class UsageError(ValueError):
    pass


def run(kind: str, evaluate: Callable, argv: list[str], describe: Callable[[dict], str] = str) -> int:
    """`evaluate(name, arch, backbone_path, params_section, out_dir, device)` for MODEL = argv[0]."""
    try:
        if len(argv) != 1:
            raise UsageError(f"usage: python stages/eval_{kind}.py MODEL")
        p = config.load(kind, "variants", "pretrain")
        name = argv[0]
        if name not in p["variants"]:
            raise UsageError(f"model {name!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        arch = p["variants"][name].arch or p["pretrain"].arch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = evaluate(name, arch, f"models/{name}/backbone.pt", p[kind], f"results/{kind}/{name}", device)
    except (*ERRORS, UsageError) as exc:
        print(f"eval_{kind}: {exc}", file=sys.stderr)
        return 1
    print(f"eval_{kind}@{name}: {describe(metrics)}")
    return 0
