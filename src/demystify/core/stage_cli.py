"""What every stage script in stages/ does around its own work: tie the process to DVC
(stage_process.guard), read the paths its `cmd` names, run, and turn a bad input into one line
`stage: why` on stderr with exit status 1 (never a traceback, never exit 0).

A script is then its paths and its body:

    PARSER = stage_cli.parser(__doc__, frames="extract_frames' output folder", out="pairs manifest")

    def run(args) -> list[str]:
        ...  # read params, call the package's run_stage
        return ["one line for the log"]

    def main(argv=None) -> int:
        return stage_cli.main("mine_pairs", PARSER, run, (PairsError,), argv)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from demystify.core import config, stage_process


def parser(doc: str | None, **paths: str) -> argparse.ArgumentParser:
    """A parser with one required `--name` option per keyword (its value: the option's help);
    options that are not required paths are added by the script itself."""
    ap = argparse.ArgumentParser(description=doc)
    for name, help_text in paths.items():
        ap.add_argument(f"--{name}", required=True, help=help_text)
    return ap


def main(
    stage: str,
    ap: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], Iterable[str] | None],
    errors: tuple[type[BaseException], ...],
    argv: list[str] | None = None,
) -> int:
    """Guard, parse, run `body`; its lines are printed as `stage: line`. A params error or one of
    `errors` is printed the same way on stderr, and the exit status is 1."""
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    args = ap.parse_args(argv)
    try:
        lines = body(args)
    except (config.ConfigError, *errors) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1
    for line in lines or ():
        print(f"{stage}: {line}")
    return 0
