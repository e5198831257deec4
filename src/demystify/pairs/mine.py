"""The `mine_pairs` stage: positive pairs from the frames manifest, one video per worker.

Sources (`pairs.source`):
- `frames`: two frames of a video, `gap` apart, whole frames as the regions (the paper's
  "frame temporal invariance");
- `tracker`: a label-free proposal in frame a tracked to frame b (the "region tracker");
- `annotations`: the ground-truth target of GOT-10k / TrackingNet style annotations.
Nothing here crashes on a bad video: every lost pair is counted by reason in the metrics.
"""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from demystify import machine
from demystify.core.config import PairsParams
from demystify.core.frames_store import FramesError, FrameStore, decode_bgr, read_manifest
from demystify.core.io import worker_context, write_json, write_parquet
from demystify.pairs import ground_truth
from demystify.pairs.boxes import iou, outside_share
from demystify.pairs.grid import draw_grid
from demystify.pairs.proposals import (
    MOTION_STEP,
    Proposal,
    background,
    motion_proposals,
    saliency_proposals,
)
from demystify.pairs.sampling import sample_pairs, video_rng
from demystify.pairs.tracking import track_checked

BOX_COLUMNS = ["a_x", "a_y", "a_w", "a_h", "b_x", "b_y", "b_w", "b_h"]
COLUMNS = [
    "video",
    "frame_a",
    "frame_b",
    "gap",
    *BOX_COLUMNS,
    "source",
    "score",
    "iou_gt",
    "track",
    "view_change_deg",
    "scale_change",
    "path_a",
    "path_b",
]
MAX_CANDIDATES = 5  # proposals tracked per anchor frame, strongest first
FLOAT_COLUMNS = [*BOX_COLUMNS, "score", "iou_gt", "view_change_deg", "scale_change"]
# Decimals kept of every float written: trigonometry and SIMD reductions differ in their last bits
# between CPUs (numpy's AVX-512 sin/cos/arccos), and the manifest and pairs.png are in dvc.lock
DECIMALS = 6
REASONS = (
    "too_short",
    "no_proposals",
    "lost",
    "low_confidence",
    "left_frame",
    "scale_change",
    "inconsistent",
    "absent",
)


class PairsError(RuntimeError):
    """No pair at all could be mined; the message says why, by reason."""


@dataclass
class VideoResult:
    rows: list[dict]
    rejected: Counter
    proposals: int
    tracking_iou: list[float] = field(default_factory=list)


class Frames:
    """One video's frames, decoded on first use (a long video never sits whole in memory)."""

    def __init__(self, root: Path, paths: list[str]):
        self.root, self.paths, self._cache = root, paths, {}
        self.store = FrameStore(root)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            try:
                img = decode_bgr(self.store.read(self.paths[i]))
            except FramesError:
                img = None
            if img is None:
                raise OSError(f"cannot read frame {self.root / self.paths[i]}")
            self._cache[i] = img
        return self._cache[i]

    def span(self, a: int, b: int) -> list[np.ndarray]:
        return [self[i] for i in range(a, b + 1)]


def _proposals(frames: Frames, i: int, bg: np.ndarray | None, p: PairsParams) -> list[Proposal]:
    if p.proposals == "motion":
        before = frames[i - MOTION_STEP] if i >= MOTION_STEP else None
        after = frames[i + MOTION_STEP] if i + MOTION_STEP < len(frames) else None
        return motion_proposals(
            frames[i], bg, p.motion_threshold, p.min_area, p.max_area, before, after
        )
    return saliency_proposals(frames[i], p.min_area, p.max_area)


def _geometry_reason(
    box_a: np.ndarray, box_b: np.ndarray, width: int, height: int, p: PairsParams
) -> str | None:
    if outside_share(box_b, width, height) > p.max_outside:
        return "left_frame"
    ratio = (box_b[2] * box_b[3]) / max(box_a[2] * box_a[3], 1e-9)
    if not 1 / p.max_scale_change <= ratio <= p.max_scale_change:
        return "scale_change"
    return None


def _follow(box_a: np.ndarray, gt_a: np.ndarray, gt_b: np.ndarray) -> np.ndarray:
    """Where box a should be in frame b if it moved and scaled with its true object."""
    sx, sy = gt_b[2] / gt_a[2], gt_b[3] / gt_a[3]
    return np.array(
        [
            gt_b[0] + (box_a[0] - gt_a[0]) * sx,
            gt_b[1] + (box_a[1] - gt_a[1]) * sy,
            box_a[2] * sx,
            box_a[3] * sy,
        ]
    )


def _iou_gt(
    tracks: pd.DataFrame | None,
    a: int,
    b: int,
    box_a: np.ndarray,
    box_b: np.ndarray,
    match_iou: float,
) -> tuple[float, int, float]:
    """(iou_gt, track, tracking IoU). iou_gt: IoU of box b with the true box, in frame b, of the
    object that box a covers in frame a (its best match, if at least `match_iou`; else 0).
    Tracking IoU: IoU of box b with box a carried along by that object's true motion, which
    separates the tracker's error from the proposal's."""
    nan = float("nan")
    if tracks is None or tracks.empty:
        return nan, -1, nan
    ids_a, gt_a = ground_truth.boxes_at(tracks, a)
    if len(ids_a) == 0:
        return 0.0, -1, nan
    overlaps = iou(box_a[None], gt_a)
    best = int(overlaps.argmax())
    if overlaps[best] < match_iou:
        return 0.0, -1, nan
    track = int(ids_a[best])
    ids_b, gt_b = ground_truth.boxes_at(tracks, b)
    hit = np.flatnonzero(ids_b == track)
    if not len(hit):
        return 0.0, track, nan
    true_b = gt_b[hit[0]]
    return float(iou(box_b, true_b)), track, float(iou(box_b, _follow(box_a, gt_a[best], true_b)))


@dataclass(frozen=True)
class _Video:
    """One video being mined: its manifest rows (frame order), frame size and ground truth."""

    name: str
    frames_df: pd.DataFrame
    tracks: pd.DataFrame
    width: int
    height: int

    @classmethod
    def of(cls, frames_df: pd.DataFrame, tracks: pd.DataFrame) -> _Video:
        width, height = int(frames_df["width"].iloc[0]), int(frames_df["height"].iloc[0])
        return cls(str(frames_df["video"].iloc[0]), frames_df, tracks, width, height)


@dataclass(frozen=True)
class _Pair:
    """One mined pair before it is a row: frames a and b, a box in each, and how it was found."""

    a: int
    b: int
    box_a: np.ndarray
    box_b: np.ndarray
    source: str
    score: float
    iou_gt: float
    track: int
    subject: int | None = None  # the object whose view and scale change it shows; None: `track`


def _row(video: _Video, pair: _Pair) -> dict:
    """One pair; with the ground truth's view and scale change of the object it shows (`subject`,
    by default its matched `track`)."""
    paths = video.frames_df["path"].to_numpy()
    a, b = pair.a, pair.b
    subject = pair.track if pair.subject is None else pair.subject
    boxes = [*map(float, pair.box_a), *map(float, pair.box_b)]
    return {
        "video": video.name,
        "frame_a": a,
        "frame_b": b,
        "gap": b - a,
        **dict(zip(BOX_COLUMNS, boxes, strict=True)),
        "source": pair.source,
        "score": float(pair.score),
        "iou_gt": pair.iou_gt,
        "track": pair.track,
        "view_change_deg": ground_truth.view_change_deg(video.tracks, subject, a, b),
        "scale_change": ground_truth.scale_change(video.tracks, subject, a, b),
        "path_a": paths[a],
        "path_b": paths[b],
    }


def _track_proposal(
    video: _Video,
    frames: Frames,
    pair: tuple[int, int],
    prop: Proposal,
    detections: list[Proposal],
    p: PairsParams,
) -> str | tuple:
    """(proposal, box b, quality, confidence) for a kept region, or the reason it was rejected."""
    a, b = pair
    tracked = track_checked(frames.span(a, b), prop.box, p.tracker)
    if tracked.box is None:
        return "lost"
    if tracked.confidence < p.min_confidence:
        return "low_confidence"
    reason = _geometry_reason(prop.box, tracked.box, video.width, video.height, p)
    if reason is not None:
        return reason
    if p.snap_iou <= 0:
        return prop, tracked.box, tracked.confidence, tracked.confidence
    overlaps = (
        iou(tracked.box[None], np.stack([d.box for d in detections])) if detections else np.zeros(0)
    )
    if len(overlaps) == 0 or overlaps.max() < p.snap_iou:
        return "inconsistent"
    best = int(overlaps.argmax())
    return (
        prop,
        detections[best].box,
        tracked.confidence * float(overlaps[best]),
        tracked.confidence,
    )


def mine_video(
    frames_df: pd.DataFrame, frames_root: Path, videos_root: Path | None, p: PairsParams
) -> VideoResult:
    """Pairs of one video (its manifest rows, in frame order)."""
    frames_df = _in_frame_order(frames_df)
    name = str(frames_df["video"].iloc[0])
    pairs = sample_pairs(
        len(frames_df), p.pairs_per_video, p.min_gap, p.max_gap, video_rng(p.seed, name)
    )
    if not pairs:
        return VideoResult([], Counter(too_short=1), 0)
    video = _Video.of(frames_df, ground_truth.load_tracks(frames_df, videos_root))
    if p.source == "frames":
        return _frame_pairs(video, pairs)
    if p.source == "annotations":
        return _annotated_pairs(video, pairs)
    return _tracked_pairs(video, Frames(frames_root, list(frames_df["path"])), pairs, p)


def _in_frame_order(frames_df: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by frame; frame indices other than 0..n-1 are a ValueError."""
    frames_df = frames_df.sort_values("frame").reset_index(drop=True)
    if not np.array_equal(frames_df["frame"].to_numpy(), np.arange(len(frames_df))):
        video = str(frames_df["video"].iloc[0])
        raise ValueError(f"{video}: frame indices are not 0..{len(frames_df) - 1}")
    return frames_df


def _frame_pairs(video: _Video, pairs: list[tuple[int, int]]) -> VideoResult:
    """Whole frames as the regions; the change they show is that of the video's target."""
    full = np.array([0.0, 0.0, video.width, video.height])
    nan = float("nan")
    rows = [
        _row(video, _Pair(a, b, full, full, "frames", 1.0, nan, -1, subject=0)) for a, b in pairs
    ]
    return VideoResult(rows, Counter(), 0)


def _annotated_pairs(video: _Video, pairs: list[tuple[int, int]]) -> VideoResult:
    """The ground-truth target's box in both frames; a pair where it is absent is rejected."""
    result = VideoResult([], Counter(), 0)
    target = video.tracks[video.tracks["track"] == 0]
    for a, b in pairs:
        _, box_a = ground_truth.boxes_at(target, a)
        _, box_b = ground_truth.boxes_at(target, b)
        if len(box_a) == 0 or len(box_b) == 0:
            result.rejected["absent"] += 1
            continue
        result.rows.append(_row(video, _Pair(a, b, box_a[0], box_b[0], "annotations", 1.0, 1.0, 0)))
    return result


def _tracked_pairs(
    video: _Video, frames: Frames, pairs: list[tuple[int, int]], p: PairsParams
) -> VideoResult:
    """Label-free proposals in frame a tracked to frame b: the `regions_per_frame` most
    consistent of each anchor kept, each scored against the ground truth when there is one."""
    result = VideoResult([], Counter(), 0)
    bg = background(frames) if p.proposals == "motion" else None
    for a, b in pairs:
        proposals = _proposals(frames, a, bg, p)
        result.proposals += len(proposals)
        if not proposals:
            result.rejected["no_proposals"] += 1
            continue
        detections = _proposals(frames, b, bg, p) if p.snap_iou > 0 else []
        candidates = []
        for prop in proposals[:MAX_CANDIDATES]:
            outcome = _track_proposal(video, frames, (a, b), prop, detections, p)
            if isinstance(outcome, str):
                result.rejected[outcome] += 1
            else:
                candidates.append(outcome)
        # The most consistent regions first: merged or partial blobs agree less with themselves.
        candidates.sort(key=lambda c: -c[2])
        for prop, box_b, _quality, confidence in candidates[: p.regions_per_frame]:
            gt, track, tracking = _iou_gt(video.tracks, a, b, prop.box, box_b, p.match_iou)
            pair = _Pair(a, b, prop.box, box_b, "tracker", confidence, gt, track)
            result.rows.append(_row(video, pair))
            result.tracking_iou.append(tracking)
    return result


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one video per core already


def _mine_one(args) -> tuple[str, VideoResult | None, str | None]:
    frames_df, frames_root, videos_root, p = args
    video = str(frames_df["video"].iloc[0])
    try:
        return video, mine_video(frames_df, frames_root, videos_root, p), None
    except (OSError, ValueError, cv2.error) as exc:
        return video, None, f"{type(exc).__name__}: {exc}"


def mine_all(
    manifest: pd.DataFrame,
    frames_root: str | Path,
    videos_root: str | Path | None,
    p: PairsParams,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[pd.DataFrame, dict]:
    """All pairs (sorted by video, frame_a) and the metrics dict; `workers` processes (None:
    machine.yaml's pairs.workers)."""
    frames_root = Path(frames_root)
    videos_root = Path(videos_root) if videos_root else None
    jobs = [(g, frames_root, videos_root, p) for _, g in manifest.groupby("video", sort=True)]
    workers = min(workers or machine.load().pairs_workers, max(len(jobs), 1))
    results, failures = _run_jobs(jobs, workers, progress)
    pairs = _pairs_table(results)
    return pairs, _metrics(pairs, results, failures, p, len(jobs))


def _run_jobs(
    jobs: list[tuple], workers: int, progress: bool
) -> tuple[dict[str, VideoResult], dict[str, str]]:
    """Mine every video (`workers` processes): (results by video, failures by video)."""
    results: dict[str, VideoResult] = {}
    failures: dict[str, str] = {}
    bar = tqdm(
        total=len(jobs),
        desc="mine_pairs",
        unit="video",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        if workers <= 1:
            outcomes = map(_mine_one, jobs)
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers, initializer=_worker_init, mp_context=worker_context()
            )
            outcomes = pool.map(_mine_one, jobs)
        for video, res, error in outcomes:
            bar.update()
            if error is not None:
                failures[video] = error
            else:
                results[video] = res
        if workers > 1:
            pool.shutdown()
    return results, failures


def _pairs_table(results: dict[str, VideoResult]) -> pd.DataFrame:
    """Every video's rows, by video, as the typed, rounded pairs table."""
    rows = [r for v in sorted(results) for r in results[v].rows]
    pairs = pd.DataFrame(rows, columns=COLUMNS)
    pairs = pairs.astype(
        {
            "frame_a": "int64",
            "frame_b": "int64",
            "gap": "int64",
            "track": "int64",
            "score": "float64",
            "iou_gt": "float64",
            "view_change_deg": "float64",
            "scale_change": "float64",
            **dict.fromkeys(BOX_COLUMNS, "float64"),
        }
    )
    # the same bytes on every x86-64 CPU
    pairs[FLOAT_COLUMNS] = pairs[FLOAT_COLUMNS].round(DECIMALS)
    return pairs


def _metrics(
    pairs: pd.DataFrame,
    results: dict[str, VideoResult],
    failures: dict[str, str],
    p: PairsParams,
    videos: int,
) -> dict:
    rejected = Counter()
    for res in results.values():
        rejected.update(res.rejected)
    scored = pairs["iou_gt"].dropna()
    metrics = {
        "source": p.source,
        "videos": videos,
        "videos_with_pairs": int(pairs["video"].nunique()),
        "videos_failed": len(failures),
        "pairs": len(pairs),
        "pairs_per_video": round(len(pairs) / max(videos, 1), 3),
        "mean_gap": round(float(pairs["gap"].mean()), 3) if len(pairs) else None,
        "mean_score": round(float(pairs["score"].mean()), 4) if len(pairs) else None,
        "proposals": sum(r.proposals for r in results.values()),
        "scored_pairs": len(scored),
        "mean_iou": round(float(scored.mean()), 4) if len(scored) else None,
        "share_iou_050": round(float((scored >= 0.5).mean()), 4) if len(scored) else None,
        "unmatched_pairs": int((pairs["track"] < 0).sum()) if p.source == "tracker" else 0,
    }
    metrics.update(_change_metrics(pairs))
    tracking = np.array([t for r in results.values() for t in r.tracking_iou], float).round(
        DECIMALS
    )
    tracking = tracking[np.isfinite(tracking)]
    metrics["mean_tracking_iou"] = round(float(tracking.mean()), 4) if len(tracking) else None
    metrics.update({f"rejected_{reason}": int(rejected.get(reason, 0)) for reason in REASONS})
    if failures:
        metrics["failures"] = dict(sorted(failures.items()))
    return metrics


def _change_metrics(pairs: pd.DataFrame) -> dict:
    """How new a view of the object each pair shows, and how much bigger or smaller the object got
    (factor >= 1): quantiles over the pairs."""
    metrics = {}
    view = pairs["view_change_deg"].dropna()
    for name, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):
        metrics[f"view_change_deg_{name}"] = (
            round(float(view.quantile(q)), 2) if len(view) else None
        )
    metrics["share_view_change_ge_20deg"] = (
        round(float((view >= 20).mean()), 4) if len(view) else None
    )
    scale = pairs["scale_change"].dropna()
    for name, q in (("median", 0.5), ("p90", 0.9)):
        metrics[f"scale_change_{name}"] = round(float(scale.quantile(q)), 3) if len(scale) else None
    return metrics


def with_frame_hashes(pairs: pd.DataFrame, frames_root: Path) -> pd.DataFrame:
    """`md5_a`, `md5_b`: the content of both frames. Training on the pairs reads the frames, so the
    manifest must change when they do (a new JPEG quality can leave every box as it was)."""
    frames = pd.unique(pairs[["path_a", "path_b"]].to_numpy().ravel())
    store = FrameStore(frames_root)
    md5 = {path: store.md5(path) for path in frames}
    return pairs.assign(
        md5_a=pairs["path_a"].map(md5).astype(str), md5_b=pairs["path_b"].map(md5).astype(str)
    )


def run_stage(
    *,
    manifest_path: str | Path | None = None,
    frames_root: str | Path,
    videos_root: str | Path | None,
    out_pairs: str | Path,
    out_dir: str | Path,
    p: PairsParams,
    workers: int | None = None,
) -> dict:
    """Write pairs.parquet, metrics.json and the pairs.png grid; raise PairsError when no pair was mined
    (after writing the metrics, which say why; `workers`: as mine_all). The manifest: `manifest_path`, else every shard's."""
    if manifest_path is None:
        try:
            manifest = read_manifest(frames_root)
        except FramesError as exc:
            raise PairsError(str(exc)) from None
    else:
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise PairsError(
                f"{manifest_path}: frames manifest not found (run extract_frames first)"
            )
        manifest = pd.read_parquet(manifest_path)
    pairs, metrics = mine_all(manifest, frames_root, videos_root, p, workers=workers)
    pairs = with_frame_hashes(pairs, Path(frames_root))
    out_dir = Path(out_dir)
    write_parquet(out_pairs, pairs)
    write_json(out_dir / "metrics.json", metrics)
    draw_grid(pairs, Path(frames_root), out_dir / "pairs.png", p.grid_pairs)
    if pairs.empty:
        reasons = {k: v for k, v in metrics.items() if k.startswith("rejected_") and v}
        raise PairsError(
            f"no pair could be mined from {metrics['videos']} video(s) with source "
            f"{p.source!r}; rejected by reason: {reasons or 'none'}"
            + (f"; failed videos: {metrics['failures']}" if metrics.get("failures") else "")
        )
    return metrics
