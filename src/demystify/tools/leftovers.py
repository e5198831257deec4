"""The folders a removed variant left behind: DVC never deletes the outputs of a stage that is no
longer in dvc.yaml (a variant tried with `-S +variants.NAME=...`, then dropped, or left by `dvc exp
apply` of a run without it), and a `results/<kind>/NAME/` folder inside a folder a stage depends on
(summaries, report) changes that dependency's hash: the stage reruns, its run-cache entry missed.
`python -m demystify.tools.leftovers` deletes those folders and DVC's .gitignore lines for them (`make
run` runs it first); `--dry-run` only lists them. Cached outputs stay in DVC's cache, so trying the
variant again restores them from the run-cache. (DVC's own .gitignore files are in .dvcignore.)

The same for frames: a shard no longer in `frames.shards` (data/frames/shard-K, results/frames/shard-K,
its list data/shards/shard-K.csv) and what the unsharded layout left in those folders (<video>/ folders, manifest.parquet,
rejected.csv, metrics.json): the readers depend on data/frames as a whole and glob its shards."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from demystify.core import config

# the folders of per-variant subfolders that a stage depends on as a whole
FOLDERS = (
    "results/pretrain",
    "results/invariance",
    "results/classification",
    "results/segmentation",
)
# the folders of per-shard subfolders (extract_frames@K); nothing else belongs in them
SHARD_FOLDERS = ("data/frames", "results/frames")
# plan_shards' per-shard lists (data/shards/shard-K.csv); nothing else belongs there either
SHARD_LISTS = "data/shards"


def find(root: str | Path, variants: list[str], shards: list[int] | None = None) -> list[Path]:
    """Subfolders of FOLDERS (under `root`) named after no variant of `variants`; with `shards`, every
    entry of SHARD_FOLDERS but the shard-K folders of `shards` (and DVC's .gitignore)."""
    keep = set(variants)
    found = [
        sub
        for folder in FOLDERS
        if (Path(root) / folder).is_dir()
        for sub in (Path(root) / folder).iterdir()
        if sub.is_dir() and sub.name not in keep
    ]
    if shards is not None:
        kept = {f"shard-{k}" for k in shards} | {".gitignore"}
        found += [
            sub
            for folder in SHARD_FOLDERS
            if (Path(root) / folder).is_dir()
            for sub in (Path(root) / folder).iterdir()
            if sub.name not in kept
        ]
        lists = Path(root) / SHARD_LISTS
        if lists.is_dir():
            found += [
                sub for sub in lists.iterdir() if sub.name not in {f"shard-{k}.csv" for k in shards}
            ]
    return sorted(found)


def _drop_gitignore_line(folder: Path, name: str) -> None:
    """DVC writes `/NAME` into the parent's .gitignore for a cached output; the line goes with it."""
    path = folder / ".gitignore"
    if path.is_file():
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() != f"/{name}"]
        if kept != lines:
            path.write_text("".join(f"{line}\n" for line in kept))


def prune(
    root: str | Path, variants: list[str], dry_run: bool = False, shards: list[int] | None = None
) -> list[Path]:
    """Delete what `find` lists (unless dry_run); returns it."""
    found = find(root, variants, shards)
    if not dry_run:
        for sub in found:
            if sub.is_dir() and not sub.is_symlink():
                shutil.rmtree(sub)
            else:
                sub.unlink()
            _drop_gitignore_line(sub.parent, sub.name)
    return found


SHOWN = 20  # paths listed one by one; the rest counted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--params", default="params.yaml", help="the params file whose variants are kept"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="list the leftover folders, delete nothing"
    )
    args = ap.parse_args(argv)
    try:
        loaded = config.load("variants", "frames", path=args.params)
        variants, shards = list(loaded["variants"]), loaded["frames"].shards
    except config.ConfigError as exc:
        print(f"leftovers: {exc}", file=sys.stderr)
        return 1
    root = Path(args.params).resolve().parent
    found = prune(root, variants, args.dry_run, shards)
    verb = "leftover" if args.dry_run else "removed"
    for sub in found[:SHOWN]:
        print(f"{verb}: {sub.relative_to(root)}")
    if len(found) > SHOWN:  # the old loose frames layout leaves one folder per video: thousands
        print(
            f"{verb}: {len(found) - SHOWN} more under {sorted({str(s.parent.relative_to(root)) for s in found[SHOWN:]})}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
