"""plan_shards: every video under the videos folder, listed once per shard of `frames.shards`
(`<out>/shard-K.csv`: file relative to the videos folder, its MD5, and the reason when its name is
rejected), so each extract_frames@K depends on its own list, not on the whole folder: a new video
changes one list and reruns one shard. Names are judged here, over every video (a frames folder one
video's alone, whichever shard the other is in); MD5s come through the node's digest cache, so a
rerun on unchanged videos only stats them. extract_frames@K reads its list (read_plan) and refuses
a video whose bytes no longer match it (extract.check_planned)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from demystify.core import frames_store
from demystify.core.io import write_csv
from demystify.video.extract import (
    VIDEO_EXTENSIONS,
    ExtractionError,
    Planned,
    find_videos,
    plan_names,
    video_md5s,
)

COLUMNS = ["file", "md5", "rejected"]  # rejected: '' for a video to decode


def plan_name(shard: int) -> str:
    return f"{frames_store.shard_name(shard)}.csv"


def plan(videos_root: str | Path, shards: list[int]) -> dict[int, pd.DataFrame]:
    """{K: the rows of shard K (COLUMNS, sorted by file)} for every K of `shards`; ExtractionError
    when the folder is missing or holds no video (what extract_frames would say)."""
    root = Path(videos_root)
    if not root.is_dir():
        raise ExtractionError(f"videos folder not found: {root}")
    found = find_videos(root)
    if not found:
        raise ExtractionError(
            f"no video found under {root} (extensions: {' '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    accepted, rejected = plan_names(found, root)
    md5 = video_md5s(root, accepted)
    rows = [(f, md5[f], "") for f in accepted] + [(f, "", reason) for f, reason in rejected]
    out: dict[int, list] = {k: [] for k in shards}  # shards: 0..n-1 (config checks it)
    for file, digest, reason in rows:
        out[frames_store.shard_of(Path(file).with_suffix("").as_posix(), len(shards))].append(
            (file, digest, reason)
        )
    return {k: pd.DataFrame(sorted(r), columns=COLUMNS) for k, r in out.items()}


def run_stage(
    *, videos_root: str | Path, out_root: str | Path, shards: list[int]
) -> dict[int, int]:
    """Write `<out_root>/shard-K.csv` for every K (each atomically) and drop the lists of shards no
    longer in `shards`; returns {K: rows}."""
    out_root = Path(out_root)
    plans = plan(videos_root, shards)
    for k, rows in plans.items():
        write_csv(out_root / plan_name(k), rows)
    keep = {plan_name(k) for k in plans}
    for old in out_root.glob(f"{frames_store.SHARD_PREFIX}*.csv"):
        if old.name not in keep:
            old.unlink()
    return {k: len(rows) for k, rows in plans.items()}


def read_plan(path: str | Path) -> Planned:
    """One shard's list as extract_all takes it; ExtractionError naming the file when it is missing
    or not a plan_shards list."""
    path = Path(path)
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ExtractionError(
            f"{path}: cannot read the shard's video list ({type(exc).__name__}: {exc}); "
            "run plan_shards first"
        ) from None
    if list(rows.columns) != COLUMNS:
        raise ExtractionError(
            f"{path}: columns {list(rows.columns)}, expected {COLUMNS} (a plan_shards list)"
        )
    ok = rows["rejected"] == ""
    return Planned(
        accepted=dict(zip(rows["file"][ok], rows["md5"][ok], strict=True)),
        rejected=list(zip(rows["file"][~ok], rows["rejected"][~ok], strict=True)),
    )
