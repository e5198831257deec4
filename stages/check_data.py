"""DVC stage check_data: great-expectations checks of the frames and pairs manifests, of the
annotated image corpora under --corpora, and that no classification test instance (--classification)
is in a pretraining source -> --out (summary, validations, report.html, the training gate)."""

import sys

from demystify.checks.stage import CheckError, CheckParams, CheckPaths, run_stage
from demystify.core import config, stage_cli

PARSER = stage_cli.parser(
    __doc__,
    frames="extract_frames' output folder",
    pairs="mine_pairs' manifest",
    corpora="annotated image corpora (<name>/annotations.csv)",
    videos="the videos folder (ground truth for the video corpora)",
    classification="the classification set's annotations.csv (path, split, category, instance)",
    out="results folder",
)


def run(args) -> list[str]:
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
    verdicts = {
        name: "object-centric" if c["object_centric"] else "not object-centric"
        for name, c in summary["corpora"].items()
    }
    skipped = [f"{suite} {why}" for suite, why in summary.get("skipped", {}).items()]
    return [f"suites {summary['suites']}; corpora {verdicts}", *skipped]


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("check_data", PARSER, run, (CheckError,), argv)


if __name__ == "__main__":
    sys.exit(main())
