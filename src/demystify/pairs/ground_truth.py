"""Ground-truth object tracks in the coordinates of the extracted frames, to score pairs.

Two sources, per video:
- `<videos>/<video>/objects.csv` (the synthetic world's extension of GOT-10k: every object's
  box per source frame, distractors and occluders included), aligned by the GOT-10k
  `meta_info.ini` annotation rate and resolution;
- otherwise the target carried in the frames manifest (`x, y, w, h`, `absence`), as track 0;
  frames without a valid box there (NaN, inf, w or h <= 0) have no target.
Videos with neither have no ground truth; their pairs get `iou_gt` = NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from demystify.data import got10k

COLUMNS = ["video", "frame", "track", "x", "y", "w", "h"]
POSE = [
    "azimuth_deg",
    "elevation_deg",
]  # the world's objects.csv records each object's pose; real data sets do not


def _from_objects_csv(path: Path, frames: pd.DataFrame) -> pd.DataFrame:
    objects = pd.read_csv(path)
    seq = path.parent
    meta = got10k.read_meta(seq) if (seq / "meta_info.ini").is_file() else {}
    n_source = int(objects["frame"].max()) + 1
    rate = got10k.anno_fps(meta) or n_source / max(float(frames["time_s"].max()), 1e-9)
    src_w, src_h = got10k.resolution(meta) or (
        int(frames["width"].iloc[0]),
        int(frames["height"].iloc[0]),
    )
    source_frame = got10k.nearest_rows(frames["time_s"].to_numpy(), rate, n_source)
    lookup = pd.DataFrame(
        {
            "frame": frames["frame"].to_numpy(),
            "source": source_frame,
            "sx": frames["width"].to_numpy() / src_w,
            "sy": frames["height"].to_numpy() / src_h,
        }
    )
    merged = lookup.merge(objects.rename(columns={"frame": "source"}), on="source")
    out = pd.DataFrame(
        {
            "frame": merged["frame"],
            "track": merged["track"],
            "x": merged["x"] * merged["sx"],
            "y": merged["y"] * merged["sy"],
            "w": merged["w"] * merged["sx"],
            "h": merged["h"] * merged["sy"],
            **{c: merged[c] for c in POSE if c in merged},
        }
    )
    return out[got10k.has_box(out[["x", "y", "w", "h"]].to_numpy(float))]


def _from_manifest(frames: pd.DataFrame) -> pd.DataFrame:
    # A frame without a box (NaN, inf, w or h <= 0: got10k.has_box) is a frame without the target.
    present = pd.Series(
        got10k.has_box(frames[["x", "y", "w", "h"]].to_numpy(float)), index=frames.index
    )
    if "absence" in frames:
        present &= frames["absence"].fillna(0).astype(int) == 0
    rows = frames[present]
    return pd.DataFrame(
        {
            "frame": rows["frame"],
            "track": 0,
            "x": rows["x"],
            "y": rows["y"],
            "w": rows["w"],
            "h": rows["h"],
        }
    )


def load_tracks(frames: pd.DataFrame, videos_root: str | Path | None) -> pd.DataFrame:
    """Ground-truth boxes (video, frame, track, x, y, w, h) for the manifest rows of ONE video."""
    video = str(frames["video"].iloc[0])
    objects = Path(videos_root) / video / "objects.csv" if videos_root else None
    if objects is not None and objects.is_file():
        out = _from_objects_csv(objects, frames)
    else:
        out = _from_manifest(frames)
    out.insert(0, "video", video)
    return out[COLUMNS + [c for c in POSE if c in out]].reset_index(drop=True)


def _pair_rows(tracks: pd.DataFrame | None, track: int, a: int, b: int) -> pd.DataFrame | None:
    """Object `track`'s ground-truth rows in frames a and b, in that order; None if either is missing."""
    if tracks is None or track < 0:
        return None
    rows = (
        tracks[(tracks["track"] == track) & tracks["frame"].isin([a, b])]
        .drop_duplicates("frame")
        .set_index("frame")
    )
    return rows.loc[[a, b]] if a in rows.index and b in rows.index else None


def view_change_deg(tracks: pd.DataFrame | None, track: int, a: int, b: int) -> float:
    """The angle (degrees) between the directions the camera sees object `track` from in frames a
    and b: how much of a new view of the object the pair shows. NaN without recorded poses."""
    rows = _pair_rows(tracks, track, a, b)
    if rows is None or not set(POSE) <= set(rows.columns):
        return float("nan")
    az, el = (
        np.deg2rad(rows["azimuth_deg"].to_numpy()),
        np.deg2rad(rows["elevation_deg"].to_numpy()),
    )
    d = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], 1)
    return float(np.degrees(np.arccos(np.clip(d[0] @ d[1], -1.0, 1.0))))


def scale_change(tracks: pd.DataFrame | None, track: int, a: int, b: int) -> float:
    """How much bigger or smaller object `track` appears in frame b than in a: sqrt of the ratio of
    its ground-truth box areas, as a factor >= 1 (1.25: a quarter larger or smaller). NaN if unknown."""
    rows = _pair_rows(tracks, track, a, b)
    if rows is None:
        return float("nan")
    area = (rows["w"] * rows["h"]).to_numpy(float)
    ratio = float(np.sqrt(area[1] / area[0]))
    return max(ratio, 1 / ratio)


def boxes_at(tracks: pd.DataFrame, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, boxes (n, 4)) present in `frame`."""
    rows = tracks[tracks["frame"] == frame]
    return rows["track"].to_numpy(), rows[["x", "y", "w", "h"]].to_numpy(float)
