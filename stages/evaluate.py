"""DVC stages evaluate_<KIND>@MODEL: one evaluation (invariance, classification or segmentation)
of one backbone (--backbone), on the data sets named here, into its results folder (--out).

Each KIND is the module of that name in demystify.evaluation, whose `run_stage` is the whole
stage: invariance.py, classification.py, segmentation.py (what they share: features.py). One stage
per evaluation and model, so that a change of one evaluation's params reruns that evaluation only
(`-S classification.knn.k=50` reruns the classification of each model, nothing else); features
are still extracted once per data set and model (the cost of three stages over one is a process
start and imports, measured in docs/pipeline.md)."""

import argparse
import sys

from demystify.backbone import CheckpointError
from demystify.core import config, stage_process
from demystify.evaluation import classification, invariance, segmentation
from demystify.evaluation.features import FeatureError, Model
from demystify.evaluation.labelled import LabelError
from demystify.evaluation.sets import SetError

EVALUATIONS = {
    "invariance": invariance.run_stage,
    "classification": classification.run_stage,
    "segmentation": segmentation.run_stage,
}
# the known failures: the stage prints one line (its name, then the message) and exits 1
ERRORS = (
    config.ConfigError,
    SetError,
    LabelError,
    FeatureError,
    CheckpointError,
    invariance.InvarianceError,
)
DATA = {
    "invariance": ("aloi", "got10k", "pascal3d"),
    "classification": ("data",),
    "segmentation": ("data",),
}


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "kind", choices=list(EVALUATIONS), help="the evaluation, and the params section it reads"
    )
    ap.add_argument("model", help="an entry of params.yaml variants")
    ap.add_argument("--backbone", required=True, help="the exported backbone.pt")
    ap.add_argument("--aloi", help="invariance: ALOI root (aloi_red2_{view,ill,col}/png2)")
    ap.add_argument("--got10k", help="invariance: GOT-10k split folder (list.txt, <seq>/)")
    ap.add_argument(
        "--pascal3d", help="invariance: PASCAL3D+ root (Images, Annotations, Image_sets)"
    )
    ap.add_argument(
        "--data", help="classification: labelled images; segmentation: images and masks"
    )
    ap.add_argument("--out", required=True, help="the evaluation's results folder")
    args = ap.parse_args(argv)
    missing = [f"--{flag}" for flag in DATA[args.kind] if getattr(args, flag) is None]
    if missing:
        ap.error(f"{args.kind} needs {' '.join(missing)}")
    try:
        p = config.load(args.kind, "variants", "pretrain")
        if args.model not in p["variants"]:
            raise config.ConfigError(
                f"model {args.model!r} is not in params.yaml variants: {', '.join(p['variants'])}"
            )
        section = p[args.kind].model_copy(
            update={flag: getattr(args, flag) for flag in DATA[args.kind]}
        )
        arch = p["variants"][args.model].arch or p["pretrain"].arch
        EVALUATIONS[args.kind](Model(args.model, arch, args.backbone), section, args.out)
    except ERRORS as exc:
        print(f"evaluate_{args.kind}@{args.model}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
