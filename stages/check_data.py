"""DVC stage check_data: great-expectations checks of the frames and pairs manifests, of the
annotated image corpora under --corpora, and that no classification test instance (--classification)
is in a pretraining source -> --out (summary, validations, report.html, the training gate)."""

import argparse
import sys

from demystify.checks.stage import CheckError, CheckParams, CheckPaths, run_stage
from demystify.core import config, stage_process


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", required=True, help="extract_frames' output folder")
    ap.add_argument("--pairs", required=True, help="mine_pairs' manifest")
    ap.add_argument(
        "--corpora", required=True, help="annotated image corpora (<name>/annotations.csv)"
    )
    ap.add_argument(
        "--videos", required=True, help="the videos folder (ground truth for the video corpora)"
    )
    ap.add_argument(
        "--classification",
        required=True,
        help="the classification set's annotations.csv (path, split, category, instance)",
    )
    ap.add_argument("--out", required=True, help="results folder")
    args = ap.parse_args(argv)
    try:
        p = config.load("checks", "frames", "pairs", "data", "world", "pretrain")
        paths = CheckPaths.of(
            frames_root=args.frames,
            pairs_path=args.pairs,
            corpora_root=args.corpora,
            videos_root=args.videos,
            classification_annotations=args.classification,
            out_dir=args.out,
        )
        summary = run_stage(paths, CheckParams.of(p))
    except (config.ConfigError, CheckError) as exc:
        print(f"check_data: {exc}", file=sys.stderr)
        return 1
    verdicts = {
        name: "object-centric" if c["object_centric"] else "not object-centric"
        for name, c in summary["corpora"].items()
    }
    print(f"check_data: suites {summary['suites']}; corpora {verdicts}")
    for suite, why in summary.get("skipped", {}).items():
        print(f"check_data: {suite} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
