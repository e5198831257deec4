"""DVC stage publish_report: the report stage's cached markdown -> reports/report.md, kept in git
(cache: false) so a clone reads the committed run's report without reproducing it. A stage of its
own because DVC does not run-cache a stage with an uncached plain output: the five-minute report
stays restorable, and only this copy reruns."""

import argparse
import shutil
import sys

from demystify.core import stage_process
from demystify.core.io import atomic_path


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--report", required=True, help="the report stage's markdown")
    ap.add_argument("--out", required=True, help="where git keeps it")
    args = ap.parse_args(argv)
    try:
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.report, tmp)
    except OSError as exc:
        print(
            f"publish_report: {exc.filename or args.report}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
