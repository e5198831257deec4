"""The folders a removed variant left behind: DVC never deletes the outputs of a stage that is no
longer in dvc.yaml (a variant tried with `-S +variants.NAME=...`, then dropped, or left by `dvc exp
apply` of a run without it), and a `results/<kind>/NAME/` folder inside a folder a stage depends on
(summaries, report) changes that dependency's hash: the stage reruns, its run-cache entry missed.
`python -m demystify.leftovers` deletes those folders and DVC's .gitignore lines for them (`make
run` runs it first); `--dry-run` only lists them. Cached outputs stay in DVC's cache, so trying the
variant again restores them from the run-cache. (DVC's own .gitignore files are in .dvcignore.)"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import config

# the folders of per-variant subfolders that a stage depends on as a whole
FOLDERS = ("results/pretrain", "results/invariance", "results/classification", "results/segmentation")


def find(root: str | Path, variants: list[str]) -> list[Path]:
    """Subfolders of FOLDERS (under `root`) named after no variant of `variants`."""
    keep = set(variants)
    return sorted(sub for folder in FOLDERS if (Path(root) / folder).is_dir()
                  for sub in (Path(root) / folder).iterdir() if sub.is_dir() and sub.name not in keep)


def _drop_gitignore_line(folder: Path, name: str) -> None:
    """DVC writes `/NAME` into the parent's .gitignore for a cached output; the line goes with it."""
    path = folder / ".gitignore"
    if path.is_file():
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() != f"/{name}"]
        if kept != lines:
            path.write_text("".join(f"{line}\n" for line in kept))


def prune(root: str | Path, variants: list[str], dry_run: bool = False) -> list[Path]:
    """Delete what `find` lists (unless dry_run); returns it."""
    found = find(root, variants)
    if not dry_run:
        for sub in found:
            shutil.rmtree(sub)
            _drop_gitignore_line(sub.parent, sub.name)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the params file whose variants are kept")
    ap.add_argument("--dry-run", action="store_true", help="list the leftover folders, delete nothing")
    args = ap.parse_args(argv)
    try:
        variants = list(config.load("variants", path=args.params)["variants"])
    except config.ConfigError as exc:
        print(f"leftovers: {exc}", file=sys.stderr)
        return 1
    root = Path(args.params).resolve().parent
    for sub in prune(root, variants, args.dry_run):
        print(f"{'leftover' if args.dry_run else 'removed'}: {sub.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
