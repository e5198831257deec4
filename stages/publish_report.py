"""DVC stage publish_report: the report stage's cached markdown -> reports/report.md, kept in git
(cache: false) so a clone reads the committed run's report without reproducing it. A stage of its
own because DVC does not run-cache a stage with an uncached plain output: the five-minute report
stays restorable, and only this copy reruns."""

import shutil
import sys

from demystify.core import stage_cli
from demystify.core.io import atomic_path

PARSER = stage_cli.parser(__doc__, report="the report stage's markdown", out="where git keeps it")


class PublishError(OSError):
    """The report could not be read or its copy written; names the file."""


def run(args) -> None:
    try:
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.report, tmp)
    except OSError as exc:
        raise PublishError(f"{exc.filename or args.report}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main("publish_report", PARSER, run, (PublishError,), argv)


if __name__ == "__main__":
    sys.exit(main())
