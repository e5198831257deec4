import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import video_fixtures
from dvc_cmd import stage_argv
from PIL import Image

from demystify.core.frames_store import FrameStore
from demystify.video.extract import (
    MANIFEST_DTYPES,
    ExtractionError,
    extract_all,
    extract_video,
    find_videos,
    output_size,
    run_stage,
    video_id,
)
from demystify.video.probe import VideoError

clips = video_fixtures.clips  # the session fixture, shared with other modules


params, put = video_fixtures.frames_params, video_fixtures.put


@pytest.mark.parametrize("fps, frames", [(5, 10), (2.5, 5), (3, 6), (12.5, 25), (0.5, 1)])
def test_frame_count_is_duration_times_fps(clips, tmp_path: Path, fps: float, frames: int):
    # the folder a video's zip is made of
    rows = extract_video(clips["good"], tmp_path / "v", params(fps=fps, size=32, jpeg_quality=5))
    assert len(rows) == frames
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        f"{i:06d}.jpg" for i in range(frames)
    ]
    np.testing.assert_allclose(rows["time_s"], np.arange(frames) / fps)


@pytest.mark.parametrize(
    "clip, size, expect",
    [
        ("good", 32, (43, 32)),
        ("portrait", 32, (32, 43)),
        ("good", 48, (64, 48)),
        ("rotated", 24, (24, 32)),
    ],
)
def test_short_side_is_size(clips, tmp_path: Path, clip: str, size: int, expect):
    rows = extract_video(clips[clip], tmp_path / "v", params(fps=5, size=size, jpeg_quality=5))
    assert (rows["width"][0], rows["height"][0]) == expect
    assert Image.open(tmp_path / "v" / "000000.jpg").size == expect


def test_output_size_rounds_to_nearest():
    assert output_size(1920, 1080, 224) == (398, 224)  # 398.2
    assert output_size(100, 300, 10) == (10, 30)
    assert output_size(3, 2, 3) == (5, 3)  # 4.5 rounds half up


@pytest.mark.parametrize("clip", ["truncated_data", "truncated_clean"])
def test_truncated_data_rejected_leaves_no_folder(clips, tmp_path: Path, clip: str):
    with pytest.raises(VideoError, match="corrupt input packet|partial file|Invalid|truncated"):
        extract_video(clips[clip], tmp_path / "v", params(fps=5, size=32, jpeg_quality=5))
    assert os.listdir(tmp_path) == []


def test_find_videos_and_ids(tmp_path: Path):
    for name in ["b.MP4", "a.mkv", "sub/c.webm", "sub/notes.txt", "d.M4V", "e.mpeg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()  # a folder is not a video
    (tmp_path / "broken.avi").symlink_to(tmp_path / "gone.avi")
    found = find_videos(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.mkv",
        "b.MP4",
        "broken.avi",
        "d.M4V",
        "e.mpeg",
        "sub/c.webm",
    ]
    assert video_id(tmp_path / "sub" / "c.webm", tmp_path) == "sub/c"
    assert video_id(tmp_path / "GOT-10k_Train_000001.mp4", tmp_path) == "GOT-10k_Train_000001"


@pytest.fixture
def mixed(clips, tmp_path: Path) -> Path:
    """Two good videos and one of every kind of bad one."""
    root = tmp_path / "videos"
    put(clips["good"], root / "good.mp4")
    put(clips["portrait"], root / "sub" / "tall.mkv")
    (root / "zero.mp4").write_bytes(b"")
    put(clips["truncated"], root / "truncated.mp4")
    put(clips["truncated_data"], root / "truncated_data.mp4")
    put(clips["truncated_clean"], root / "truncated_clean.mp4")
    (root / "text.mp4").write_text("this is not a video\n")
    put(clips["audio"], root / "audio.mp4")
    (root / "broken.mp4").symlink_to(root / "missing.mp4")
    if os.geteuid() != 0:  # root reads anything: the case cannot be made
        put(clips["good"], root / "locked.mp4").chmod(0)
    return root


def test_bad_videos_rejected_good_ones_kept(mixed: Path, tmp_path: Path):
    out = tmp_path / "frames"
    manifest, rejected = extract_all(mixed, out, params(), progress=False, workers=1)
    reasons = dict(zip(rejected["file"], rejected["reason"], strict=True))
    assert reasons.pop("zero.mp4").startswith("moov atom not found")
    assert "moov atom not found" in reasons.pop("truncated.mp4")
    assert "corrupt input packet" in reasons.pop("truncated_data.mp4")
    assert reasons.pop("truncated_clean.mp4").startswith("truncated: decoded 7 frames")
    assert "Invalid data found" in reasons.pop("text.mp4")
    assert reasons.pop("audio.mp4") == "no video stream"
    assert reasons.pop("broken.mp4") == "unreadable: [Errno 2] No such file or directory"
    if os.geteuid() != 0:
        assert reasons.pop("locked.mp4") == "unreadable: [Errno 13] Permission denied"
    assert reasons == {}
    assert manifest.groupby("video").size().to_dict() == {"good": 10, "sub/tall": 10}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "good.zip",
        "sub",
        "sub/tall.zip",
    ]
    assert dict(manifest.dtypes.astype(str)) == MANIFEST_DTYPES
    row = manifest.iloc[3]
    assert (row.video, row.frame, row.path, row.width, row.height) == (
        "good",
        3,
        "good/000003.jpg",
        43,
        32,
    )
    assert row.time_s == pytest.approx(0.6)
    assert manifest["x"].isna().all() and manifest["track"].isna().all()
    assert (
        list(video_fixtures.stored_frames(out)) == manifest["path"].tolist()
    )  # every frame, nothing else


def test_too_many_rejected_fails_after_writing(mixed: Path, tmp_path: Path):
    out, metrics = tmp_path / "frames", tmp_path / "results" / "metrics.json"
    with pytest.raises(ExtractionError) as err:
        run_stage(
            videos_root=mixed,
            out_root=out,
            metrics_path=metrics,
            params=params(max_rejected=0.5),
            workers=1,
        )
    assert "frames.max_rejected 0.5" in str(err.value)
    assert "audio.mp4: no video stream" in str(err.value)
    written = pd.read_parquet(out / "manifest.parquet")
    assert written["video"].unique().tolist() == ["good", "sub/tall"]
    assert FrameStore(out).exists("good/000009.jpg")
    rejected = pd.read_csv(out / "rejected.csv")
    m = json.loads(metrics.read_text())
    assert m["videos_extracted"] == 2 and m["videos_rejected"] == len(rejected)
    assert m["videos_found"] == 2 + len(rejected) and m["frames"] == 20
    assert m["rejected_share"] == pytest.approx(len(rejected) / m["videos_found"], abs=1e-6)


def test_accepted_share_passes(clips, tmp_path: Path):
    root = tmp_path / "videos"
    put(clips["good"], root / "a.mp4")
    (root / "b.mp4").write_bytes(b"")
    m = run_stage(
        videos_root=root,
        out_root=tmp_path / "out",
        metrics_path=tmp_path / "m.json",
        params=params(max_rejected=0.5),
        workers=1,
    )
    assert (m["videos_found"], m["videos_rejected"], m["frames"]) == (2, 1, 10)


def test_no_video_fails_with_empty_outputs(tmp_path: Path):
    (tmp_path / "videos").mkdir()
    out = tmp_path / "out"

    def extract(videos: str):
        return run_stage(
            videos_root=tmp_path / videos,
            out_root=out,
            metrics_path=tmp_path / "m.json",
            params=params(),
            workers=1,
        )

    with pytest.raises(ExtractionError, match="no video found"):
        extract("videos")
    assert (out / "rejected.csv").read_text().strip() == "file,reason"
    assert pd.read_parquet(out / "manifest.parquet").empty
    with pytest.raises(ExtractionError, match="videos folder not found"):
        extract("nowhere")


def test_stale_temporaries_removed(clips, tmp_path: Path):
    root, out = tmp_path / "videos", tmp_path / "out"
    put(clips["good"], root / "clip.mp4")
    put(clips["good"], root / "sub" / "deep.mp4")
    for stale in [out / ".clip.tmp-xyz", out / "sub" / ".deep.tmp-abc"]:
        stale.mkdir(parents=True)
        (stale / "000000.jpg").write_bytes(b"partial")
    manifest, _ = extract_all(root, out, params(), progress=False, workers=1)
    assert not (out / ".clip.tmp-xyz").exists() and not (out / "sub" / ".deep.tmp-abc").exists()
    assert not manifest["path"].str.contains("tmp").any()
    assert sorted(manifest["video"].unique()) == ["clip", "sub/deep"]


def test_duplicate_ids_rejected(clips, tmp_path: Path):
    put(clips["good"], tmp_path / "v" / "clip.mp4")
    put(clips["portrait"], tmp_path / "v" / "clip.mkv")
    manifest, rejected = extract_all(
        tmp_path / "v", tmp_path / "o", params(), progress=False, workers=1
    )
    assert rejected.to_dict("records") == [
        {
            "file": "clip.mp4",
            "reason": "frames folder of clip.mp4 ('clip/') would collide with clip.mkv's; rename one",
        }
    ]
    assert manifest["width"].unique().tolist() == [32]


def test_ground_truth_sidecar(clips, tmp_path: Path):
    root = tmp_path / "videos"
    put(clips["good"], root / "GOT-10k_Train_000001.mp4")
    seq = root / "GOT-10k_Train_000001"
    seq.mkdir()
    k = np.arange(15)  # 1.5 s at 10 Hz: the frames at 1.6 and 1.8 s are past its end
    (seq / "groundtruth.txt").write_text("".join(f"{i},{2 * i},10,8\n" for i in k))
    (seq / "cover.label").write_text("".join(f"{i % 9}\n" for i in k))
    (seq / "absence.label").write_text("".join(f"{i % 2}\n" for i in k))
    (seq / "meta_info.ini").write_text("[METAINFO]\nanno_fps: 10Hz\nresolution: (64, 48)\n")
    manifest, rejected = extract_all(
        root, tmp_path / "out", params(size=24), progress=False, workers=1
    )
    assert rejected.empty
    assert (manifest["width"].iloc[0], manifest["height"].iloc[0]) == (32, 24)  # scale 0.5
    row = 2 * manifest["frame"].to_numpy()[:8]  # t = i/5 s -> row round(10 t)
    np.testing.assert_allclose(manifest["x"][:8], row * 0.5)
    np.testing.assert_allclose(manifest["y"][:8], row * 1.0)
    np.testing.assert_allclose(manifest[["w", "h"]][:8], np.tile([5.0, 4.0], (8, 1)))
    assert manifest["cover"][:8].tolist() == (row % 9).tolist()
    assert manifest["absence"][:8].tolist() == (row % 2).tolist()
    assert manifest["track"][:8].tolist() == [0] * 8
    past = manifest.iloc[8:]  # no annotation at all: no box, no labels
    assert (
        past[["x", "y", "w", "h"]].isna().all().all()
        and past[["cover", "absence", "track"]].isna().all().all()
    )


def test_ground_truth_defaults_to_video_rate(clips, tmp_path: Path):
    root = tmp_path / "videos"
    put(clips["good"], root / "clip.mp4")
    (root / "clip").mkdir()
    (root / "clip" / "groundtruth.txt").write_text("".join(f"{i},0,4,4\n" for i in range(50)))
    manifest, _ = extract_all(root, tmp_path / "out", params(size=48), progress=False, workers=1)
    np.testing.assert_allclose(manifest["x"], 5 * manifest["frame"])  # 25 fps / 5 fps
    assert manifest["cover"].tolist() == [-1] * 10  # no cover.label


def test_bad_sidecar_rejects_its_video(clips, tmp_path: Path):
    root = tmp_path / "videos"
    put(clips["good"], root / "clip.mp4")
    put(clips["good"], root / "other.mp4")
    (root / "clip").mkdir()
    (root / "clip" / "groundtruth.txt").write_text("1,2,3,4\nbroken\n")
    manifest, rejected = extract_all(root, tmp_path / "out", params(), progress=False, workers=1)
    assert rejected["file"].tolist() == ["clip.mp4"]
    assert "groundtruth.txt:2" in rejected["reason"][0]
    assert manifest["video"].unique().tolist() == ["other"]


def test_parallel_equals_serial(mixed: Path, tmp_path: Path):
    serial = extract_all(mixed, tmp_path / "a", params(), progress=False, workers=1)
    parallel = extract_all(mixed, tmp_path / "b", params(), progress=False, workers=2)
    pd.testing.assert_frame_equal(serial[0], parallel[0])
    pd.testing.assert_frame_equal(serial[1], parallel[1])
    assert list(video_fixtures.stored_frames(tmp_path / "a")) == serial[0]["path"].tolist()
    for name in (
        "good.zip",
        "sub/tall.zip",
    ):  # fixed member times: the same frames, the same zip bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def run_script(cwd: Path, max_rejected: float) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(
        "data: {source: folder, root: data/world, videos: videos}\n"
        f"frames: {{fps: 5.0, size: 32, jpeg_quality: 5, max_rejected: {max_rejected},"
        " decode_timeout_s: 60.0}\n"
    )
    (cwd / "machine.yaml").write_text(
        "frames: {workers: 1}\n"
    )  # one ffmpeg at a time, as DVC would run it here
    plan = subprocess.run(
        stage_argv("plan_shards", cwd / "params.yaml"), cwd=cwd, capture_output=True, text=True
    )
    assert plan.returncode == 0, plan.stderr  # extract_frames@0 reads its list, as under DVC
    return subprocess.run(
        stage_argv("extract_frames", cwd / "params.yaml", "0"),
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_stage_script(clips, tmp_path: Path):
    put(clips["good"], tmp_path / "videos" / "a.mp4")
    (tmp_path / "videos" / "b.mp4").write_bytes(b"")
    ok = run_script(tmp_path, 0.5)
    assert ok.returncode == 0, ok.stderr
    assert (
        json.loads((tmp_path / "results/frames/shard-0/metrics.json").read_text())["frames"] == 10
    )  # one shard
    assert FrameStore(tmp_path / "data/frames").exists("a/000009.jpg")
    failed = run_script(tmp_path, 0.0)
    assert failed.returncode == 1
    assert "b.mp4: moov atom not found" in failed.stderr
    assert "Traceback" not in failed.stderr


def _shard_videos(clips, root: Path) -> None:
    """Videos over two shards (frames_store.shard_of of 2: 'b' 0, 'c' 1, 'v' 1, 'v/x' 0), one unreadable
    and one whose frames folder is inside another's ('v/x' in 'v', across shards)."""
    put(clips["good"], root / "c.mp4")
    put(clips["portrait"], root / "v.mp4")
    put(clips["good"], root / "v" / "x.mp4")
    (root / "b.mp4").write_bytes(b"")


def test_plan_shards_lists_each_video_once_and_shards_extract_what_one_run_does(
    clips, tmp_path: Path
):
    """plan_shards puts every video in its shard's list, with its MD5 and any name rejection judged over
    every video; extracting each shard from its list gives the one-run manifest and rejections."""
    from demystify.core.frames_store import shard_of
    from demystify.core.io import file_md5
    from demystify.video.shards import read_plan
    from demystify.video.shards import run_stage as plan_stage

    root = tmp_path / "videos"
    _shard_videos(clips, root)
    assert [shard_of(v, 2) for v in ("b", "c", "v", "v/x")] == [0, 1, 1, 0]
    assert plan_stage(videos_root=root, out_root=tmp_path / "shards", shards=[0, 1]) == {0: 2, 1: 2}
    lists = {
        k: pd.read_csv(tmp_path / f"shards/shard-{k}.csv", dtype=str, keep_default_na=False)
        for k in (0, 1)
    }
    assert lists[1].to_dict("list") == {
        "file": ["c.mp4", "v.mp4"],
        "md5": [file_md5(root / "c.mp4"), file_md5(root / "v.mp4")],
        "rejected": ["", ""],
    }
    assert lists[0]["file"].tolist() == ["b.mp4", "v/x.mp4"] and lists[0]["md5"][0] == file_md5(
        root / "b.mp4"
    )
    assert (
        "would collide with v.mp4's" in lists[0]["rejected"][1] and lists[0]["md5"][1] == ""
    )  # rival: shard 1

    whole = extract_all(root, tmp_path / "whole", params(), progress=False, workers=1)
    shards = [
        extract_all(
            root,
            tmp_path / f"s{k}",
            params(),
            progress=False,
            workers=1,
            planned=read_plan(tmp_path / f"shards/shard-{k}.csv"),
        )
        for k in (0, 1)
    ]
    manifest = pd.concat([m for m, _ in shards]).sort_values(["video", "frame"], ignore_index=True)
    pd.testing.assert_frame_equal(manifest, whole[0])
    rejected = pd.concat([r for _, r in shards]).sort_values("file", ignore_index=True)
    assert rejected.to_dict("list") == whole[1].to_dict(
        "list"
    )  # (an empty shard's table has no str dtype)
    assert rejected["file"].tolist() == ["b.mp4", "v/x.mp4"]

    # a shard no longer in frames.shards loses its list; the kept lists are rewritten as they were
    (tmp_path / "shards/shard-2.csv").write_text("file,md5,rejected\n")
    before = (tmp_path / "shards/shard-0.csv").read_bytes()
    plan_stage(videos_root=root, out_root=tmp_path / "shards", shards=[0, 1])
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-0.csv", "shard-1.csv"]
    assert (tmp_path / "shards/shard-0.csv").read_bytes() == before


def test_a_stale_shard_list_is_an_error_naming_the_video(clips, tmp_path: Path):
    """A video changed or removed since plan_shards listed it stops its shard before any decoding, by
    name: the shard's earlier frames, manifest and metrics stay as they were; a new plan passes."""
    from demystify.video.shards import read_plan
    from demystify.video.shards import run_stage as plan_stage

    root, out, metrics = tmp_path / "videos", tmp_path / "frames", tmp_path / "m.json"
    _shard_videos(clips, root)
    plan_stage(videos_root=root, out_root=tmp_path / "shards", shards=[0, 1])
    listed = tmp_path / "shards/shard-1.csv"  # c.mp4, v.mp4

    def extract_shard_1():  # reads the shard's list again at each run
        return run_stage(
            videos_root=root,
            out_root=out,
            metrics_path=metrics,
            params=params(shards=[0, 1]),
            workers=1,
            shard=1,
            planned=read_plan(listed),
        )

    m = extract_shard_1()
    assert (m["videos_extracted"], m["videos_rejected"]) == (2, 0)
    kept = {p.name: p.read_bytes() for p in (*out.iterdir(), metrics)}
    put(clips["portrait"], root / "c.mp4")  # other bytes under the listed name
    with pytest.raises(
        ExtractionError,
        match=r"video list is stale: c\.mp4 under .*videos changed since plan_shards",
    ):
        extract_shard_1()
    (root / "c.mp4").unlink()
    with pytest.raises(ExtractionError, match=r"stale: c\.mp4 .*or it is gone"):
        extract_shard_1()
    assert {p.name: p.read_bytes() for p in (*out.iterdir(), metrics)} == kept  # nothing good lost
    put(clips["portrait"], root / "c.mp4")
    plan_stage(videos_root=root, out_root=tmp_path / "shards", shards=[0, 1])
    m = extract_shard_1()
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert (
        m["videos_extracted"] == 2 and manifest[manifest["video"] == "c"]["width"].iloc[0] == 32
    )  # portrait now
    with pytest.raises(ExtractionError, match=r"shard-9\.csv: cannot read the shard's video list"):
        read_plan(tmp_path / "shards/shard-9.csv")
