"""DVC stages evaluate_<KIND>@MODEL: one evaluation (invariance, classification or segmentation)
of one backbone (--backbone), on the data sets named here, into its results folder (--out)."""

import argparse
import sys

from demystify.core import config, stage_process
from demystify.evaluation.model_stage import ERRORS, EVALUATIONS, run_stage

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
        run_stage(
            kind=args.kind,
            name=args.model,
            arch=p["variants"][args.model].arch or p["pretrain"].arch,
            backbone=args.backbone,
            params=section,
            out_dir=args.out,
        )
    except ERRORS as exc:
        print(f"evaluate_{args.kind}@{args.model}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
