"""DVC stage evaluate@MODEL: the invariance, classification and segmentation evaluations of one
backbone (--backbone), on the data sets named here, into one results folder per evaluation."""

import argparse
import sys

from demystify import config, stage_process
from demystify.evaluation.model_stage import ERRORS, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="an entry of params.yaml variants")
    ap.add_argument("--backbone", required=True, help="the exported backbone.pt")
    ap.add_argument("--aloi", required=True, help="ALOI root (aloi_red2_{view,ill,col}/png2)")
    ap.add_argument("--got10k", required=True, help="GOT-10k split folder (list.txt, <seq>/)")
    ap.add_argument("--pascal3d", required=True, help="PASCAL3D+ root (Images, Annotations, Image_sets)")
    ap.add_argument("--classification-data", required=True, help="labelled images (format: classification.format)")
    ap.add_argument("--segmentation-data", required=True, help="images and masks (format: segmentation.format)")
    for kind in ("invariance", "classification", "segmentation"):
        ap.add_argument(f"--{kind}-out", required=True, help=f"results folder of the {kind} evaluation")
    args = ap.parse_args(argv)
    try:
        p = config.load("invariance", "classification", "segmentation", "variants", "pretrain")
        if args.model not in p["variants"]:
            raise config.ConfigError(f"model {args.model!r} is not in params.yaml variants: {', '.join(p['variants'])}")
        sections = {
            "invariance": p["invariance"].model_copy(update={"aloi": args.aloi, "got10k": args.got10k,
                                                             "pascal3d": args.pascal3d}),
            "classification": p["classification"].model_copy(update={"data": args.classification_data}),
            "segmentation": p["segmentation"].model_copy(update={"data": args.segmentation_data}),
        }
        run_stage(name=args.model, arch=p["variants"][args.model].arch or p["pretrain"].arch, backbone=args.backbone,
                  params=sections, out_dirs={k: getattr(args, f"{k}_out") for k in sections})
    except ERRORS as exc:
        print(f"evaluate@{args.model}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
