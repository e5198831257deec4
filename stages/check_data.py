"""DVC stage check_data: great-expectations checks of the frames and pairs manifests and of the
annotated image corpora under --corpora -> --out (summary, validations, report.html, the training gate)."""

import argparse
import sys

from demystify import config
from demystify.checks.stage import CheckError, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", required=True, help="extract_frames' output folder")
    ap.add_argument("--pairs", required=True, help="mine_pairs' manifest")
    ap.add_argument("--corpora", required=True, help="annotated image corpora (<name>/annotations.csv)")
    ap.add_argument("--videos", required=True, help="the videos folder (ground truth for the video corpora)")
    ap.add_argument("--out", required=True, help="results folder")
    args = ap.parse_args(argv)
    try:
        p = config.load("checks", "frames", "pairs", "data", "world")
        summary = run_stage(frames_root=args.frames, pairs_path=args.pairs, corpora_root=args.corpora,
                            videos_root=args.videos, out_dir=args.out, checks=p["checks"], frames=p["frames"],
                            pairs_params=p["pairs"], world=p["world"])
    except (config.ConfigError, CheckError) as exc:
        print(f"check_data: {exc}", file=sys.stderr)
        return 1
    verdicts = {name: "object-centric" if c["object_centric"] else "not object-centric"
                for name, c in summary["corpora"].items()}
    print(f"check_data: suites {summary['suites']}; corpora {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
