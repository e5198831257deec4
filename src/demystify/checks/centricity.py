"""How object-centric a corpus is, per image: the largest object's box area share, the number of
objects, and the distance of that object's centre from the image centre (as a share of the
half-diagonal, so 0 is centred and 1 is a corner).

Measured from ground-truth boxes wherever the data has them. Where it has none (a real video
without annotations), the label-free estimate is the tracked region: a pair's box a stands for
the main object of its frame, and a pair crop is taken to be filled by its object. Each row
says which was used (`measured_from`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from demystify.pairs import ground_truth

COLUMNS = ["corpus", "image", "objects", "largest_share", "center_offset", "measured_from"]


def _measure(boxes: np.ndarray, width: float, height: float) -> tuple[int, float, float]:
    """(objects, largest share, centre offset) of boxes (n, 4) in a width x height image."""
    if len(boxes) == 0:
        return 0, 0.0, 1.0
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    areas = (x1 - x0) * (y1 - y0)
    keep = areas > 0
    if not keep.any():
        return 0, 0.0, 1.0
    i = int(np.argmax(areas))
    cx, cy = (x0[i] + x1[i]) / 2, (y0[i] + y1[i]) / 2
    offset = np.hypot(cx - width / 2, cy - height / 2) / np.hypot(width / 2, height / 2)
    return int(keep.sum()), float(areas[i] / (width * height)), float(offset)


def _groups(table: pd.DataFrame, key: str, cols: list[str]) -> list[tuple[int, np.ndarray]]:
    """(key, rows of `cols` as float) per value of `key`, sorted, rows in table order: groupby's groups,
    cut out of one array (a column selection per group costs a millisecond: hours at 30k videos)."""
    keys, values = table[key].to_numpy(), table[cols].to_numpy(float)
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return (
        list(zip(unique.tolist(), np.split(values[order], starts[1:]), strict=True))
        if len(keys)
        else []
    )


def _rows(corpus: str, groups, size_of, source: str) -> pd.DataFrame:
    rows = []
    for image, boxes in groups:
        w, h = size_of(image)
        n, share, offset = _measure(boxes, w, h)
        rows.append((corpus, str(image), n, share, offset, source))
    return pd.DataFrame(rows, columns=COLUMNS)


def object_centric(root: Path, size: int) -> pd.DataFrame:
    """ImageFolder corpus with annotations.csv (one object per image)."""
    ann = pd.read_csv(root / "annotations.csv")
    groups = ((r.path, np.array([[r.x, r.y, r.w, r.h]], float)) for r in ann.itertuples())
    return _rows("object_centric", groups, lambda _: (size, size), "boxes")


def scenes(root: Path, size: int) -> pd.DataFrame:
    """Scenes with annotations.csv (one row per object; objects hidden entirely do not count)."""
    ann = pd.read_csv(root / "annotations.csv")
    ann = ann[ann.w > 0]
    groups = ((img, g[["x", "y", "w", "h"]].to_numpy(float)) for img, g in ann.groupby("image"))
    return _rows("scenes", groups, lambda _: (size, size), "boxes")


def scene_crops(root: Path, scenes_root: Path, margin: float) -> pd.DataFrame:
    """Objects cut out of scenes: measured in the crop's own frame, other scene objects included."""
    crops = pd.read_csv(root / "annotations.csv")
    objects = pd.read_csv(scenes_root / "annotations.csv")
    objects = objects[objects.w > 0]
    by_image = {img: g[["x", "y", "w", "h"]].to_numpy(float) for img, g in objects.groupby("image")}
    rows = []
    for r in crops.itertuples():
        side = max(r.w, r.h) * (1 + margin)
        x0, y0 = r.x + r.w / 2 - side / 2, r.y + r.h / 2 - side / 2
        boxes = by_image.get(r.source, np.zeros((0, 4))) - np.array([x0, y0, 0, 0])
        # another object counts when at least half of it is inside the crop
        inside = _inside_share(boxes, side, side) >= 0.5
        n, share, offset = _measure(boxes[inside], side, side)
        rows.append(("scene_crops", r.path, n, share, offset, "boxes"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _inside_share(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Share of each box's area inside a width x height frame at the origin."""
    w = np.clip(boxes[:, 0] + boxes[:, 2], 0, width) - np.clip(boxes[:, 0], 0, width)
    h = np.clip(boxes[:, 1] + boxes[:, 3], 0, height) - np.clip(boxes[:, 1], 0, height)
    return np.clip(w, 0, None) * np.clip(h, 0, None) / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)


def video_tracks(manifest: pd.DataFrame, videos_root: Path | None) -> dict[str, pd.DataFrame]:
    """Each video's ground-truth tracks (ground_truth.load_tracks), in one grouped pass over the
    manifest: video_frames and pair_crops share them instead of each masking the whole table per
    video (60 ms a mask at 30k videos)."""
    return {
        str(video): ground_truth.load_tracks(frames, videos_root)
        for video, frames in manifest.groupby("video", sort=True)
    }


def video_frames(
    manifest: pd.DataFrame,
    videos_root: Path | None,
    pairs: pd.DataFrame | None,
    tracks_of: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Frames of the frames manifest: ground-truth tracks where a video has them, else the tracked
    box of its pairs (frames that start a pair only). `tracks_of`: video_tracks, if already made."""
    tracks_of = video_tracks(manifest, videos_root) if tracks_of is None else tracks_of
    pairs_of = (
        dict(tuple(pairs.groupby("video", sort=False))) if pairs is not None and len(pairs) else {}
    )
    parts = []
    for video, frames in manifest.groupby("video", sort=True):
        tracks = tracks_of[str(video)]
        size = dict(
            zip(
                frames["frame"].tolist(),
                zip(frames["width"].tolist(), frames["height"].tolist(), strict=True),
                strict=True,
            )
        )
        if len(tracks):
            part = _rows(
                "video_frames",
                _groups(tracks, "frame", ["x", "y", "w", "h"]),
                size.__getitem__,
                "boxes",
            )
            missing = sorted(set(frames["frame"]) - set(tracks["frame"]))  # no object in view
            part = pd.concat(
                [
                    part,
                    pd.DataFrame(
                        [("video_frames", str(f), 0, 0.0, 1.0, "boxes") for f in missing],
                        columns=COLUMNS,
                    ),
                ]
            )
        elif pairs_of:
            mine = pairs_of.get(video, pairs.iloc[:0])
            groups = _groups(mine, "frame_a", ["a_x", "a_y", "a_w", "a_h"])
            part = _rows("video_frames", groups, size.__getitem__, "tracked box")
        else:
            continue
        part["image"] = video + "/" + part["image"]
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def pair_crops(
    pairs: pd.DataFrame,
    manifest: pd.DataFrame,
    videos_root: Path | None,
    tracks_of: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Crops at each pair's box a: the ground-truth objects inside it where known, else the
    label-free estimate that the tracked region is the object (one object filling the crop).
    One grouped pass: each video's tracks once (`tracks_of`, else made here), its boxes by frame."""
    tracks_of = video_tracks(manifest, videos_root) if tracks_of is None else tracks_of
    none = np.zeros((0, 4))
    rows = []
    for video, mine in pairs.groupby("video", sort=True):
        tracks = tracks_of.get(str(video))
        by_frame = {} if tracks is None else dict(_groups(tracks, "frame", ["x", "y", "w", "h"]))
        for r in mine.itertuples():
            crop = np.array([r.a_x, r.a_y, r.a_w, r.a_h], float)
            name = f"{video}/{r.frame_a}:{r.Index}"
            boxes = by_frame.get(int(r.frame_a), none)
            if r.source == "frames" or r.track < 0 or len(boxes) == 0:
                rows.append(("pair_crops", name, 1, 1.0, 0.0, "tracked box"))
                continue
            local = boxes - np.array([crop[0], crop[1], 0, 0])
            inside = _inside_share(local, crop[2], crop[3]) >= 0.5
            n, share, offset = _measure(local[inside], crop[2], crop[3])
            rows.append(("pair_crops", name, n, share, offset, "boxes"))
    return pd.DataFrame(rows, columns=COLUMNS)
