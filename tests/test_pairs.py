"""mine_pairs: each source on tiny synthetic clips, determinism, bad input, scoring against truth."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from video_fixtures import mine_pairs

from demystify.core import config
from demystify.core.config import FramesParams
from demystify.core.frames_store import FrameStore
from demystify.data import trackingnet
from demystify.data.got10k import AnnotationError
from demystify.pairs import ground_truth
from demystify.pairs.boxes import iou, outside_share
from demystify.pairs.grid import caption_text
from demystify.pairs.mine import (
    COLUMNS,
    DECIMALS,
    FLOAT_COLUMNS,
    PairsError,
    _iou_gt,
    mine_all,
    mine_video,
)
from demystify.pairs.sampling import sample_pairs, video_rng
from demystify.video.extract import extract_all
from demystify.world.synthesize import World, write_videos

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params(smoke_params_dir):
    root = smoke_params_dir(
        "conf",
        "world.videos.count=3",
        "world.videos.frames=80",
        "world.videos.width=160",
        "world.videos.height=120",
        "frames.size=120",
    )
    return config.load("world", "frames", "pairs", path=root / "params.yaml")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, params):
    """Tiny synthetic clips, really encoded and decoded: (manifest, frames root, videos root)."""
    root = tmp_path_factory.mktemp("pairs")
    write_videos(World(params["world"]), root, progress=False)
    manifest, rejected = extract_all(
        root / "videos", root / "frames", params["frames"], progress=False, workers=1
    )
    assert rejected.empty
    return manifest, root / "frames", root / "videos"


def _with(p, **changes):
    return p.model_copy(update=changes)


# --- sampling ----------------------------------------------------------------------------------


def test_sampling_spreads_and_respects_gaps():
    rng = video_rng(0, "clip")
    pairs = sample_pairs(40, 8, 2, 5, rng)
    assert len(pairs) == 8
    assert all(2 <= b - a <= 5 and 0 <= a < b < 40 for a, b in pairs)
    anchors = [a for a, _ in pairs]
    assert anchors == sorted(anchors) and anchors[-1] - anchors[0] >= 25  # spread over the video
    assert pairs == sample_pairs(40, 8, 2, 5, video_rng(0, "clip"))  # determined by seed + name
    assert pairs != sample_pairs(40, 8, 2, 5, video_rng(1, "clip"))


def test_sampling_short_video():
    assert sample_pairs(2, 8, 2, 5, video_rng(0, "x")) == []  # shorter than the minimum gap
    assert sample_pairs(3, 8, 2, 5, video_rng(0, "x")) == [(0, 2)]


# --- each source -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["frames", "tracker", "annotations"])
def test_each_source(clips, params, source):
    manifest, frames_root, videos_root = clips
    p = _with(params["pairs"], source=source)
    pairs, metrics = mine_all(manifest, frames_root, videos_root, p, progress=False, workers=1)
    assert list(pairs.columns) == COLUMNS
    assert len(pairs) > 0 and (pairs["source"] == source).all()
    assert pairs["gap"].between(p.min_gap, p.max_gap).all()
    assert (pairs["frame_b"] - pairs["frame_a"] == pairs["gap"]).all()
    assert pairs.groupby("video").size().max() <= p.pairs_per_video * p.regions_per_frame
    w, h = int(manifest["width"].iloc[0]), int(manifest["height"].iloc[0])
    for side in "ab":
        assert (pairs[f"{side}_w"] > 0).all() and (pairs[f"{side}_h"] > 0).all()
        assert (pairs[f"{side}_x"] >= 0).all() and (
            pairs[f"{side}_x"] + pairs[f"{side}_w"] <= w + 1e-6
        ).all()
        assert (pairs[f"{side}_y"] >= 0).all() and (
            pairs[f"{side}_y"] + pairs[f"{side}_h"] <= h + 1e-6
        ).all()
    assert pairs["score"].between(0, 1).all()
    assert all(FrameStore(frames_root).exists(path) for path in pairs["path_a"])
    assert metrics["pairs"] == len(pairs) and metrics["source"] == source
    # the world records every object's pose: each pair says how far the object turned between its
    # frames, and the default dynamics turn it by tens of degrees (what video positives add)
    view = pairs["view_change_deg"]
    if source in ("frames", "annotations"):  # the target's
        assert view.notna().all() and view.between(0, 180).all()
        assert (
            metrics["view_change_deg_median"] >= 15
            and metrics["view_change_deg_p10"] <= metrics["view_change_deg_p90"]
        )
        assert (pairs["scale_change"] >= 1).all() and 1 <= metrics[
            "scale_change_median"
        ] <= metrics["scale_change_p90"]
    if source == "frames":
        assert pairs["iou_gt"].isna().all()
        assert (pairs[["a_x", "a_y"]] == 0).all().all() and (pairs["a_w"] == w).all()
    elif source == "annotations":
        assert (pairs["iou_gt"] == 1.0).all()
    else:
        assert pairs["iou_gt"].between(0, 1).all()
        assert metrics["mean_iou"] is not None and metrics["mean_iou"] > 0.4


def test_parallel_and_serial_identical(clips, params):
    manifest, frames_root, videos_root = clips
    one, m1 = mine_all(
        manifest, frames_root, videos_root, params["pairs"], progress=False, workers=1
    )
    two, m2 = mine_all(
        manifest, frames_root, videos_root, params["pairs"], progress=False, workers=2
    )
    pd.testing.assert_frame_equal(one, two)
    assert m1 == m2


def test_run_stage_writes_outputs(clips, params, tmp_path):
    manifest, frames_root, videos_root = clips
    manifest.to_parquet(tmp_path / "manifest.parquet")
    metrics = mine_pairs(
        tmp_path / "manifest.parquet",
        frames_root,
        videos_root,
        params["pairs"],
        tmp_path / "results",
        workers=1,
    )
    assert len(pd.read_parquet(tmp_path / "results" / "pairs.parquet")) == metrics["pairs"]
    grid = cv2.imread(str(tmp_path / "results" / "pairs.png"))
    assert grid is not None and grid.shape[0] > 100
    assert (
        yaml.safe_load((tmp_path / "results" / "metrics.json").read_text())["pairs"]
        == metrics["pairs"]
    )


def test_floats_rounded_and_bytes_repeat(clips, params, tmp_path):
    """Every float the manifest holds is rounded to mine.DECIMALS (the CPU's last bits never reach
    dvc.lock), and two runs write the same bytes: manifest, grid and metrics."""
    manifest, frames_root, videos_root = clips
    manifest.to_parquet(tmp_path / "manifest.parquet")
    outputs = []
    for run in ("one", "two"):
        mine_pairs(
            tmp_path / "manifest.parquet",
            frames_root,
            videos_root,
            params["pairs"],
            tmp_path / run,
            workers=1,
        )
        outputs.append(
            {
                f: (tmp_path / run / f).read_bytes()
                for f in ("pairs.parquet", "pairs.png", "metrics.json")
            }
        )
    assert outputs[0] == outputs[1]
    pairs = pd.read_parquet(tmp_path / "one" / "pairs.parquet")
    assert sorted(pairs.select_dtypes("float").columns) == sorted(FLOAT_COLUMNS)
    for column in FLOAT_COLUMNS:
        values = pairs[column].dropna()
        assert all(v == round(v, DECIMALS) for v in values), column
    # nothing lost: the scored columns are still there, in range, and not all whole numbers
    assert (
        len(pairs) > 0
        and pairs["view_change_deg"].notna().all()
        and pairs["scale_change"].ge(1).all()
    )
    assert pairs["iou_gt"].between(0, 1).all() and (pairs["score"] % 1 != 0).any()


def test_captions_do_not_depend_on_the_last_bits():
    """A value a CPU computes a few ulps either side of a rounding edge prints the same caption."""
    row = dict(video="v", frame_a=1, frame_b=4, iou_gt=0.5)
    low = pd.Series({**row, "score": 0.8949999999999999, "view_change_deg": 22.499999999999996})
    high = pd.Series({**row, "score": 0.8950000000000001, "view_change_deg": 22.500000000000004})
    assert caption_text(low) == caption_text(high) == "v 1->4 s 0.90 iou 0.50 view 22deg"
    assert (
        caption_text(
            pd.Series(
                {**row, "score": 1.0, "iou_gt": float("nan"), "view_change_deg": float("nan")}
            )
        )
        == "v 1->4 s 1.00"
    )


# --- scoring against ground truth --------------------------------------------------------------


def test_wrong_box_lowers_quality(clips, params):
    manifest, frames_root, videos_root = clips
    video = manifest["video"].iloc[0]
    tracks = ground_truth.load_tracks(manifest[manifest.video == video], videos_root)
    target = tracks[tracks.track == 0]
    a, b = int(target.frame.iloc[0]), int(target.frame.iloc[3])
    box_a = target[target.frame == a][["x", "y", "w", "h"]].to_numpy(float)[0]
    box_b = target[target.frame == b][["x", "y", "w", "h"]].to_numpy(float)[0]
    right, track, tracking = _iou_gt(tracks, a, b, box_a, box_b, 0.3)
    assert right == pytest.approx(1.0) and track == 0 and tracking == pytest.approx(1.0)
    shifted = box_b + np.array([box_b[2] * 0.6, 0, 0, 0])
    wrong, _, wrong_tracking = _iou_gt(tracks, a, b, box_a, shifted, 0.3)
    assert wrong < 0.5 and wrong_tracking < 0.5


def test_ground_truth_follows_the_extracted_frames(clips):
    """objects.csv (source frames, source size) lands on the extracted frames' grid and size."""
    manifest, _, videos_root = clips
    frames = manifest[manifest.video == manifest.video.iloc[0]]
    tracks = ground_truth.load_tracks(frames, videos_root)
    target = tracks[tracks.track == 0].set_index("frame")
    carried = frames.set_index("frame")[
        ["x", "y", "w", "h"]
    ]  # carried by extract_frames from GOT-10k files
    both = carried.join(target[["x", "y", "w", "h"]].add_suffix("_gt")).dropna()
    both = both[both.w > 0]
    assert len(both) > 0
    np.testing.assert_allclose(
        both[["x", "y", "w", "h"]].to_numpy(),
        both[["x_gt", "y_gt", "w_gt", "h_gt"]].to_numpy(),
        atol=1e-6,
    )


# --- bad input ---------------------------------------------------------------------------------


def _write_clip(root: Path, name: str, frames: list[np.ndarray]) -> pd.DataFrame:
    (root / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(frames):
        rel = f"{name}/{i:06d}.jpg"
        cv2.imwrite(str(root / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
        rows.append(
            {
                "video": name,
                "frame": i,
                "time_s": i / 5,
                "path": rel,
                "width": img.shape[1],
                "height": img.shape[0],
                "x": np.nan,
                "y": np.nan,
                "w": np.nan,
                "h": np.nan,
            }
        )
    return pd.DataFrame(rows)


def _square_clip(
    positions: list[tuple[int, int]], size: int = 14, shape=(48, 64)
) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 90, (*shape, 3), dtype=np.uint8)
    frames = []
    for x, y in positions:
        img = bg.copy()
        cv2.rectangle(img, (x, y), (x + size - 1, y + size - 1), (20, 220, 240), -1)
        cv2.rectangle(img, (x + 3, y + 3), (x + 7, y + 7), (200, 30, 30), -1)  # texture to track
        frames.append(img)
    return frames


def test_static_video_has_nothing_to_propose(tmp_path, params):
    still = _square_clip([(20, 15)] * 12)
    manifest = _write_clip(tmp_path, "still", still)
    res = mine_video(manifest, tmp_path, None, params["pairs"])
    assert res.rows == [] and res.rejected["no_proposals"] > 0


def test_too_short_is_counted(tmp_path, params):
    manifest = _write_clip(tmp_path, "short", _square_clip([(5, 5), (8, 5)]))
    res = mine_video(manifest, tmp_path, None, _with(params["pairs"], min_gap=2, max_gap=3))
    assert res.rows == [] and dict(res.rejected) == {"too_short": 1}


def test_leaving_the_frame_is_counted(tmp_path, params):
    clip = _square_clip([(10 + 9 * i, 15) for i in range(12)])  # runs off the right edge
    manifest = _write_clip(tmp_path, "exit", clip)
    p = _with(
        params["pairs"], min_gap=3, max_gap=3, pairs_per_video=4, snap_iou=0.0, max_outside=0.1
    )
    res = mine_video(manifest, tmp_path, None, p)
    assert sum(res.rejected[r] for r in ("left_frame", "lost", "low_confidence")) > 0
    for row in res.rows:
        assert (
            outside_share(np.array([row["b_x"], row["b_y"], row["b_w"], row["b_h"]]), 64, 48) <= 0.1
        )


def test_lost_target_is_counted(tmp_path, params):
    moving = _square_clip([(10 + 2 * i, 15) for i in range(12)])
    noise = np.random.default_rng(1)
    for i in range(4, 12):  # the scene turns to noise: the tracker cannot follow anything
        moving[i] = noise.integers(0, 255, moving[i].shape, dtype=np.uint8)
    manifest = _write_clip(tmp_path, "lost", moving)
    p = _with(params["pairs"], min_gap=4, max_gap=4, pairs_per_video=1, snap_iou=0.0)
    res = mine_video(manifest, tmp_path, None, p)
    assert res.rejected["lost"] + res.rejected["low_confidence"] + res.rejected["scale_change"] >= 1


def test_stage_fails_clearly_only_without_any_pair(tmp_path, params):
    manifest = pd.concat(
        [
            _write_clip(tmp_path, "still", _square_clip([(20, 15)] * 12)),
            _write_clip(tmp_path, "short", _square_clip([(5, 5), (8, 5)])),
        ]
    )
    manifest.to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(PairsError, match="no pair could be mined.*rejected_no_proposals"):
        mine_pairs(
            tmp_path / "manifest.parquet",
            tmp_path,
            None,
            params["pairs"],
            tmp_path / "out",
            workers=1,
        )
    metrics = yaml.safe_load((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["rejected_too_short"] == 1 and metrics["rejected_no_proposals"] > 0


def test_missing_manifest(tmp_path, params):
    with pytest.raises(PairsError, match="frames manifest not found"):
        mine_pairs(tmp_path / "nope.parquet", tmp_path, None, params["pairs"], tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("min_gap", 6, "min_gap 6 > max_gap 5"),
        ("min_confidence", 1.5, "pairs.min_confidence = 1.5"),
        ("snap_iou", -0.1, "pairs.snap_iou = -0.1"),
        ("source", "optical", "pairs.source = 'optical'"),
        ("tracker", "goturn", "pairs.tracker = 'goturn'"),
    ],
)
def test_invalid_params_rejected(key, value, expected):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = copy.deepcopy(data)
    bad["pairs"][key] = value
    with pytest.raises(config.ConfigError, match=expected):
        config.validate(bad, "pairs")


# --- readers -----------------------------------------------------------------------------------


def test_trackingnet_reader(tmp_path):
    chunk = tmp_path / "TRAIN_0"
    (chunk / "anno").mkdir(parents=True)
    (chunk / "anno" / "clip.txt").write_text("1,2,30,40\n0,0,0,0\n5.5,6,20,10\n")
    ann = trackingnet.read_annotations(chunk, "clip")
    assert ann[["x", "y", "w", "h"]].iloc[2].tolist() == [5.5, 6, 20, 10]
    assert ann["absence"].tolist() == [0, 1, 0]
    (chunk / "anno" / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:1"):
        trackingnet.read_annotations(chunk, "bad")


def test_trackingnet_boxes_carried_by_extraction(tmp_path, clips):
    """A TrackingNet box file beside a video's folder is read by extract_frames as its ground truth."""
    _, _, videos_root = clips
    chunk = tmp_path / "TRAIN_0"
    (chunk / "videos").mkdir(parents=True)
    (chunk / "anno").mkdir()
    src = sorted(videos_root.glob("*.mp4"))[0]
    (chunk / "videos" / "clip.mp4").write_bytes(src.read_bytes())
    (chunk / "anno" / "clip.txt").write_text("".join(f"{i},{i},10,12\n" for i in range(80)))
    manifest, rejected = extract_all(
        chunk / "videos",
        tmp_path / "frames",
        FramesParams(fps=5.0, size=120, jpeg_quality=3, max_rejected=0.0, decode_timeout_s=60.0),
        progress=False,
        workers=1,
    )
    assert rejected.empty and manifest["x"].notna().all()
    assert manifest["x"].iloc[1] == pytest.approx(
        2.0
    )  # frame 1 at 0.2 s = source row 2 (10 fps), same size


def test_view_change_is_the_angle_between_viewing_directions():
    tracks = pd.DataFrame(
        {
            "video": "v",
            "frame": [0, 1, 0, 1],
            "track": [0, 0, 1, 1],
            "x": 0.0,
            "y": 0.0,
            "w": 1.0,
            "h": 1.0,
            "azimuth_deg": [10.0, 100.0, 0.0, 0.0],
            "elevation_deg": [0.0, 0.0, 0.0, 90.0],
        }
    )
    assert ground_truth.view_change_deg(tracks, 0, 0, 1) == pytest.approx(90.0)
    assert ground_truth.view_change_deg(tracks, 1, 0, 1) == pytest.approx(
        90.0
    )  # straight from above
    assert ground_truth.view_change_deg(tracks, 0, 0, 0) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(ground_truth.view_change_deg(tracks, -1, 0, 1))  # no matched object
    assert np.isnan(
        ground_truth.view_change_deg(tracks.drop(columns=["azimuth_deg"]), 0, 0, 1)
    )  # real data: no poses


def test_scale_change_is_a_factor_of_at_least_one_either_way():
    tracks = pd.DataFrame(
        {
            "video": "v",
            "frame": [0, 1],
            "track": 0,
            "x": 0.0,
            "y": 0.0,
            "w": [10.0, 20.0],
            "h": [10.0, 5.0 * 4],
        }
    )
    assert ground_truth.scale_change(tracks, 0, 0, 1) == pytest.approx(
        2.0
    )  # sides doubled: area x4
    assert ground_truth.scale_change(tracks, 0, 1, 0) == pytest.approx(
        2.0
    )  # shrinking reads the same
    assert np.isnan(ground_truth.scale_change(tracks, 0, 0, 5)) and np.isnan(
        ground_truth.scale_change(tracks, -1, 0, 1)
    )


def test_iou_basics():
    assert iou(np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10])) == 1.0
    assert iou(np.array([0, 0, 10, 10]), np.array([5, 0, 10, 10])) == pytest.approx(50 / 150)
    assert iou(np.array([0, 0, 10, 10]), np.array([20, 20, 5, 5])) == 0.0
