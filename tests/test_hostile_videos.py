"""Hostile inputs to extract_frames and mine_pairs (issue 17): every bad file is named with a reason
(rejected.csv or the stage's error), every good file is still processed, nothing crashes.

Real videos: the session clips of video_fixtures (64x48, 2 s at 25 fps) and a synthetic world video
with its GOT-10k ground truth.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import video_fixtures
from video_fixtures import mine_pairs, stored_frames

from demystify.checks import suites
from demystify.core import config
from demystify.video import extract as extract_module
from demystify.video.extract import run_stage as extract_stage

ROOT = Path(__file__).resolve().parents[1]
clips = video_fixtures.clips  # the session fixture, shared with other modules


frames_params, put = video_fixtures.frames_params, video_fixtures.put


def extract(root: Path, out: Path, workers: int = 1, **kw) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run the stage; (manifest as written, {file: reason} as written)."""
    extract_stage(
        videos_root=root,
        out_root=out,
        metrics_path=out.parent / "frames.json",
        params=frames_params(**kw),
        workers=workers,
    )
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    return pd.read_parquet(out / "manifest.parquet"), dict(
        zip(rejected["file"], rejected["reason"], strict=True)
    )


def assert_kept(manifest: pd.DataFrame, out: Path, videos: dict[str, int]) -> None:
    """Exactly these videos, with these frame counts, and every frame of theirs on disk."""
    assert manifest.groupby("video").size().to_dict() == videos
    assert list(stored_frames(out)) == manifest["path"].tolist()


@pytest.fixture(scope="module")
def world(smoke_params_dir):
    """One smoke-world video (20 frames at 10 fps, 64x48) with its GOT-10k folder, and pairs params."""
    d = smoke_params_dir(
        "hostile_world",
        "world.videos.count=1",
        "pairs.source=annotations",
        "pairs.pairs_per_video=8",
    )
    p = config.load("world", "pairs", path=d / "params.yaml")
    from demystify.world.synthesize import World, write_videos

    write_videos(World(p["world"]), d, progress=False)
    (video,) = sorted((d / "videos").glob("*.mp4"))
    return video, video.with_suffix(""), p["pairs"]


def got10k_copy(
    world, root: Path, name: str, groundtruth: str | None = None, meta: str | None = None
) -> Path:
    """The world's video as `root/name.mp4` with its sequence folder (ground truth optionally replaced),
    without objects.csv, so that mining reads the boxes from the frames manifest."""
    video, seq, _ = world
    put(video, root / f"{name}.mp4")
    shutil.copytree(seq, root / name, ignore=shutil.ignore_patterns("objects.csv"))
    if groundtruth is not None:
        (root / name / "groundtruth.txt").write_text(groundtruth)
        for label in ("cover.label", "absence.label"):
            (root / name / label).unlink()
    if meta is not None:
        (root / name / "meta_info.ini").write_text(meta)
    return root / f"{name}.mp4"


# --- 1, 2, 3: ground truth ------------------------------------------------------------------------


def test_bad_boxes_are_frames_without_a_box_and_mining_skips_them(world, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    rows = (world[1] / "groundtruth.txt").read_text().splitlines()
    assert len(rows) == 20  # 10 frames at 5 fps: frame i shows row 2i
    got10k_copy(world, root, "nan_tail", "\n".join(rows[:5] + ["nan,nan,nan,nan"] * 15) + "\n")
    got10k_copy(world, root, "inf", "\n".join(["1,2,inf,8", *rows[1:]]) + "\n")
    odd = [
        "0,0,0,0",
        "1,2,-3,4",
        "NaN,2,3,4",
        "1e400,2,3,4",
    ]  # empty, negative, NaN, overflowing to inf
    got10k_copy(world, root, "odd", "\n".join(odd + rows[4:]) + "\n")
    got10k_copy(world, root, "first_only", rows[0] + "\n")  # test split: frame 0 only
    got10k_copy(world, root, "good")
    manifest, rejected = extract(root, out, size=48)
    assert rejected == {}
    assert_kept(manifest, out, dict.fromkeys(["first_only", "good", "inf", "nan_tail", "odd"], 10))
    box = manifest.set_index(["video", "frame"])[["x", "y", "w", "h"]]
    has = box.notna().all(axis=1)
    assert (has == box.notna().any(axis=1)).all()  # all four values or none
    assert np.isfinite(box[has].to_numpy()).all() and (box[has][["w", "h"]] > 0).all().all()
    assert has["good"].all()
    assert has["nan_tail"].tolist() == [True] * 3 + [False] * 7  # rows 0, 2, 4
    assert has["inf"].tolist() == [False] + [True] * 9
    assert has["odd"].tolist() == [False, False] + [True] * 8  # rows 0 and 2 are bad
    assert has["first_only"].tolist() == [True] + [False] * 9  # not the first box repeated
    first = manifest[manifest.video == "first_only"]
    assert first[["cover", "absence", "track"]].iloc[1:].isna().all().all()  # not annotated at all
    np.testing.assert_allclose(box.loc["first_only"].iloc[0], box.loc["good"].iloc[0])

    _, _, pairs_params = world
    metrics = mine_pairs(out / "manifest.parquet", out, root, pairs_params, tmp_path / "pairs")
    pairs = pd.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    assert "failures" not in metrics and metrics["rejected_absent"] > 0
    boxes = pairs[["a_x", "a_y", "a_w", "a_h", "b_x", "b_y", "b_w", "b_h"]].to_numpy()
    assert np.isfinite(boxes).all() and (pairs[["a_w", "a_h", "b_w", "b_h"]] > 0).all().all()
    for video, frames in [
        ("nan_tail", {0, 1, 2}),
        ("inf", set(range(1, 10))),
        ("odd", set(range(2, 10))),
    ]:
        mine = pairs[pairs.video == video]
        assert set(mine["frame_a"]) | set(mine["frame_b"]) <= frames, video
    assert "first_only" not in set(pairs["video"])  # one box: no pair
    assert set(pairs["video"]) >= {"good", "inf", "odd"}
    assert (tmp_path / "pairs" / "pairs.png").stat().st_size > 0


def test_a_grid_of_boxless_pairs_is_drawn_without_them(world, tmp_path: Path):
    """A pairs table that does carry a NaN or inf box (not from this pipeline) still draws."""
    from demystify.pairs.grid import draw_grid

    root, out = tmp_path / "videos", tmp_path / "frames"
    got10k_copy(world, root, "good")
    manifest, _ = extract(root, out, size=48)
    _, _, pairs_params = world
    mine_pairs(out / "manifest.parquet", out, root, pairs_params, tmp_path / "pairs")
    pairs = pd.read_parquet(tmp_path / "pairs" / "pairs.parquet")
    pairs.loc[0, "a_x"], pairs.loc[1, "b_w"], pairs.loc[2, "a_w"] = np.nan, np.inf, 1e30
    draw_grid(pairs, out, tmp_path / "grid.png", 8)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_unreadable_ground_truth_rejects_only_its_video(world, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    got10k_copy(world, root, "columns", "1,2,3\n")
    latin = got10k_copy(world, root, "latin1")
    (latin.with_suffix("") / "groundtruth.txt").write_bytes("1,2,3,4 \xe9\n".encode("latin-1"))
    got10k_copy(world, root, "fps_word", meta="[METAINFO]\nanno_fps: fast\n")
    got10k_copy(
        world, root, "fps_dots", meta="[METAINFO]\nanno_fps: 1.2.3\n"
    )  # matched '[\d.]+', then crashed
    got10k_copy(
        world, root, "fps_huge", meta="[METAINFO]\nanno_fps: " + "9" * 400 + "Hz\n"
    )  # float: inf
    got10k_copy(world, root, "good")
    manifest, rejected = extract(root, out, size=48)
    assert_kept(manifest, out, {"good": 10})
    assert sorted(rejected) == [
        "columns.mp4",
        "fps_dots.mp4",
        "fps_huge.mp4",
        "fps_word.mp4",
        "latin1.mp4",
    ]
    assert "columns/groundtruth.txt:1: expected 'x,y,w,h'" in rejected["columns.mp4"]
    assert "latin1/groundtruth.txt: not a text file" in rejected["latin1.mp4"]
    for name, value in [("fps_word", "'fast'"), ("fps_dots", "'1.2.3'"), ("fps_huge", "'999")]:
        assert f"{name}/meta_info.ini: anno_fps {value}" in rejected[f"{name}.mp4"]
    assert sorted(p.name for p in out.iterdir()) == ["good.zip", "manifest.parquet", "rejected.csv"]


# --- 4: the frames manifest suite -----------------------------------------------------------------


def test_frames_suite_requires_whole_finite_positive_boxes(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], root / "a.mp4")
    manifest, _ = extract(root, out)
    manifest[["x", "y", "w", "h"]] = [1.0, 2.0, 8.0, 6.0]
    manifest.loc[0, ["x", "y", "w", "h"]] = np.nan  # a frame without a box is fine
    p = frames_params()
    assert suites.frames_manifest(suites.Validator(), manifest, out, p).success
    bad = {
        "box_values": (1, "x", np.nan),
        "box_finite": (2, "w", np.inf),
        "w": (3, "w", 0.0),
        "h": (4, "h", -1.0),
    }
    for column, (row, key, value) in bad.items():
        broken = manifest.copy()
        broken.loc[row, key] = value
        outcome = suites.frames_manifest(
            suites.Validator(), broken, out, p
        )  # one suite per context
        assert [f.column for f in outcome.failures] == [column], (column, outcome.failures)
        assert "1 of 10 rows" in outcome.failures[0].observed


# --- 5, 6, 7: names and files ---------------------------------------------------------------------


def test_odd_names_decode(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    names = [
        "my%20clip.mp4",
        "100%/x.mp4",
        "%d%s%n.mp4",
        'quote\'s "double".mp4',
        "accent-été-ü.mp4",
        "-leading.mp4",
        "--.mp4",
        "space name.mp4",
        "x:y.mp4",
        "new\nline.mp4",
        "l" * 200 + ".mp4",
    ]
    for name in names:
        put(clips["good"], root / name)
    manifest, rejected = extract(root, out)
    assert rejected == {}
    assert_kept(manifest, out, {extract_module.video_id(root / n, root): 10 for n in names})


def test_colliding_frames_folders_keep_the_first(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    for name in [
        "clip.mp4",
        "clip/x.mp4",
        "clip/y/z.mp4",
        "dup.avi",
        "dup.mp4",
        "deep/a/b.mp4",
        "deep.mkv",
        "manifest.parquet.mp4",
        "rejected.csv.mkv",
        "..mp4",
        "...mp4",
        "sub/..mp4",
        "good.mp4",
    ]:
        put(clips["good"], root / name)
    manifest, rejected = extract(root, out, workers=2)
    # sorted order: 'clip.mp4' < 'clip/x.mp4', 'deep.mkv' < 'deep/a/b.mp4' ('.' sorts before '/')
    assert_kept(manifest, out, {"clip": 10, "deep": 10, "dup": 10, "good": 10})
    assert rejected == {
        "clip/x.mp4": "frames folder of clip/x.mp4 ('clip/x/') would collide with clip.mp4's; rename one",
        "clip/y/z.mp4": "frames folder of clip/y/z.mp4 ('clip/y/z/') would collide with clip.mp4's; rename one",
        "deep/a/b.mp4": "frames folder of deep/a/b.mp4 ('deep/a/b/') would collide with deep.mkv's; rename one",
        "dup.mp4": "frames folder of dup.mp4 ('dup/') would collide with dup.avi's; rename one",
        "manifest.parquet.mp4": "frames folder of manifest.parquet.mp4 would collide with the stage's own "
        "manifest.parquet; rename it",
        "rejected.csv.mkv": "frames folder of rejected.csv.mkv would collide with the stage's own rejected.csv; "
        "rename it",
        "..mp4": "its frames folder would be '.', not a folder of its own; rename it",
        "...mp4": "its frames folder would be '..', not a folder of its own; rename it",
        "sub/..mp4": "its frames folder would be 'sub/.', not a folder of its own; rename it",
    }
    assert sorted(f for f in stored_frames(out) if f.startswith("clip/")) == [
        f"clip/{i:06d}.jpg" for i in range(10)
    ]
    # A rerun (a stale output of every kind in place) changes nothing.
    again, rejected_again = extract(root, out, workers=2)
    pd.testing.assert_frame_equal(manifest, again)
    assert rejected_again == rejected


def test_a_video_added_under_a_kept_one_never_deletes_its_frames(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], root / "clip.mp4")
    extract(root, out)
    put(clips["portrait"], root / "clip" / "x.mkv")
    manifest, rejected = extract(root, out, workers=2)
    assert_kept(manifest, out, {"clip": 10})
    assert list(rejected) == ["clip/x.mkv"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_and_other_non_files_are_rejected_not_waited_on(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], root / "good.mp4")
    os.mkfifo(root / "pipe.mp4")  # opening it would block until a writer comes: forever
    (root / "to_pipe.mkv").symlink_to(root / "pipe.mp4")
    manifest, rejected = extract(root, out)
    assert_kept(manifest, out, {"good": 10})
    assert rejected == {
        "pipe.mp4": "not a regular file (a FIFO); only regular files are decoded",
        "to_pipe.mkv": "not a regular file (a FIFO); only regular files are decoded",
    }


def test_stuck_decode_times_out(clips, tmp_path: Path, monkeypatch):
    """A decode that outlasts frames.decode_timeout_s is killed and rejects its video only."""
    root, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], root / "stuck.mp4")
    put(clips["good"], root / "fine.mp4")
    fake = tmp_path / "ffmpeg"
    real = extract_module.ffmpeg_exe()
    # A stand-in that hangs on one video and is the real ffmpeg for the others.
    fake.write_text(
        f'#!/bin/sh\ncase "$*" in *stuck.mp4*) exec sleep 30;; esac\nexec "{real}" "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(extract_module, "ffmpeg_exe", lambda: str(fake))
    manifest, rejected = extract(root, out, decode_timeout_s=1.5)
    assert_kept(manifest, out, {"fine": 10})
    assert rejected == {"stuck.mp4": "timed out after 1.5 s (frames.decode_timeout_s)"}
    assert sorted(p.name for p in out.iterdir()) == [
        "fine.zip",
        "manifest.parquet",
        "rejected.csv",
    ]  # no partial


def test_timeout_is_a_validated_param():
    with pytest.raises(config.ConfigError, match=r"frames\.decode_timeout_s"):
        config.validate(
            {"frames": {**frames_params().model_dump(), "decode_timeout_s": 0}}, "frames"
        )
    assert config.load("frames", path=ROOT / "params.yaml")["frames"].decode_timeout_s == 600


def test_name_that_is_not_utf8_is_rejected(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], root / "good.mp4")
    try:
        shutil.copy(clips["good"], os.path.join(os.fsencode(root), b"latin-\xe9.mp4"))
        os.makedirs(os.path.join(os.fsencode(root), b"dir-\xff"))
        shutil.copy(clips["good"], os.path.join(os.fsencode(root), b"dir-\xff", b"in.mp4"))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    manifest, rejected = extract(root, out)
    assert_kept(manifest, out, {"good": 10})
    reason = "file name is not UTF-8; DVC cannot track it (rename it)"
    assert rejected == {"dir-\\xff/in.mp4": reason, "latin-\\xe9.mp4": reason}  # the bytes, escaped
    metrics = json.loads((tmp_path / "frames.json").read_text())
    assert (metrics["videos_found"], metrics["videos_rejected"]) == (3, 2)
